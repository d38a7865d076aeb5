"""The pirate: a copy trained on an oracle's answers with soft cross-entropy, and how it is scored.

Example:
    >>> import torch
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.models import build_model
    >>> data = make_synthetic(200, num_classes=4, seed=0)
    >>> answers = torch.nn.functional.one_hot(data.y, 4).float()
    >>> pirate = train_pirate(data.x, answers, PirateConfig(epochs=3))
    >>> score = score_pirate(pirate, data, victim=pirate)
    >>> score.fidelity
    1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from modelshield.data.types import Normalization, TensorData
from modelshield.errors import ConfigError
from modelshield.models.registry import MODEL_REGISTRY, build_model, canonical_model_name
from modelshield.training import TrainConfig, predict_logits, score_logits, seed_everything, train_model

__all__ = ["PirateConfig", "PirateScore", "score_pirate", "train_pirate"]


@dataclass(frozen=True)
class PirateConfig:
    """How the pirate is trained.

    Attributes:
        architecture: zoo name (same as the victim or another).
        epochs: training epochs; None = automatic (about ``target_steps`` optimiser steps, within
            ``min_epochs``..``max_epochs``).
        batch_size: batch size.
        lr: Adam learning rate (cosine schedule).
        target_steps, min_epochs, max_epochs: the automatic epoch rule.
        seed: initialisation and shuffling seed.
    """

    architecture: str = "lenet5"
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    target_steps: int = 1500
    min_epochs: int = 10
    max_epochs: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        if canonical_model_name(self.architecture) not in MODEL_REGISTRY:
            raise ConfigError(f"pirate architecture must be one of {', '.join(MODEL_REGISTRY)}, got {self.architecture!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"pirate epochs must be >= 1 or None, got {self.epochs}")
        if self.batch_size < 1 or not self.lr > 0 or not 1 <= self.min_epochs <= self.max_epochs or self.target_steps < 1:
            raise ConfigError("pirate batch_size, lr, target_steps must be positive and 1 <= min_epochs <= max_epochs")

    def epochs_for(self, n: int) -> int:
        """Epochs used for ``n`` training samples."""
        if self.epochs is not None:
            return self.epochs
        steps = max(1, math.ceil(n / self.batch_size))
        return int(min(self.max_epochs, max(self.min_epochs, math.ceil(self.target_steps / steps))))


@dataclass(frozen=True)
class PirateScore:
    """Accuracy of the pirate on labelled test data and its agreement (fidelity) with the victim."""

    accuracy: float
    fidelity: float | None
    total: int


def train_pirate(x: torch.Tensor, answers: torch.Tensor, config: PirateConfig | None = None, *,
                 progress: bool = False) -> nn.Module:
    """Train a fresh pirate on queries ``x`` and the oracle's ``answers`` (soft cross-entropy).

    Hard-label answers (one-hot vectors) make this ordinary cross-entropy. Rows that do not sum to 1 (e.g.
    rounded probabilities) are renormalised; all-zero rows are dropped.
    """
    config = config or PirateConfig()
    if x.dim() != 4 or answers.dim() != 2 or len(x) != len(answers):
        raise ConfigError(f"pirate data: need (N, C, H, W) queries and (N, K) answers, got {tuple(x.shape)} and {tuple(answers.shape)}")
    total = answers.sum(dim=1, keepdim=True)
    keep = (total.flatten() > 0) & torch.isfinite(answers).all(dim=1)
    x, targets = x[keep], (answers[keep] / total[keep]).float()
    if len(x) == 0:
        raise ConfigError("pirate data: no usable answer (all rows empty or non-finite)")
    seed_everything(config.seed)
    _, channels, size, _ = x.shape
    model = build_model(config.architecture, in_channels=channels, image_size=size, num_classes=targets.shape[1],
                        normalization=Normalization.from_images(x))
    tc = TrainConfig(epochs=config.epochs_for(len(x)), batch_size=config.batch_size, lr=config.lr, schedule="cosine",
                     seed=config.seed)
    train_model(model, (x, targets), config=tc, progress=progress, description="pirate")
    return model.eval()


def score_pirate(pirate: nn.Module, test: TensorData, victim: nn.Module | None = None) -> PirateScore:
    """Pirate test accuracy, and fidelity = fraction of test images where pirate and victim agree (top-1)."""
    logits = predict_logits(pirate, test.x)
    acc = score_logits(logits, test.y).accuracy
    fidelity = None
    if victim is not None:
        fidelity = score_logits(logits, predict_logits(victim, test.x).argmax(dim=1)).accuracy
    return PirateScore(acc, fidelity, len(test))
