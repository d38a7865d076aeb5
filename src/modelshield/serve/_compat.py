"""Private adapter for names the architecture issue is adding (``ClientPolicy``, ``ProtectedModel`` with a
store, per-client counts and budgets). Deleted once they land on main.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modelshield.defense.base import Defense
from modelshield.defense.protected import ProtectedModel as _Inner
from modelshield.defense.store import ClientStateStore, InMemoryStateStore
from modelshield.errors import BudgetExceeded, ConfigError

__all__ = ["ClientPolicy", "ProtectedModel"]


@dataclass(frozen=True)
class ClientPolicy:
    """Output mode and query budget of one client."""

    output: str = "probabilities"
    budget: int | None = None

    def __post_init__(self) -> None:
        if self.output not in ("probabilities", "label"):
            raise ConfigError(f"policy output must be probabilities or label, got {self.output!r}")
        if self.budget is not None and self.budget < 0:
            raise ConfigError(f"policy budget must be >= 0 or None, got {self.budget}")


class ProtectedModel:
    """The model, its defense, and per-client query counts in a store."""

    def __init__(self, model: nn.Module, defense: Defense, *, store: ClientStateStore | None = None,
                 input_shape: tuple[int, int, int] | None = None, max_batch: int = 1024) -> None:
        self.inner = _Inner(model, defense, input_shape=input_shape, max_batch=max_batch)
        self.store: ClientStateStore = store if store is not None else InMemoryStateStore()
        self.defense = defense
        self.input_shape = self.inner.input_shape

    @property
    def num_classes(self) -> int:
        return self.inner.num_classes

    def queries(self, client_id: str) -> int:
        blob = self.store.get(f"queries:{client_id}")
        return 0 if blob is None else int(blob)

    def answer(self, x: torch.Tensor, client_id: str, policy: ClientPolicy | None = None) -> torch.Tensor:
        return self.answer_with_actions(x, client_id, policy)[0]

    def answer_with_actions(self, x: torch.Tensor, client_id: str,
                            policy: ClientPolicy | None = None) -> tuple[torch.Tensor, dict[str, int]]:
        """Answers and how many rows each defense action produced (QUEEN: reversed / perturbed)."""
        policy = policy or ClientPolicy()
        x = self.inner.check(x)
        n = int(x.shape[0])
        key = f"queries:{client_id}"

        def reserve(old: bytes | None) -> tuple[bytes | None, int | None]:
            count = 0 if old is None else int(old)
            if policy.budget is not None and count + n > policy.budget:
                return old, count
            return str(count + n).encode(), None

        refused = self.store.update(key, reserve)
        if refused is not None:
            raise BudgetExceeded(f"query budget exceeded: {n} more queries asked, {max(0, policy.budget - refused)} of "  # type: ignore[operator]
                                 f"{policy.budget} left (client {client_id!r})")
        try:
            probs, actions = self._answer(x, client_id)
        except BaseException:
            self.store.update(key, lambda old: (str(max(0, int(old or 0) - n)).encode(), None))
            raise
        if policy.output == "label":
            probs = torch.zeros_like(probs).scatter_(1, probs.argmax(dim=1, keepdim=True), 1.0)
        return probs, actions

    @torch.no_grad()
    def _answer(self, x: torch.Tensor, client_id: str) -> tuple[torch.Tensor, dict[str, int]]:
        decide = getattr(self.defense, "answer_with_decisions", None)
        if decide is None:
            return self.inner.answer(x, client_id), {self.defense.name: int(x.shape[0])}
        out, reversed_rows = [], 0
        for start in range(0, x.shape[0], self.inner.max_batch):
            chunk = x[start : start + self.inner.max_batch]
            with self.inner._model_lock:
                features, logits = self.inner.split(chunk)
            probs, rev = decide(chunk, logits, features, client_id)
            out.append(probs)
            reversed_rows += int(rev.sum())
        return torch.cat(out), {"reversed": reversed_rows, "perturbed": int(x.shape[0]) - reversed_rows}
