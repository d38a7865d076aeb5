"""Measuring a protected model: accuracy with its key, without it, and with random keys.

Example:
    >>> import torch
    >>> from modelshield.data import Normalization, make_synthetic
    >>> from modelshield.models import build_model
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> key = AuthKey.random((1, 8, 8), Normalization.identity(1), "body.pool2").bound_to(model)
    >>> result = evaluate_auth(model, key, make_synthetic(32, seed=0), random_keys=2)
    >>> len(result.random_keys), 0.0 <= result.legit <= 1.0
    (2, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modelshield.auth.key import AuthKey
from modelshield.data.types import TensorData
from modelshield.errors import ConfigError
from modelshield.training import evaluate

__all__ = ["AuthEvaluation", "accuracy_with_key", "evaluate_auth"]


@dataclass(frozen=True)
class AuthEvaluation:
    """Accuracies of a protected model on one dataset.

    Attributes:
        legit: with the right key (legitimate user).
        unauthorized: on plain inputs (no key).
        random_keys: one accuracy per key drawn uniformly in the key space.
        total: number of images.
    """

    legit: float
    unauthorized: float
    random_keys: tuple[float, ...]
    total: int

    @property
    def random_mean(self) -> float | None:
        """Mean accuracy over the random keys (None without any)."""
        return sum(self.random_keys) / len(self.random_keys) if self.random_keys else None

    @property
    def random_max(self) -> float | None:
        """Best accuracy of any random key (None without any)."""
        return max(self.random_keys) if self.random_keys else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"legit": self.legit, "unauthorized": self.unauthorized, "random_keys": list(self.random_keys),
                "random_mean": self.random_mean, "random_max": self.random_max, "total": self.total}


def accuracy_with_key(model: nn.Module, key: AuthKey, data: TensorData, *, verify: bool = False,
                      batch_size: int = 1024) -> float:
    """Accuracy of ``model`` on ``data`` with ``key`` applied to every (raw) image.

    Args:
        verify: also check that ``key`` belongs to ``model`` (fingerprint); off by default so modified copies
            (pruned, quantised, fine-tuned) and foreign keys can be measured.
    """
    return evaluate(key.bind(model, verify=verify), data, batch_size).accuracy


def evaluate_auth(model: nn.Module, key: AuthKey, data: TensorData, *, random_keys: int = 10, seed: int = 0,
                  verify: bool = True, batch_size: int = 1024) -> AuthEvaluation:
    """Legitimate, unauthorized and random-key accuracies of ``model`` on ``data``.

    Args:
        model: the protected model.
        key: its key.
        data: raw images and labels.
        random_keys: how many uniformly random keys to try (same input shape and normalisation as ``key``).
        seed: seed of the random keys.
        verify: check first that ``key`` belongs to ``model`` (its weights' fingerprint), so a wrong model or key
            fails loudly instead of getting numbers; pass False to measure a modified copy on purpose (pruned,
            quantised, fine-tuned).

    Raises:
        ConfigError: a negative ``random_keys``, a wrong input shape, or (with ``verify``) a key that is not
            bound to ``model``.
    """
    if random_keys < 0:
        raise ConfigError(f"random_keys must be >= 0, got {random_keys}")
    if verify:
        key.check_model(model)
    legit = accuracy_with_key(model, key, data, batch_size=batch_size)
    plain = evaluate(model, data, batch_size).accuracy
    gen = torch.Generator().manual_seed(seed)
    randoms = tuple(accuracy_with_key(model, AuthKey.random(key.input_shape, key.normalization, key.gate, generator=gen,
                                                            theta=key.theta), data, batch_size=batch_size)
                    for _ in range(random_keys))
    return AuthEvaluation(legit, plain, randoms, len(data))

