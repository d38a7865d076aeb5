"""A protected model: the model, a defense and the per-client policy, answering query batches for a client.

This is the one code path that turns queries into answers: the in-process oracle
(:class:`~modelshield.oracle.ModelOracle`) and the HTTP service both call :meth:`ProtectedModel.answer`, so the
service cannot diverge from the library. The server enforces each client's :class:`ClientPolicy`: the output
mode (probability vectors or only the top-1 label) and the query budget. What it remembers about a client (its
query count here, the defense's own state there) lives in a :class:`~modelshield.state.StateStore`.

Example:
    >>> import torch
    >>> from modelshield.models import build_model
    >>> from modelshield.defense.baselines import NoDefense
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
    >>> protected = ProtectedModel(model, NoDefense())
    >>> x = torch.rand(4, 1, 8, 8)
    >>> torch.allclose(protected.answer(x, "alice"), torch.softmax(model(x), 1))
    True
    >>> label_only = ClientPolicy(output="label", budget=6)
    >>> protected.answer(x, "bob", label_only).sum(dim=1).tolist(), protected.queries("bob")
    ([1.0, 1.0, 1.0, 1.0], 4)
    >>> protected.answer(x, "bob", label_only)
    Traceback (most recent call last):
    ...
    modelshield.errors.BudgetExceeded: query budget exceeded: client 'bob' asked for 4 more queries, 2 of 6 left
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn

from modelshield.defense.base import Defense
from modelshield.defense.features import FeatureSplit
from modelshield.defense.policy import OUTPUT_MODES, ClientPolicy
from modelshield.errors import BudgetExceeded, ConfigError
from modelshield.images import as_image_batch
from modelshield.state import InMemoryStateStore, StateStore

__all__ = ["OUTPUT_MODES", "ClientPolicy", "ProtectedModel"]

class ProtectedModel:
    """``answer(x, client_id, policy)``: validation, budget, features and logits, the defense, the output mode.

    A batch is answered whole or not at all, in this order:

    1. The input is validated (:func:`~modelshield.images.as_image_batch`: tensor or numpy, uint8 divided by
       255, 4-D, ``input_shape``, finite). Bad input is a ConfigError; nothing is counted.
    2. The budget check and the reservation of the whole batch are one atomic store update
       (``queries:<client_id>``): a batch that does not fit is refused with BudgetExceeded, nothing answered
       and nothing recorded; concurrent batches of one client (threads, processes, replicas on one store) can
       never overspend it.
    3. The model runs on the batch in chunks of ``max_batch``; then the defense answers the whole batch in one
       call, so a stateful defense (QUEEN) commits the client's state once, for the whole batch.
    4. Label-only clients receive one-hot rows of the top-1 of the defended probabilities.

    No refunds: if the model or the defense fails after step 2 (an internal error, since the input was already
    validated), the reserved queries stay counted and nothing is returned. A refund would be a second,
    separate update that a crash could lose and that a client could provoke to get answers beyond its budget.
    The defense's state either moved for the whole batch or not at all (QUEEN commits after all features are
    computed; if it fails after its commit, the batch counts for QUEEN too, unanswered).

    Args:
        model: the classifier (put in eval mode).
        defense: the defense answering for it.
        store: where the per-client query counts live (default: a new in-memory store). Counts are keyed
            ``queries:<client_id>``, so protected models sharing a store share each client's budget.
        input_shape: (C, H, W) accepted (default: not checked).
        max_batch: largest chunk the model runs on at once (bounds memory; the defense still sees the batch whole).

    Raises:
        ConfigError: ``max_batch`` < 1, or the model has no final ``nn.Linear``.
    """

    COUNT_PREFIX = "queries:"

    def __init__(self, model: nn.Module, defense: Defense, *, store: StateStore | None = None,
                 input_shape: tuple[int, int, int] | None = None, max_batch: int = 1024) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if not isinstance(defense, Defense):
            raise ConfigError(f"defense must be a modelshield Defense (e.g. NoDefense()), got {type(defense).__name__}")
        self.split = FeatureSplit(model)
        self.defense = defense
        self.store: StateStore = store if store is not None else InMemoryStateStore()
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.max_batch = max_batch
        self._model_lock = threading.Lock()

    @property
    def num_classes(self) -> int:
        """Number of classes answered."""
        return self.split.num_classes

    def count_key(self, client_id: str) -> str:
        """The store key of a client's query count."""
        return f"{self.COUNT_PREFIX}{client_id}"

    def queries(self, client_id: str) -> int:
        """Queries answered (or reserved) for ``client_id`` so far."""
        return _decode_count(self.store.get(self.count_key(_check_client(client_id))))

    def check(self, x: Any) -> torch.Tensor:
        """Validate a query batch (tensor or numpy, 4-D, expected shape, finite); returns it as float32."""
        return as_image_batch(x, what="queries", shape=self.input_shape)  # type: ignore[arg-type]

    @torch.no_grad()
    def answer(self, x: Any, client_id: str, policy: ClientPolicy | None = None) -> torch.Tensor:
        """The answers (N, K) for a batch from ``client_id`` under ``policy`` (default: probabilities, no budget).

        Raises:
            ConfigError: bad input or client id (nothing counted).
            BudgetExceeded: the batch does not fit in the client's budget (nothing answered or recorded).
        """
        client_id = _check_client(client_id)
        policy = policy if policy is not None else ClientPolicy()
        if not isinstance(policy, ClientPolicy):
            raise ConfigError(f"policy must be a ClientPolicy or None, got {type(policy).__name__}")
        x = self.check(x)
        n = int(x.shape[0])
        if n == 0:
            return torch.empty(0, self.num_classes)
        self._reserve(client_id, n, policy.budget)
        with self._model_lock:
            parts = [self.split(x[s : s + self.max_batch]) for s in range(0, n, self.max_batch)]
        features = torch.cat([f for f, _ in parts])
        logits = torch.cat([z for _, z in parts])
        probs = self.defense.answer(x, logits, features, client_id, policy)
        if policy.output == "label":
            return torch.zeros_like(probs).scatter_(1, probs.argmax(dim=1, keepdim=True), 1.0)
        return probs

    def _reserve(self, client_id: str, n: int, budget: int | None) -> None:
        def reserve(old: bytes | None) -> tuple[bytes, int]:  # pure: the store may run it again
            used = _decode_count(old)
            if budget is not None and used + n > budget:
                raise BudgetExceeded(f"query budget exceeded: client {client_id!r} asked for {n} more queries, "
                                     f"{max(budget - used, 0)} of {budget} left")
            return str(used + n).encode(), used + n

        self.store.update(self.count_key(client_id), reserve)


def _check_client(client_id: object) -> str:
    if not isinstance(client_id, str) or not client_id:
        raise ConfigError(f"client_id must be a non-empty string, got {client_id!r}")
    return client_id


def _decode_count(blob: bytes | None) -> int:
    return 0 if blob is None else int(blob.decode("ascii"))
