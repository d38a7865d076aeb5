"""Baseline defenses: strength 0 equals the undefended model; settings validated; registry."""

from __future__ import annotations

import math

import pytest
import torch

from modelshield.defense import (
    GaussianNoiseDefense,
    NoDefense,
    ProtectedModel,
    QueenConfig,
    ReverseSigmoidDefense,
    RoundingDefense,
    TopOneDefense,
    build_defense,
)
from modelshield.errors import ConfigError
from modelshield.oracle import ModelOracle


@pytest.mark.parametrize("defense", [ReverseSigmoidDefense(beta=0.0), GaussianNoiseDefense(sigma=0.0), NoDefense()],
                         ids=["reverse-sigmoid", "gaussian", "none"])
def test_strength_zero_equals_undefended(tiny, defense) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    expected = torch.softmax(model(held.x), dim=1)
    assert torch.allclose(ModelOracle(ProtectedModel(model, defense))(held.x), expected, atol=1e-6)


def test_rounding_to_many_decimals_equals_undefended(tiny) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    expected = torch.softmax(model(held.x), dim=1)
    assert torch.allclose(ModelOracle(ProtectedModel(model, RoundingDefense(decimals=8)))(held.x), expected, atol=1e-7)


def test_queen_at_strength_zero_equals_undefended(tiny, artifacts) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    off = build_defense("queen", model=model, artifacts=artifacts,
                        queen=QueenConfig(threshold_queries=None, coverage_threshold=math.inf, perturb_steps=0))
    oracle = ModelOracle(ProtectedModel(model, off), batch_size=64)
    for _ in range(3):  # repeated floods never trigger anything
        assert torch.allclose(oracle(held.x), torch.softmax(model(held.x), dim=1), atol=1e-6)


def test_baselines_do_something_at_default_strength(tiny) -> None:  # type: ignore[no-untyped-def]
    model, _, held = tiny
    with torch.no_grad():
        p = torch.softmax(model(held.x), dim=1)
    for defense in (ReverseSigmoidDefense(), GaussianNoiseDefense()):
        out = ModelOracle(ProtectedModel(model, defense))(held.x)
        assert (out - p).abs().sum(1).mean() > 0.01, defense.name
        assert (out >= 0).all()
    top1 = ModelOracle(ProtectedModel(model, TopOneDefense()))(held.x)
    assert torch.equal(top1.argmax(1), p.argmax(1)) and torch.equal(top1.sum(1), torch.ones(len(held)))
    assert set(top1.unique().tolist()) == {0.0, 1.0}
    rounded = RoundingDefense(decimals=1).answer(held.x, torch.log(torch.tensor([[0.62, 0.33, 0.05]])), p, "c")
    assert torch.allclose(rounded, torch.tensor([[0.6, 0.3, 0.1]]))


def test_gaussian_is_seeded() -> None:
    logits = torch.randn(50, 10)
    args = (torch.zeros(50, 1, 2, 2), logits, torch.zeros(50, 3), "c")
    a, b = GaussianNoiseDefense(sigma=0.2, seed=3).answer(*args), GaussianNoiseDefense(sigma=0.2, seed=3).answer(*args)
    assert torch.equal(a, b) and torch.allclose(a.sum(1), torch.ones(50))


def test_reverse_sigmoid_changes_ranking_of_small_probabilities() -> None:
    logits = torch.log(torch.tensor([[0.9, 0.09, 0.009, 0.001]]))
    out = ReverseSigmoidDefense(beta=0.7, gamma=0.4).answer(torch.zeros(1, 1, 2, 2), logits, torch.zeros(1, 2), "c")
    assert torch.allclose(out.sum(), torch.tensor(1.0))
    assert out[0, 3] > out[0, 2]  # the smallest input probability is no longer the smallest answer


@pytest.mark.parametrize("make, message", [
    (lambda: RoundingDefense(decimals=-1), "decimals"),
    (lambda: ReverseSigmoidDefense(beta=-0.1), "beta"),
    (lambda: ReverseSigmoidDefense(gamma=0.0), "gamma"),
    (lambda: GaussianNoiseDefense(sigma=float("nan")), "sigma"),
    (lambda: build_defense("queen"), "needs the protected model"),
    (lambda: build_defense("rounding", sigma=1.0), "bad setting"),
    (lambda: build_defense("revers-sigmoid"), "did you mean 'reverse-sigmoid'"),
])
def test_bad_settings(make, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        make()
