"""The fine-tuning attack: repair rules, and a locked start that carries no information."""

from __future__ import annotations

import math

import pytest
import torch

from modelshield.attacks.finetune import RepairPolicy, finetune, finetune_attack, repair_weights
from modelshield.data import Normalization, make_synthetic
from modelshield.errors import ConfigError
from modelshield.keys import SecretKey
from modelshield.lock import lock_model
from modelshield.models import build_model
from modelshield.training import TrainConfig, torch_threads


def _vgg() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("vgg", in_channels=1, image_size=8, num_classes=4, normalization=Normalization((0.3,), (0.2,)))


def test_repair_leaves_only_finite_bounded_values() -> None:
    model = _vgg()
    locked = lock_model(model, SecretKey(bytes(32)))
    state = locked.attacker_state_dict()
    assert any(not torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    policy = RepairPolicy(max_abs=1.0, normalization=Normalization((0.3,), (0.2,)))
    repaired, stats = repair_weights(state, _vgg(), policy)
    for name, t in repaired.items():
        if t.is_floating_point():
            assert torch.isfinite(t).all(), name
            if not name.startswith("normalize"):
                assert t.abs().max() <= 1.0 + 1e-6, name
    assert repaired["normalize.mean"].flatten().tolist() == pytest.approx([0.3])
    bn_var = [n for n in repaired if n.endswith("running_var")]
    assert bn_var and all(torch.equal(repaired[n], torch.ones_like(repaired[n])) for n in bn_var)
    assert stats.nonfinite > 0 and stats.out_of_range > stats.nonfinite  # about half the exponents exceed 1
    assert stats.replaced <= stats.total
    kept = sum(int(((repaired[n] == state[n]) & torch.isfinite(state[n])).sum()) for n in repaired if repaired[n].is_floating_point())
    assert kept > 0


def test_fill_zero_and_infinite_range() -> None:
    model = _vgg()
    state = lock_model(model, SecretKey(bytes(32))).attacker_state_dict()
    repaired, stats = repair_weights(state, _vgg(), RepairPolicy(fill="zero", max_abs=math.inf, reset_batchnorm=False))
    assert stats.out_of_range == 0 and stats.reset == 0 and stats.nonfinite > 0
    w = [n for n in state if n.endswith("conv1.weight")][0]
    bad = ~torch.isfinite(state[w])
    assert (repaired[w][bad] == 0).all()


def test_locked_start_is_at_chance_before_training_and_trains_without_nan() -> None:
    data = make_synthetic(400, num_classes=4, seed=0)
    test = make_synthetic(200, num_classes=4, seed=0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    with torch_threads(1):
        finetune(model, data, test, config=TrainConfig(epochs=4, batch_size=32, lr=3e-3), start="victim")
        assert finetune(model, data, test, config=TrainConfig(epochs=1), start="x").accuracy > 0.9
        locked = lock_model(model, SecretKey(bytes(32)))
        result = finetune_attack(locked, data, test, config=TrainConfig(epochs=3, batch_size=32, lr=3e-3), model=model)
    assert result.start == "locked" and result.train_size == 400 and result.epochs == 3
    assert result.start_accuracy <= 0.40  # chance is 0.25; the victim had > 0.9
    assert 0.0 <= result.accuracy <= 1.0 and result.repair is not None and result.repair.replaced > 0


def test_fixed_budget_only() -> None:
    with pytest.raises(ConfigError, match="patience=None"):
        finetune(_vgg(), make_synthetic(8, seed=0), make_synthetic(8, seed=0), config=TrainConfig(patience=2), start="x")
    with pytest.raises(ConfigError, match="max_abs must be > 0"):
        RepairPolicy(max_abs=0)


def test_subnormals_are_flushed() -> None:
    tiny = torch.finfo(torch.float32).tiny
    state = {"w": torch.tensor([tiny / 8, -tiny / 2, 0.5, tiny])}
    template = torch.nn.Module()
    repaired, stats = repair_weights(state, template, RepairPolicy(fill="zero"))
    assert repaired["w"].tolist() == [0.0, 0.0, 0.5, tiny] and stats.subnormal == 2
