"""The QUEEN-aware filtering attacker: exact drop masks, hard-label refusal, the warm-up pirate, the wrapper."""

from __future__ import annotations

import pytest
import torch

from modelshield.attacks.extraction import (
    FilterConfig,
    FilteringAttack,
    KnockoffConfig,
    KnockoffNets,
    PirateConfig,
    QueryPool,
    Transcript,
    filter_transcript,
)
from modelshield.attacks.extraction.filtering import _disagreements, shape_suspects
from modelshield.data import make_synthetic
from modelshield.defense.queen import reverse_probabilities
from modelshield.errors import ConfigError
from modelshield.models import build_model
from modelshield.oracle import CallableOracle
from modelshield.training import TrainConfig, seed_everything, train_model


def _t(answers: list[list[float]]) -> Transcript:
    a = torch.tensor(answers)
    return Transcript(torch.arange(len(a), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2) / 10, a)


def test_shape_drops_exactly_the_rows_with_a_zero_entry_and_keeps_order() -> None:
    t = _t([[0.6, 0.3, 0.1], [0.0, 0.5, 0.5], [0.2, 0.2, 0.6], [0.5, 0.5, 1e-13], [0.4, 0.3, 0.3], [1e-6, 0.5, 0.499999]])
    r = filter_transcript(t, FilterConfig(method="shape", warmup=0))
    assert r.kept.tolist() == [True, False, True, False, True, True] and r.dropped == 2
    assert torch.equal(r.transcript.answers, t.answers[[0, 2, 4, 5]]) and torch.equal(r.transcript.x, t.x[[0, 2, 4, 5]])
    # a looser tolerance also takes the 1e-6 row
    assert filter_transcript(t, FilterConfig(method="shape", zero_tol=1e-5)).kept.tolist() == [True, False, True, False, True, False]


def test_shape_keeps_every_softmax_and_drops_most_real_queen_reversals() -> None:
    torch.manual_seed(0)
    p = torch.softmax(3 * torch.randn(500, 4), dim=1)
    q = torch.softmax(3 * torch.randn(500, 4), dim=1)
    reversed_ = reverse_probabilities(p, q)
    assert not shape_suspects(p).any()  # PERTURB answers are softmaxes: never dropped
    caught = shape_suspects(reversed_).float().mean().item()
    assert caught > 0.9
    mixed = torch.cat([p[:250], reversed_[250:]])
    r = filter_transcript(Transcript(torch.rand(500, 1, 2, 2), mixed), FilterConfig(method="shape"))
    assert r.kept[:250].all() and r.dropped == int(shape_suspects(reversed_[250:]).sum())


@pytest.mark.parametrize("method", ["shape", "both"])
def test_shape_test_refuses_hard_labels(method: str) -> None:
    hard = _t([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert hard.labels == "hard"
    with pytest.raises(ConfigError, match="hard-label"):
        filter_transcript(hard, FilterConfig(method=method, warmup=1))


def test_disagreement_mask_keeps_warmup_rows_and_drops_later_top1_mismatches() -> None:
    answers = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9]])
    predicted = torch.tensor([1, 1, 0, 0, 0, 1])  # row 0 disagrees but is warm-up; row 3 disagrees later
    assert _disagreements(answers, predicted, warmup=2).tolist() == [False, False, False, True, False, False]
    assert _disagreements(answers, predicted, warmup=0).tolist() == [True, False, False, True, False, False]


@pytest.fixture(scope="module")
def planted() -> tuple[Transcript, torch.Tensor]:
    """200 warm-up answers from a victim, then 200 more of which the even ones carry another top-1 (no zeros)."""
    data = make_synthetic(600, num_classes=4, seed=3)
    seed_everything(0)
    victim = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    train_model(victim, data[torch.arange(200, 600)], config=TrainConfig(epochs=4, batch_size=64, lr=3e-3), progress=False)
    victim.eval()
    x = data.x[:400]
    with torch.no_grad():
        answers = torch.softmax(victim(x), dim=1)
    top = answers.argmax(dim=1)
    liar = torch.zeros(400, dtype=torch.bool)
    liar[200::2] = True
    wrong = torch.full((400, 4), 0.1 / 3).scatter_(1, ((top + 1) % 4).view(-1, 1), 0.9)
    answers = torch.where(liar.view(-1, 1), wrong, answers)
    return Transcript(x, answers), liar


def test_disagreement_drops_exactly_the_planted_lies(planted) -> None:  # type: ignore[no-untyped-def]
    t, liar = planted
    config = FilterConfig(method="disagreement", warmup=200, pirate=PirateConfig(epochs=10, batch_size=32, lr=3e-3))
    r = filter_transcript(t, config)
    assert torch.equal(r.kept, ~liar) and r.dropped == 100 and len(r.transcript) == 300
    # "both" = union: the planted lies have no zeros, so the shape test adds nothing here
    assert torch.equal(filter_transcript(t, FilterConfig(method="both", warmup=200, pirate=config.pirate)).kept, ~liar)
    # nothing past the warm-up: no pirate trained, nothing dropped
    assert filter_transcript(t.prefix(200), config).dropped == 0


def test_disagreement_works_on_hard_labels(planted) -> None:  # type: ignore[no-untyped-def]
    t, liar = planted
    hard = Transcript(t.x, torch.nn.functional.one_hot(t.answers.argmax(dim=1), 4).float())
    config = FilterConfig(method="disagreement", warmup=200, pirate=PirateConfig(epochs=10, batch_size=32, lr=3e-3))
    r = filter_transcript(hard, config)
    assert torch.equal(r.kept, ~liar)


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "zeros"}, "method"),
    ({"warmup": -1}, "warmup"),
    ({"method": "disagreement", "warmup": 0}, "warmup must be >= 1"),
    ({"zero_tol": -1e-9}, "zero_tol"),
    ({"zero_tol": float("inf")}, "zero_tol"),
    ({"pirate": "lenet5"}, "PirateConfig"),
])
def test_bad_filter_config(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=match):
        FilterConfig(**kwargs)


class _Reverser:
    """An oracle function that answers softmaxes for the first ``honest`` queries and REVERSE after that."""

    def __init__(self, honest: int) -> None:
        self.weight = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
        self.honest, self.seen = honest, 0
        self.reversed_rows: list[bool] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax((x.flatten(1) - 0.5) @ self.weight, dim=1)
        flags = torch.arange(self.seen, self.seen + len(x)) >= self.honest
        self.seen += len(x)
        self.reversed_rows += flags.tolist()
        return torch.where(flags.view(-1, 1), reverse_probabilities(p, torch.full_like(p, 0.25)), p)


def test_filtering_attack_wraps_an_attack_and_spends_its_budget() -> None:
    pool = QueryPool(torch.rand(150, 1, 8, 8), "noise")
    config = KnockoffConfig(budget=100, batch_size=30)
    fn = _Reverser(honest=40)
    oracle = CallableOracle(fn, num_classes=4)
    attack = FilteringAttack(KnockoffNets(config), FilterConfig(method="shape"))
    assert attack.name == "knockoff+filter-shape" and attack.last_result is None
    t = attack.collect(oracle, pool)
    raw = KnockoffNets(config).collect(CallableOracle(_Reverser(honest=40), num_classes=4), pool)  # the same, unfiltered
    result = attack.last_result
    assert oracle.queries == 100 and result is not None
    assert torch.equal(result.kept, ~shape_suspects(raw.answers))
    honest = ~torch.tensor(fn.reversed_rows)
    assert honest[:40].all() and not honest[40:].any() and result.kept[honest].all()  # only reversed rows dropped
    assert torch.equal(t.x, raw.x[result.kept]) and torch.equal(t.answers, raw.answers[result.kept])
    assert len(t) == 100 - result.dropped and result.dropped > 30


def test_filtering_attack_refuses_a_non_attack() -> None:
    with pytest.raises(ConfigError, match="extraction attack"):
        FilteringAttack(object())  # type: ignore[arg-type]
