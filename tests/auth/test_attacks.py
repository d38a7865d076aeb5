"""Attacks against the protected tiny CNN: what a thief gets (measured, not assumed)."""

from __future__ import annotations

from modelshield.attacks.adaptive_key import AdaptiveKeyConfig, recover_key
from modelshield.attacks.removal import prune_global_magnitude
from modelshield.auth.evaluation import accuracy_with_key
from modelshield.training import evaluate

from .conftest import Protected


def test_adaptive_white_box_key_beats_plain_inputs(protected: Protected) -> None:
    model, key = protected.result.model, protected.result.key
    thief = protected.val  # data the protected model never trained on
    result = recover_key(model, thief, key.normalization, AdaptiveKeyConfig(epochs=10, lr=0.05, restarts=1, seed=0),
                         progress=False)
    recovered = accuracy_with_key(model, result.key, protected.test)
    plain = evaluate(model, protected.test).accuracy
    # the attack is real: the recovered key does better than no key (the bench reports how much better)
    assert recovered > plain
    assert accuracy_with_key(model, key, protected.test) >= 0.9


def test_light_pruning_keeps_the_key_working(protected: Protected) -> None:
    model, key = protected.result.model, protected.result.key
    pruned = prune_global_magnitude(model, 0.1)
    assert accuracy_with_key(pruned, key, protected.test) >= accuracy_with_key(model, key, protected.test) - 0.05
