"""Extraction attacks: budgets, query selection, augmentation, hard labels, and that the attack is real."""

from __future__ import annotations

import pytest
import torch

from modelshield.attacks.extraction import (
    JBDA,
    JBDAConfig,
    KnockoffConfig,
    KnockoffNets,
    PirateConfig,
    QueryPool,
    build_attack,
    query_pool,
    TranscriptScore,
    run_extraction,
    score_transcript,
)
from modelshield.data import TensorData, make_synthetic
from modelshield.defense import ClientPolicy, NoDefense, ProtectedModel, TopOneDefense
from modelshield.errors import BudgetExceeded, ConfigError
from modelshield.models import build_model
from modelshield.oracle import ModelOracle
from modelshield.training import TrainConfig, seed_everything, train_model


@pytest.fixture(scope="module")
def victim() -> tuple[torch.nn.Module, TensorData, QueryPool]:
    data = make_synthetic(1200, num_classes=4, seed=2)
    train, pool, test = data[torch.arange(0, 500)], data[torch.arange(500, 1000)], data[torch.arange(1000, 1200)]
    seed_everything(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    train_model(model, train, config=TrainConfig(epochs=4, batch_size=64, lr=3e-3), progress=False)
    return model.eval(), test, QueryPool(pool.x, "synthetic/pool")


def test_random_knockoff_spends_exactly_the_budget_on_distinct_pool_images(victim) -> None:  # type: ignore[no-untyped-def]
    model, _, pool = victim
    oracle = ModelOracle(ProtectedModel(model, NoDefense()), policy=ClientPolicy(budget=300))
    t = KnockoffNets(KnockoffConfig(budget=300, batch_size=64)).collect(oracle, pool)
    assert len(t) == 300 and oracle.queries == 300
    assert len(torch.unique(t.x.flatten(1), dim=0)) == 300
    assert torch.allclose(t.answers, torch.softmax(model(t.x), 1), atol=1e-5)
    with pytest.raises(BudgetExceeded):
        oracle(pool.x[:1])


def test_adaptive_knockoff_respects_the_budget(victim) -> None:  # type: ignore[no-untyped-def]
    model, _, pool = victim
    oracle = ModelOracle(model)
    t = KnockoffNets(KnockoffConfig(budget=150, strategy="adaptive", batch_size=25, clusters=4)).collect(oracle, pool)
    assert len(t) == 150 == oracle.queries
    assert len(torch.unique(t.x.flatten(1), dim=0)) == 150  # drawn without replacement


@pytest.mark.parametrize("targeted", [False, True])
def test_jbda_augments_by_signed_steps_within_the_budget(victim, targeted: bool) -> None:  # type: ignore[no-untyped-def]
    model, _, pool = victim
    oracle = ModelOracle(ProtectedModel(model, NoDefense()), policy=ClientPolicy(output="label"))
    cfg = JBDAConfig(budget=130, seed_size=40, targeted=targeted, epochs_per_round=1, step=0.1)
    t = JBDA(cfg).collect(oracle, pool)
    assert len(t) == 130 == oracle.queries
    assert t.x.min() >= 0 and t.x.max() <= 1
    assert set(t.answers.unique().tolist()) == {0.0, 1.0}
    seeds = t.x[:40].flatten(1)
    new = t.x[40:80].flatten(1)  # first round: one augmented point per seed, each moved by at most lambda per pixel
    nearest = torch.cdist(new, seeds, p=float("inf")).min(dim=1).values
    assert (nearest <= 0.1 + 1e-6).all() and (nearest > 0).float().mean() > 0.9


def test_soft_label_knockoff_really_copies_an_undefended_victim(victim) -> None:  # type: ignore[no-untyped-def]
    model, test, pool = victim
    r = run_extraction(build_attack("knockoff", budget=500), ModelOracle(model), pool, test, victim=model,
                       pirate=PirateConfig(epochs=12, seed=0))
    assert r.labels == "soft" and r.queries == 500 and len(r.transcript) == 500
    assert r.fidelity is not None and r.fidelity > 0.85, r
    agree = float((r.pirate(test.x).argmax(1) == model(test.x).argmax(1)).float().mean())
    assert agree == r.fidelity  # the result carries the pirate that was scored
    assert set(r.summary()) == {"attack", "labels", "pool", "queries", "pirate_architecture", "accuracy", "fidelity",
                                "query_seconds", "train_seconds"}
    again = score_transcript(r.transcript, test, victim=model, pirate=PirateConfig(epochs=12, seed=0))
    assert isinstance(again, TranscriptScore) and (again.accuracy, again.fidelity) == (r.accuracy, r.fidelity)


def test_hard_label_oracle_and_top1_defense_give_the_same_transcript(victim) -> None:  # type: ignore[no-untyped-def]
    model, _, pool = victim
    label_only = ModelOracle(ProtectedModel(model, NoDefense()), policy=ClientPolicy(output="label"))
    a = build_attack("knockoff", budget=100).collect(label_only, pool)
    b = build_attack("knockoff", budget=100).collect(ModelOracle(ProtectedModel(model, TopOneDefense())), pool)
    assert torch.equal(a.answers, b.answers) and a.digest() == b.digest()
    assert a.labels == b.labels == "hard" and a.prefix(10).labels == "hard"


def test_attack_and_pool_errors() -> None:
    """Data-free: runs everywhere (the pool kind is checked before any dataset is read)."""
    with pytest.raises(ConfigError, match="did you mean 'jbda-tr'"):
        build_attack("jbda-t", budget=10)
    with pytest.raises(ConfigError, match="seed_size"):
        JBDAConfig(budget=10, seed_size=20)
    with pytest.raises(ConfigError, match="query pool must be"):
        query_pool("digits", "elsewhere")
    with pytest.raises(ConfigError, match="no default surrogate dataset for 'digits'"):
        query_pool("digits", "surrogate")


def test_real_query_pools(data_root) -> None:  # type: ignore[no-untyped-def]
    own, sur = query_pool("mnist", "attacker", data_root), query_pool("mnist", "surrogate", data_root)
    assert (len(own), own.name) == (20_000, "mnist/attacker")
    assert (len(sur), sur.name, tuple(sur.x.shape[1:])) == (60_000, "fashion-mnist/train", (1, 28, 28))
