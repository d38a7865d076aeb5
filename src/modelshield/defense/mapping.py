"""QUEEN's mapping network ``g``: penultimate features -> a point on the unit circle in R^2.

A small MLP whose widths shrink by 4x per layer (e.g. 84 -> 21 -> 2 for LeNet-5, 256 -> 64 -> 16 -> 2 for
the small VGG), trained with the supervised contrastive loss; its output is L2-normalised, the space the
contrastive loss shapes, so distances there have a fixed scale.

Example:
    >>> import torch
    >>> mapping_widths(84), mapping_widths(256)
    ([84, 21, 2], [256, 64, 16, 2])
    >>> g = MappingNetwork(mapping_widths(84))
    >>> z = g(torch.rand(5, 84))
    >>> tuple(z.shape), bool(torch.allclose(z.norm(dim=1), torch.ones(5)))
    ((5, 2), True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modelshield.errors import ConfigError

__all__ = ["MappingNetwork", "mapping_widths"]


def mapping_widths(in_features: int, out_features: int = 2) -> list[int]:
    """Layer widths from ``in_features`` down to ``out_features``, shrinking by 4x while above 4x the output."""
    if in_features < 1:
        raise ConfigError(f"mapping network input width must be >= 1, got {in_features}")
    widths = [in_features]
    while widths[-1] // 4 >= 4 * out_features:
        widths.append(widths[-1] // 4)
    return [*widths, out_features]


class MappingNetwork(nn.Module):
    """MLP with ReLU between layers, output normalised to the unit circle."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ConfigError(f"mapping network widths must be >= 2 positive ints, got {widths}")
        self.widths = list(widths)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(features), dim=1)
