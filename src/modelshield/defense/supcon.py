"""Supervised contrastive loss (Khosla et al. 2020), used to train QUEEN's 2-D mapping network.

Example:
    >>> import torch
    >>> y = torch.tensor([0, 0, 1, 1])
    >>> together = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    >>> mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.01], [0.01, 1.0]])
    >>> bool(supervised_contrastive_loss(together, y) < supervised_contrastive_loss(mixed, y))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["supervised_contrastive_loss"]


def supervised_contrastive_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Mean over anchors (with at least one positive) of ``-mean_p log softmax_a(z_a . z_p / T)``.

    Args:
        z: (N, d) embeddings (L2-normalised here).
        labels: (N,) class labels; samples of the same class are positives of each other.
        temperature: softmax temperature (0.07 in QUEEN).
    """
    z = F.normalize(z, dim=1)
    n = z.shape[0]
    sim = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(dim=1)
    valid = counts > 0
    if not valid.any():
        return z.sum() * 0.0
    pos_log = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    return -(pos_log[valid] / counts[valid]).mean()
