"""A tiny trained victim and fitted QUEEN artefacts shared by the defense tests (built once per session)."""

from __future__ import annotations

import pytest
import torch

from modelshield.data import TensorData, make_synthetic
from modelshield.defense import QueenArtifacts, QueenFitConfig, fit_queen
from modelshield.models import build_model
from modelshield.training import TrainConfig, seed_everything, train_model


@pytest.fixture(scope="session")
def tiny() -> tuple[torch.nn.Module, TensorData, TensorData]:
    """A LeNet-5 on 4-class synthetic 8x8 images (train, held-out)."""
    data = make_synthetic(1200, num_classes=4, seed=1)
    train, held = data[torch.arange(0, 900)], data[torch.arange(900, 1200)]
    seed_everything(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    train_model(model, train, config=TrainConfig(epochs=6, batch_size=64, lr=3e-3, seed=0), progress=False)
    return model.eval(), train, held


@pytest.fixture(scope="session")
def artifacts(tiny: tuple[torch.nn.Module, TensorData, TensorData]) -> QueenArtifacts:
    model, train, _ = tiny
    config = QueenFitConfig(mapping_epochs=8, mapping_batch_size=256, num_shadows=5, shadow_samples=256, shadow_lr=1e-2, seed=0)
    return fit_queen(model, train, config=config)
