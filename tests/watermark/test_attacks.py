"""The attacks added for the watermark: distillation extraction, fine-pruning, trigger inversion."""

from __future__ import annotations

import pytest
import torch

from modelshield.attacks.extraction import QueryPool, build_attack
from modelshield.attacks.extraction.distillation import soften
from modelshield.attacks.removal import FinePruningConfig, TriggerInversionConfig, fine_prune, remove_by_trigger_inversion
from modelshield.data import make_synthetic
from modelshield.errors import ConfigError
from modelshield.models import build_model
from modelshield.oracle import ModelOracle
from modelshield.training import TrainConfig, train_model


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, image_size=12, num_classes=4)
    train_model(model, make_synthetic(400, num_classes=4, image_size=12, seed=0), config=TrainConfig(epochs=3), progress=False)
    return model


def test_distillation_softens_the_oracle_answers() -> None:
    model = _model()
    pool = QueryPool(make_synthetic(100, num_classes=4, image_size=12, seed=1).x, "synthetic")
    hot = build_attack("distillation", budget=60, temperature=4.0).collect(ModelOracle(model), pool)
    plain = build_attack("distillation", budget=60, temperature=1.0).collect(ModelOracle(model), pool)
    assert torch.equal(hot.x, plain.x)
    assert torch.allclose(soften(plain.answers, 4.0), hot.answers, atol=1e-5)
    assert (hot.answers.max(dim=1).values <= plain.answers.max(dim=1).values + 1e-6).all()  # flatter
    assert torch.equal(hot.answers.argmax(1), plain.answers.argmax(1))
    with pytest.raises(ConfigError, match="temperature"):
        build_attack("distillation", budget=10, temperature=0.0)


def test_fine_pruning_zeroes_dormant_channels_and_keeps_the_input() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = make_synthetic(300, num_classes=4, image_size=12, seed=2)
    r = fine_prune(model, data, config=FinePruningConfig(max_accuracy_drop=0.5, finetune=TrainConfig(epochs=1)), progress=False)
    assert r.pruned and r.fraction <= 0.9
    conv = r.model.body.conv2
    assert torch.all(conv.weight[r.pruned] == 0) and torch.all(conv.bias[r.pruned] == 0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_trigger_inversion_scans_every_class() -> None:
    model = _model()
    data = make_synthetic(120, num_classes=4, image_size=12, seed=3)
    r = remove_by_trigger_inversion(model, data, config=TriggerInversionConfig(steps=20, unlearn=TrainConfig(epochs=1)),
                                    progress=False)
    assert set(r.mask_l1) == {0, 1, 2, 3} and r.target == min(r.mask_l1, key=r.mask_l1.get)
    assert r.anomaly_index is not None and 0.0 <= r.trigger_success <= 1.0
    assert float(r.mask.min()) >= 0 and float(r.mask.max()) <= 1
