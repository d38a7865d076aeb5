"""QUEEN's shadow models: several deliberately weak classifiers standing in for a half-trained pirate.

Each is trained for one epoch on its own small random subset of the defender's data. The default
architecture, ``softmax`` (multinomial logistic regression on the normalised pixels), costs a few percent of a
LeNet-5 forward pass, which keeps QUEEN's reverse path cheap; any zoo name (``lenet5``, ...) also works.

Example:
    >>> import torch
    >>> from modelshield.data import make_synthetic
    >>> data = make_synthetic(200, num_classes=4, seed=0)
    >>> shadows = train_shadows(data, num_classes=4, count=2, samples=100, seed=0)
    >>> len(shadows), tuple(shadows[0](data.x[:3]).shape)
    (2, (3, 4))
"""

from __future__ import annotations

import torch
from torch import nn

from modelshield.data.types import Normalization, TensorData
from modelshield.errors import ConfigError
from modelshield.models.registry import MODEL_REGISTRY, build_model, canonical_model_name
from modelshield.models.zoo import Normalize
from modelshield.training import TrainConfig, train_model

__all__ = ["SHADOW_ARCHITECTURES", "SoftmaxRegression", "build_shadow", "train_shadows"]

SHADOW_ARCHITECTURES = ("softmax", *MODEL_REGISTRY)


class SoftmaxRegression(nn.Module):
    """Normalise, flatten, one linear layer: the cheapest useful image classifier."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int, normalization: Normalization | None = None) -> None:
        super().__init__()
        self.normalize = Normalize(normalization or Normalization.identity(in_channels))
        self.linear = nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.normalize(x).flatten(1))


def build_shadow(architecture: str, *, in_channels: int, image_size: int, num_classes: int,
                 normalization: Normalization | None = None) -> nn.Module:
    """An untrained shadow model (``softmax`` or a zoo name)."""
    if architecture == "softmax":
        return SoftmaxRegression(in_channels, image_size, num_classes, normalization)
    if canonical_model_name(architecture) not in MODEL_REGISTRY:
        raise ConfigError(f"unknown shadow architecture {architecture!r}; known: {', '.join(SHADOW_ARCHITECTURES)}")
    return build_model(architecture, in_channels=in_channels, image_size=image_size, num_classes=num_classes,
                       normalization=normalization)


def train_shadows(data: TensorData, *, num_classes: int, count: int = 10, samples: int = 1000,
                  architecture: str = "softmax", lr: float = 1e-3, batch_size: int = 32, seed: int = 0,
                  normalization: Normalization | None = None) -> list[nn.Module]:
    """Train ``count`` shadow models, each one epoch on ``samples`` random images of ``data``.

    Raises:
        ConfigError: bad counts or architecture.
    """
    if count < 1 or samples < 1:
        raise ConfigError(f"shadow models need count >= 1 and samples >= 1, got {count} and {samples}")
    shadows = []
    _, channels, size, _ = data.x.shape
    for i in range(count):
        torch.manual_seed(seed * 1000 + i)
        model = build_shadow(architecture, in_channels=channels, image_size=size, num_classes=num_classes,
                             normalization=normalization)
        subset = data.subset(min(samples, len(data)), seed=seed * 1000 + i)
        config = TrainConfig(epochs=1, batch_size=batch_size, lr=lr, schedule="none", seed=seed * 1000 + i)
        train_model(model, subset, config=config, progress=False, description=f"shadow {i}")
        shadows.append(model.eval())
    return shadows
