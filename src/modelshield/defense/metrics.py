"""What a defense costs honest users: accuracy of the answers a benign client sees, and answer distortion.

The benign client talks to an :class:`~modelshield.oracle.Oracle` like every other client (in process or over
HTTP); the undefended model is the reference its answers are compared with.

Example:
    >>> import torch
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.models import build_model
    >>> from modelshield.oracle import ModelOracle
    >>> from modelshield.defense.baselines import NoDefense, TopOneDefense
    >>> from modelshield.defense.protected import ProtectedModel
    >>> data = make_synthetic(100, num_classes=4, seed=0)
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> undefended = ProtectedModel(model, NoDefense())
    >>> a = benign_report(lambda client: ModelOracle(undefended, client_id=client), data, model=model,
    ...                   queries_per_client=25)
    >>> b = benign_report(ModelOracle(ProtectedModel(model, TopOneDefense())), data, model=model)
    >>> a.accuracy == b.accuracy, a.l1_distortion, a.clients, b.clients, undefended.queries("benign-3")
    (True, 0.0, 4, 1, 25)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from modelshield.data.types import TensorData
from modelshield.errors import ConfigError
from modelshield.oracle import Oracle

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
def benign_report(oracle: Oracle | Callable[[str], Oracle], data: TensorData, *, model: nn.Module,
                  queries_per_client: int | None = None, client_prefix: str = "benign",
                  batch_size: int = 256) -> BenignReport:
    """Query ``data`` in order as benign clients and compare the answers with ``model``'s own probabilities.

    Args:
        oracle: one oracle (one client sends the whole set), or a factory ``client_id -> Oracle`` that opens a
            fresh client for each session of ``queries_per_client`` queries (ids ``<client_prefix>-<i>``).
        data: the labelled queries.
        model: the undefended model (the reference for accuracy and distortion).
        queries_per_client: queries per fresh client (needs a factory); None: one client sends everything.
        client_prefix: client ids of the factory's sessions.
        batch_size: chunk size of the reference forward passes.

    Raises:
        ConfigError: ``queries_per_client`` < 1, or fresh clients asked of a single oracle.
    """
    if queries_per_client is not None and queries_per_client < 1:
        raise ConfigError(f"queries_per_client must be >= 1 or None, got {queries_per_client}")
    if isinstance(oracle, Oracle):
        if queries_per_client is not None:
            raise ConfigError("queries_per_client needs fresh clients: pass an oracle factory (client_id -> Oracle), "
                              "got a single Oracle")
        sessions: Callable[[str], Oracle] = lambda _client: oracle  # noqa: E731
    elif callable(oracle):
        sessions = oracle
    else:
        raise ConfigError(f"benign_report needs an Oracle or a factory client_id -> Oracle, got {type(oracle).__name__}")
    model.eval()
    per = queries_per_client or len(data)
    answers = []
    for i, start in enumerate(range(0, len(data), per)):
        answers.append(sessions(f"{client_prefix}-{i}")(data.x[start : start + per]))
    out = torch.cat(answers)
    p = torch.cat([torch.softmax(model(data.x[j : j + batch_size]).float(), 1) for j in range(0, len(data), batch_size)])
    return BenignReport(
        accuracy=float((out.argmax(1) == data.y).float().mean()),
        undefended_accuracy=float((p.argmax(1) == data.y).float().mean()),
        l1_distortion=float((out - p).abs().sum(1).mean()),
        label_changes=float((out.argmax(1) != p.argmax(1)).float().mean()),
        clients=-(-len(data) // per), queries_per_client=per,
    )
