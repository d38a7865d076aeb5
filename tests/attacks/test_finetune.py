"""The thief's fine-tuning procedure: repair rules, a locked start that carries no information, scratch vs stolen."""

from __future__ import annotations

import math

import pytest
import torch

from modelshield.attacks.finetune import RepairPolicy, ThiefConfig, finetune, finetune_attack, reinitialised, repair_weights, thief_data
from modelshield.data import Normalization, make_synthetic
from modelshield.errors import ConfigError
from modelshield.keys import SecretKey
from modelshield.lock import lock_model, lock_state_dict
from modelshield.models import build_model
from modelshield.training import evaluate, torch_threads


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
    architecture = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    with torch_threads(1):
        model = finetune(architecture, data, config=ThiefConfig(epochs=4, batch_size=32, lr=3e-3), start="victim").model
        assert finetune(model, data, test=test, config=ThiefConfig(epochs=1), start="x").accuracy > 0.9
        # a fixed nonce: lock_model draws a random one, which made this check flaky (the repaired start's accuracy
        # depends on the keystream; an unlucky draw scored above 0.40 about once in a few runs)
        locked = lock_state_dict(model.state_dict(), SecretKey(bytes(32)), _nonce=bytes(16))
        result = finetune_attack(locked, data, test, config=ThiefConfig(epochs=3, batch_size=32, lr=3e-3), model=model)
    assert result.start == "locked" and result.train_size == 400 and result.epochs == 3
    assert result.start_accuracy <= 0.40  # chance is 0.25; the victim had > 0.9
    assert result.repair is not None and result.repair.replaced > 0
    assert all(torch.isfinite(p).all() for p in result.model.parameters())  # the repair leaves nothing to blow up
    assert evaluate(result.model, test).nonfinite == 0


def test_thief_procedure_scratch_vs_stolen() -> None:
    """A thief with a little data: the stolen weights start (and end) ahead of scratch; both runs are seeded."""
    full = make_synthetic(900, num_classes=4, seed=2)
    pool, test = full[:600], full[600:]
    with torch_threads(1):
        victim = finetune(build_model("lenet5", in_channels=1, image_size=8, num_classes=4), pool,
                          config=ThiefConfig(epochs=6, batch_size=32, lr=3e-3)).model
        data = thief_data(pool, 24, seed=0)
        budget = ThiefConfig(epochs=2, batch_size=8)
        stolen = finetune(victim, data, config=budget, seed=0, test=test)
        scratch = finetune(victim, data, config=budget, seed=0, test=test, from_scratch=True)
        again = finetune(victim, data, config=budget, seed=0, test=test, from_scratch=True)
    assert len(data) == 24 and (stolen.start, scratch.start) == ("stolen", "scratch")
    assert stolen.start_accuracy == evaluate(victim, test).accuracy > 0.9  # the victim is untouched and good
    assert scratch.start_accuracy < 0.5
    assert stolen.accuracy > scratch.accuracy + 0.2
    assert scratch.accuracy == again.accuracy
    assert all(torch.equal(a, b) for a, b in zip(scratch.model.state_dict().values(), again.model.state_dict().values()))


def test_reinitialised_keeps_the_normalisation_and_draws_fresh_weights() -> None:
    model = _vgg()
    a, b, c = reinitialised(model, 5), reinitialised(model, 5), reinitialised(model, 6)
    assert torch.equal(a.normalize.mean, model.normalize.mean)
    assert torch.equal(a.body.block1.conv1.weight, b.body.block1.conv1.weight)
    assert not torch.equal(a.body.block1.conv1.weight, c.body.block1.conv1.weight)
    assert not torch.equal(a.body.block1.conv1.weight, model.body.block1.conv1.weight)


def test_budget_and_repair_validation() -> None:
    with pytest.raises(ConfigError, match="epochs and batch_size must be >= 1"):
        ThiefConfig(epochs=0)
    with pytest.raises(ConfigError, match="at least 1 image"):
        thief_data(make_synthetic(8, seed=0), 0, seed=0)
    with pytest.raises(ConfigError, match="max_abs must be > 0"):
        RepairPolicy(max_abs=0)


def test_subnormals_are_flushed() -> None:
    tiny = torch.finfo(torch.float32).tiny
    state = {"w": torch.tensor([tiny / 8, -tiny / 2, 0.5, tiny])}
    template = torch.nn.Module()
    repaired, stats = repair_weights(state, template, RepairPolicy(fill="zero"))
    assert repaired["w"].tolist() == [0.0, 0.0, 0.5, tiny] and stats.subnormal == 2
