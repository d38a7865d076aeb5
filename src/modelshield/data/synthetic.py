"""Seeded synthetic image data for tests: each class is a fixed random template plus noise."""

from __future__ import annotations

import torch

from modelshield.data.types import TensorData
from modelshield.errors import ConfigError

__all__ = ["make_synthetic"]


def make_synthetic(
    n: int, *, num_classes: int = 4, channels: int = 1, image_size: int = 8, noise: float = 0.15, seed: int = 0
) -> TensorData:
    """Make ``n`` labelled images in [0, 1]; easy enough for a tiny model to learn in seconds.

    The class templates depend on ``seed`` only, so two calls with the same seed share templates and can
    serve as train and test data (draw them with different ``n`` and slice, or use ``seed`` for templates
    and the sample index for noise, as done here).

    Example:
        >>> d = make_synthetic(20, num_classes=2, seed=1)
        >>> tuple(d.x.shape), int(d.y.max())
        ((20, 1, 8, 8), 1)
    """
    if n < 1 or num_classes < 2 or channels < 1 or image_size < 4:
        raise ConfigError(f"synthetic data needs n>=1, classes>=2, channels>=1, size>=4; got {n}, {num_classes}, {channels}, {image_size}")
    gen = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, channels, image_size, image_size, generator=gen)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=gen)]
    x = templates[labels] + noise * torch.randn(n, channels, image_size, image_size, generator=gen)
    return TensorData(x.clamp(0, 1), labels.long())
