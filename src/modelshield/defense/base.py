"""The one interface every extraction defense implements.

A defense sees a query batch ``x``, the protected model's ``logits`` and penultimate ``features`` for it,
the caller's ``client_id`` and its policy; it returns the probability vectors the caller receives. Stateless defenses
ignore the client; QUEEN keeps per-client state in a :class:`~modelshield.state.StateStore`.
Defenses are vectorised over the batch (no per-sample Python loop, no per-sample optimiser).

Example:
    >>> import torch
    >>> from modelshield.defense.baselines import NoDefense
    >>> logits = torch.tensor([[2.0, 0.0]])
    >>> NoDefense().answer(torch.zeros(1, 1, 2, 2), logits, torch.zeros(1, 3), "alice").round(decimals=4).tolist()
    [[0.8808000087738037, 0.11919999867677689]]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from modelshield.defense.policy import ClientPolicy

__all__ = ["Defense"]


class Defense(ABC):
    """Base class of extraction defenses (subclasses set ``name`` and implement :meth:`answer`)."""

    name: str = "defense"

    @abstractmethod
    def answer(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor, client_id: str,
               policy: ClientPolicy | None = None) -> torch.Tensor:
        """Answer a batch.

        Args:
            x: the raw query batch (N, C, H, W).
            logits: the protected model's logits (N, K).
            features: its penultimate features (N, D).
            client_id: who is asking (stateful defenses keep state per client).
            policy: the client's policy (:class:`~modelshield.defense.ClientPolicy`: trusted, QUEEN allowance);
                None is the default policy. Stateless defenses ignore it.

        Returns:
            (N, K) answered probability vectors.
        """

    def describe(self) -> dict[str, Any]:
        """JSON-able name and settings (for results and logs)."""
        return {"name": self.name}

    def reset(self, client_id: str | None = None) -> None:
        """Forget a client's state (all clients when None); stateless defenses have nothing to forget."""
        del client_id
