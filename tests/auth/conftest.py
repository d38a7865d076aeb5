"""Shared fixtures for the AuthNet tests: a tiny CNN on synthetic data, trained and protected once per session."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from modelshield.auth import AuthConfig, EmbedResult, KeyGenConfig, embed
from modelshield.data import TensorData, make_synthetic
from modelshield.training import TrainConfig, seed_everything, train_model


def tiny_cnn(size: int = 12, classes: int = 4) -> nn.Sequential:
    """conv-relu-pool (the default gate is the pool, module "2"), then a two-layer MLP tail."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * (size // 2) ** 2, 64), nn.ReLU(), nn.Linear(64, classes))


@dataclass
class Protected:
    clean: nn.Module
    result: EmbedResult
    train: TensorData
    val: TensorData
    test: TensorData


@pytest.fixture(scope="session")
def protected() -> Protected:
    seed_everything(0)
    full = make_synthetic(2000, num_classes=4, image_size=12, seed=0)
    train, val, test = full[torch.arange(1200)], full[torch.arange(1200, 1500)], full[torch.arange(1500, 2000)]
    clean = tiny_cnn()
    train_model(clean, train, config=TrainConfig(epochs=5, batch_size=64, lr=3e-3), progress=False)
    # gate "2" named: a single-candidate auto would run a scored trial of the same embedding on top
    config = AuthConfig(gate="2", tail_epochs=25, tail_lr=3e-3, tail_batch_size=128, decoy_keys=1, seed=0, key=KeyGenConfig(seed=0))
    result = embed(clean, train, val, config=config, progress=False)
    return Protected(clean, result, train, val, test)
