"""The black-box prediction interface every extraction attack uses.

An :class:`Oracle` answers ``oracle(x) -> (N, K) probabilities``, counts the queries it answered, refuses a
batch that would exceed its budget (:class:`~modelshield.errors.BudgetExceeded`, nothing answered), carries the
client id it asks as, and has an output mode: ``probabilities`` (the defended vectors) or ``label`` (a one-hot
on their top-1 class, for hard-label attackers). :class:`ModelOracle` is the in-process implementation over a
model and a defense; a remote implementation only has to provide :meth:`Oracle._answer`.

Example:
    >>> import torch
    >>> from modelshield.models import build_model
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
    >>> oracle = ModelOracle(model, budget=5, output="label", client_id="mallory")
    >>> oracle(torch.rand(3, 1, 8, 8)).sum(dim=1).tolist(), oracle.queries, oracle.remaining
    ([1.0, 1.0, 1.0], 3, 2)
    >>> oracle(torch.rand(3, 1, 8, 8))
    Traceback (most recent call last):
    ...
    modelshield.errors.BudgetExceeded: query budget exceeded: 3 more queries asked, 2 of 5 left (client 'mallory')
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

import torch
from torch import nn

from modelshield.defense.base import Defense
from modelshield.defense.baselines import NoDefense
from modelshield.defense.protected import ProtectedModel
from modelshield.errors import BudgetExceeded, ConfigError

__all__ = ["OUTPUT_MODES", "ModelOracle", "Oracle"]

OUTPUT_MODES = ("probabilities", "label")


class Oracle(ABC):
    """A counted, budgeted prediction interface.

    Args:
        num_classes: K.
        client_id: the identity the queries are sent as.
        budget: maximum number of queries answered (None = unlimited).
        output: ``probabilities`` or ``label``.
    """

    def __init__(self, num_classes: int, *, client_id: str = "client-0", budget: int | None = None,
                 output: str = "probabilities") -> None:
        if output not in OUTPUT_MODES:
            raise ConfigError(f"oracle output must be one of {', '.join(OUTPUT_MODES)}, got {output!r}")
        if budget is not None and budget < 0:
            raise ConfigError(f"oracle budget must be >= 0 or None, got {budget}")
        if not client_id:
            raise ConfigError("oracle client_id must be a non-empty string")
        self.num_classes = num_classes
        self.client_id = client_id
        self.budget = budget
        self.output = output
        self._queries = 0
        self._lock = threading.Lock()

    @property
    def queries(self) -> int:
        """Queries answered so far."""
        return self._queries

    @property
    def remaining(self) -> int | None:
        """Queries left in the budget (None when unlimited)."""
        return None if self.budget is None else self.budget - self._queries

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Answer a batch (N, C, H, W) -> (N, K); raises BudgetExceeded (answering nothing) past the budget."""
        n = int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() >= 1 else 0
        with self._lock:
            if self.budget is not None and self._queries + n > self.budget:
                raise BudgetExceeded(f"query budget exceeded: {n} more queries asked, {self.budget - self._queries} of "
                                     f"{self.budget} left (client {self.client_id!r})")
            self._queries += n
        try:
            probs = self._answer(x)
        except BaseException:
            with self._lock:
                self._queries -= n
            raise
        if self.output == "label":
            return torch.zeros_like(probs).scatter_(1, probs.argmax(dim=1, keepdim=True), 1.0)
        return probs

    @abstractmethod
    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        """The defended probabilities for a batch."""


class ModelOracle(Oracle):
    """An in-process oracle over a model and a defense (default: undefended).

    Args:
        model: the protected classifier.
        defense: how answers are produced (see :mod:`modelshield.defense`).
        client_id, budget, output: see :class:`Oracle`.
        batch_size: queries are answered in consecutive chunks of this size, in order, as an API would.
        input_shape: (C, H, W) accepted (default: not checked).
    """

    def __init__(self, model: nn.Module, defense: Defense | None = None, *, client_id: str = "client-0",
                 budget: int | None = None, output: str = "probabilities", batch_size: int = 256,
                 input_shape: tuple[int, int, int] | None = None) -> None:
        self.protected = ProtectedModel(model, defense or NoDefense(), input_shape=input_shape, max_batch=batch_size)
        super().__init__(self.protected.num_classes, client_id=client_id, budget=budget, output=output)

    @property
    def defense(self) -> Defense:
        """The defense answering."""
        return self.protected.defense

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        return self.protected.answer(x, self.client_id)
