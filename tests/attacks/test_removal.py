"""Removal transformations (fine-tune, global magnitude pruning, int8 dynamic quantization) and the adaptive
key-recovery attacker: generic, copy-returning, and doing what they say."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelshield.attacks.adaptive_key import AdaptiveKeyConfig, recover_key
from modelshield.attacks.finetune import ThiefConfig, finetune
from modelshield.attacks.removal import prune_global_magnitude, quantize_int8_dynamic, sparsity
from modelshield.attacks.removal.prune import prunable_weights
from modelshield.attacks.removal.quantize import quantized_linear_count
from modelshield.data import Normalization, make_synthetic
from modelshield.errors import ConfigError
from modelshield.models import build_model
from modelshield.training import evaluate


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet5", in_channels=1, image_size=12, num_classes=4).eval()


@pytest.mark.parametrize("amount", [0.1, 0.3, 0.5])
def test_global_pruning_zeroes_exactly_the_smallest_weights(amount: float) -> None:
    model = _model()
    pruned = prune_global_magnitude(model, amount)
    assert sparsity(model) == 0.0  # the input is untouched
    assert sparsity(pruned) == pytest.approx(amount, abs=1e-3)
    before = torch.cat([w.detach().abs().flatten() for w in prunable_weights(model)])
    after = torch.cat([w.detach().flatten() for w in prunable_weights(pruned)])
    threshold = before.sort().values[round(amount * before.numel()) - 1]
    assert bool((before[after == 0] <= threshold).all())
    assert bool((before[after != 0] >= threshold).all())
    # global, not per layer: the layers end up with different sparsities
    per_layer = [float((w == 0).float().mean()) for w in prunable_weights(pruned)]
    assert max(per_layer) - min(per_layer) > 0.05
    # biases and buffers are untouched
    assert torch.equal(model.body.conv1.bias, pruned.body.conv1.bias)


def test_pruning_nothing_changes_nothing_and_bad_amounts_fail() -> None:
    model, x = _model(), torch.rand(3, 1, 12, 12)
    assert torch.equal(prune_global_magnitude(model, 0.0)(x), model(x))
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError):
            prune_global_magnitude(model, bad)
    with pytest.raises(ConfigError, match="no conv or linear"):
        prune_global_magnitude(nn.Sequential(nn.ReLU()), 0.2)


def test_int8_dynamic_quantization_covers_linear_layers_only() -> None:
    model, x = _model(), torch.rand(8, 1, 12, 12)
    quantized = quantize_int8_dynamic(model)
    assert quantized_linear_count(quantized) == 3  # fc1, fc2, classifier
    assert isinstance(quantized.body.conv1, nn.Conv2d)  # convolutions stay float
    assert quantized_linear_count(model) == 0
    with torch.no_grad():
        a, b = model(x), quantized(x)
    assert not torch.equal(a, b)
    assert torch.allclose(a, b, atol=0.05 * float(a.abs().max()) + 1e-3)


def test_finetune_trains_a_copy() -> None:
    data = make_synthetic(64, num_classes=4, image_size=12, seed=0)
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = finetune(model, data, config=ThiefConfig(epochs=3, batch_size=16, lr=3e-3)).model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not torch.equal(tuned.body.conv1.weight, model.body.conv1.weight)  # every layer trains, head included
    assert evaluate(tuned, data).accuracy > evaluate(model, data).accuracy


def test_adaptive_key_stays_in_the_key_space() -> None:
    data = make_synthetic(64, num_classes=4, image_size=12, seed=3)
    victim = _model()
    result = recover_key(victim, data, Normalization.identity(1), AdaptiveKeyConfig(epochs=3, lr=0.05, restarts=2, seed=0),
                         progress=False)
    assert float(result.key.mask.max()) <= 0.5 and float(result.key.offset.abs().max()) <= 0.5
    assert result.key.input_shape == (1, 12, 12) and len(result.history) == 3
    assert all(p.requires_grad for p in victim.parameters())  # flags restored
    with pytest.raises(ConfigError):
        recover_key(victim, data, Normalization.identity(3), progress=False)
    with pytest.raises(ConfigError):
        AdaptiveKeyConfig(restarts=0)
