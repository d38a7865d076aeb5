"""What a defense costs honest users: accuracy of the answers a benign client sees, and answer distortion.

Example:
    >>> import torch
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.models import build_model
    >>> from modelshield.defense.baselines import NoDefense, TopOneDefense
    >>> data = make_synthetic(100, num_classes=4, seed=0)
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> a = benign_report(model, NoDefense(), data, queries_per_client=25)
    >>> b = benign_report(model, TopOneDefense(), data)
    >>> a.accuracy == b.accuracy, a.l1_distortion, a.clients, b.clients
    (True, 0.0, 4, 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modelshield.data.types import TensorData
from modelshield.defense.base import Defense
from modelshield.defense.protected import ProtectedModel
from modelshield.errors import ConfigError

__all__ = ["BenignReport", "benign_report"]


@dataclass(frozen=True)
class BenignReport:
    """Answers seen by benign clients querying a labelled set.

    Attributes:
        accuracy: top-1 accuracy of the answered vectors.
        undefended_accuracy: top-1 accuracy of the model itself on the same set.
        l1_distortion: mean L1 distance between the true and the answered probability vectors.
        label_changes: fraction of answers whose top-1 differs from the model's.
        clients: number of distinct client ids used.
        queries_per_client: queries each client sent (the last may send fewer).
    """

    accuracy: float
    undefended_accuracy: float
    l1_distortion: float
    label_changes: float
    clients: int
    queries_per_client: int


@torch.no_grad()
def benign_report(model: nn.Module, defense: Defense, data: TensorData, *, queries_per_client: int | None = None,
                  client_prefix: str = "benign", batch_size: int = 256) -> BenignReport:
    """Query ``data`` in order through ``defense``, as one client or as fresh clients of ``queries_per_client`` each."""
    if queries_per_client is not None and queries_per_client < 1:
        raise ConfigError(f"queries_per_client must be >= 1 or None, got {queries_per_client}")
    protected = ProtectedModel(model, defense, max_batch=batch_size)
    per = queries_per_client or len(data)
    answers, truth = [], []
    for i, start in enumerate(range(0, len(data), per)):
        x = data.x[start : start + per]
        answers.append(protected.answer(x, f"{client_prefix}-{i}"))
        truth.append(torch.cat([torch.softmax(protected.split(x[j : j + batch_size])[1].float(), 1)
                                for j in range(0, len(x), batch_size)]))
    out, p = torch.cat(answers), torch.cat(truth)
    clients = -(-len(data) // per)
    return BenignReport(
        accuracy=float((out.argmax(1) == data.y).float().mean()),
        undefended_accuracy=float((p.argmax(1) == data.y).float().mean()),
        l1_distortion=float((out - p).abs().sum(1).mean()),
        label_changes=float((out.argmax(1) != p.argmax(1)).float().mean()),
        clients=clients, queries_per_client=per,
    )
