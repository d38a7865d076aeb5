"""Global magnitude pruning: zero the smallest-magnitude weights across every conv and linear layer.

One threshold for the whole network (global, unstructured, L1): the ``amount`` fraction of all
``Conv*d``/``Linear`` weight entries with the smallest absolute value is set to zero. Biases, BatchNorm
parameters and buffers are untouched. The result is an ordinary module (no pruning masks or hooks left).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 2))
    >>> round(sparsity(prune_global_magnitude(net, 0.3)), 2)
    0.3
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from modelshield.errors import ConfigError

__all__ = ["prunable_weights", "prune_global_magnitude", "sparsity"]

_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight tensors global pruning acts on (conv and linear layers)."""
    return [m.weight for m in model.modules() if isinstance(m, _PRUNABLE) and isinstance(getattr(m, "weight", None), torch.Tensor)]


def sparsity(model: nn.Module) -> float:
    """Fraction of zero entries among the prunable weights."""
    weights = prunable_weights(model)
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


@torch.no_grad()
def prune_global_magnitude(model: nn.Module, amount: float) -> nn.Module:
    """A copy of ``model`` with the ``amount`` fraction of its conv/linear weights (smallest |w|) zeroed.

    Raises:
        ConfigError: ``amount`` outside [0, 1), or a model without conv/linear weights.
    """
    if not 0.0 <= amount < 1.0:
        raise ConfigError(f"pruning amount must be in [0, 1), got {amount}")
    pruned = copy.deepcopy(model)
    weights = prunable_weights(pruned)
    if not weights:
        raise ConfigError(f"{type(model).__name__} has no conv or linear weights to prune")
    count = round(amount * sum(w.numel() for w in weights))
    if count == 0:
        return pruned.eval()
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    # exactly `count` entries: rank all magnitudes once, ties broken by position
    order = torch.argsort(magnitudes, stable=True)[:count]
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    keep[order] = False
    start = 0
    for w in weights:
        n = w.numel()
        w.mul_(keep[start : start + n].view_as(w).to(w.dtype))
        start += n
    return pruned.eval()
