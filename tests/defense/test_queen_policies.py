"""QUEEN's deployer policies: trusted clients, tiers (allowance), label-preserving REVERSE, out-of-region
answers, time windows, and the sybil-resistant pool of young clients."""

from __future__ import annotations

import pytest
import torch

from modelshield.defense import ClientPolicy, ProtectedModel, QueenClientState, QueenConfig, QueenDefense
from modelshield.errors import ConfigError
from modelshield.oracle import ModelOracle

# beta = 100: every query lies in its class's region; r = 0: every query is novel; so a threshold of n per class
# reverses a client's queries of class c from its (n+1)-th on, whatever the embedding learned
EVERYWHERE = QueenConfig(novelty_radius=0.0, threshold_queries=10, beta=100.0)


def _answers(model, defense, x, client, policy=None):  # type: ignore[no-untyped-def]
    return ModelOracle(ProtectedModel(model, defense), client_id=client, policy=policy)(x)


def _labels(model, x):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(x).argmax(1)


def test_trusted_clients_are_never_reversed_nor_recorded(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    defense = QueenDefense.for_model(model, artifacts, EVERYWHERE)
    _, mallory = defense.answer_with_decisions(*_split(model, held.x), "mallory")
    _, trusted = defense.answer_with_decisions(*_split(model, held.x), "partner", ClientPolicy(trusted=True))
    assert mallory.sum() > len(held) - 4 * 10 - 5  # all but the first 10 per class
    assert not trusted.any()
    assert defense.client_state("partner").queries == 0  # nothing stored for a trusted client


def test_allowance_is_the_clients_own_threshold(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    defense = QueenDefense.for_model(model, artifacts, EVERYWHERE)
    x = held.x[:200]
    per_class = torch.bincount(_labels(model, x), minlength=4)
    _, default = defense.answer_with_decisions(*_split(model, x), "a")
    _, tier = defense.answer_with_decisions(*_split(model, x), "b", ClientPolicy(allowance=int(per_class.max())))
    _, none = defense.answer_with_decisions(*_split(model, x), "c", ClientPolicy(allowance=0))
    assert int(default.sum()) == int((per_class - 10).clamp_min(0).sum())
    assert not tier.any()
    assert none.all()


def test_label_preserving_reverse_keeps_the_top1(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    plain = QueenDefense.for_model(model, artifacts, QueenConfig(novelty_radius=0.0, threshold_queries=0, beta=100.0))
    keeping = QueenDefense.for_model(model, artifacts, QueenConfig(novelty_radius=0.0, threshold_queries=0, beta=100.0,
                                                                   reverse_keeps_label=True))
    labels = _labels(model, held.x)
    a, rev_a = plain.answer_with_decisions(*_split(model, held.x), "m")
    b, rev_b = keeping.answer_with_decisions(*_split(model, held.x), "m")
    assert rev_a.all() and rev_b.all()
    assert (a.argmax(1) != labels).float().mean() > 0.3  # REVERSE flips many labels
    assert torch.equal(b.argmax(1), labels)
    assert torch.allclose(b.sum(1), torch.ones(len(b)), atol=1e-5)
    assert torch.allclose(b.sort(1).values, a.sort(1).values, atol=1e-5)  # the same values, the label's moved up


def test_out_of_region_queries_get_the_stateless_defense(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    defense = QueenDefense.for_model(model, artifacts, QueenConfig(out_of_region="top1", threshold_queries=10_000))
    out, _ = defense.answer_with_decisions(*_split(model, held.x), "c")
    art = defense.artifacts
    feats, logits = _split(model, held.x)[2], _split(model, held.x)[1]
    classes = logits.argmax(1)
    d = (art.mapping(feats) - art.region_centres[classes]).norm(dim=1)
    inside = d < defense.config.beta * art.region_spread[classes]
    assert 0 < int(inside.sum()) < len(held)  # both kinds present in this batch
    onehot = (out == 1.0).any(dim=1)
    assert torch.equal(onehot, ~inside)
    assert torch.equal(out.argmax(1), classes)
    with pytest.raises(ConfigError, match="out_of_region"):
        QueenConfig(out_of_region="mad")


def test_coverage_starts_over_in_a_new_window(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    now = [1000.0]
    config = QueenConfig(novelty_radius=0.0, threshold_queries=10, beta=100.0, window_seconds=60.0)
    defense = QueenDefense.for_model(model, artifacts, config, clock=lambda: now[0])
    x, other = held.x[:120], held.x[120:240]
    assert (torch.bincount(_labels(model, x), minlength=4) >= 10).all()
    _, first = defense.answer_with_decisions(*_split(model, x), "c")
    _, again = defense.answer_with_decisions(*_split(model, other), "c")
    assert first.sum() > 0 and again.all()  # every class past the threshold within the window
    now[0] += 60.0
    _, later = defense.answer_with_decisions(*_split(model, x), "c")
    assert torch.equal(later, first)  # a new window: the same batch is judged as the first time
    state = defense.client_state("c")
    assert state.queries == 360 and state.window == int(1060.0 // 60.0)
    assert QueenClientState.from_bytes(state.to_bytes(), 4).window == state.window


def test_the_pool_holds_many_young_accounts_to_one_threshold(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    x = held.x[:200]
    pooled = QueenConfig(novelty_radius=0.0, threshold_queries=10, beta=100.0, young_client_queries=100,
                         pool_threshold_queries=10)
    per_client = QueenConfig(novelty_radius=0.0, threshold_queries=10, beta=100.0)
    results = {}
    for name, config in (("pooled", pooled), ("per-client", per_client)):
        defense = QueenDefense.for_model(model, artifacts, config)
        flags = [defense.answer_with_decisions(*_split(model, x[i : i + 10]), f"sybil-{i // 10}")[1] for i in range(0, 200, 10)]
        results[name] = torch.cat(flags)
    assert not results["per-client"].any()  # 10 queries per account: never more than 10 of a class
    per_class = torch.bincount(_labels(model, x), minlength=4)
    assert int(results["pooled"].sum()) == int((per_class - 10).clamp_min(0).sum())  # as if one client


def test_established_and_tiered_clients_are_judged_on_their_own_history(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    # own threshold never reached; the pool (threshold 0) reverses every novel in-region query of a young client
    config = QueenConfig(novelty_radius=0.0, threshold_queries=10_000, beta=100.0, young_client_queries=50,
                         pool_threshold_queries=0)
    defense = QueenDefense.for_model(model, artifacts, config)
    _, young = defense.answer_with_decisions(*_split(model, held.x[:50]), "new")
    assert young.all()
    _, established = defense.answer_with_decisions(*_split(model, held.x[50:250]), "new")  # 50 answered: established
    assert not established.any()
    _, tiered = defense.answer_with_decisions(*_split(model, held.x[:50]), "customer", ClientPolicy(allowance=10_000))
    assert not tiered.any()  # a tier keeps a new account out of the pool
    assert defense.pool_state().queries == 50 and defense.client_state("customer").queries == 50


def test_policy_validation() -> None:
    with pytest.raises(ConfigError, match="allowance"):
        ClientPolicy(allowance=-1)
    with pytest.raises(ConfigError, match="trusted"):
        ClientPolicy(trusted="yes")  # type: ignore[arg-type]
    for bad in ({"window_seconds": 0.0}, {"young_client_queries": 0}, {"pool_threshold_queries": -1}):
        with pytest.raises(ConfigError):
            QueenConfig(**bad)  # type: ignore[arg-type]


def _split(model, x):  # type: ignore[no-untyped-def]
    from modelshield.defense.features import FeatureSplit

    with torch.no_grad():
        features, logits = FeatureSplit(model)(x)
    return x, logits, features
