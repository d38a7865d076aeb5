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

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from modelshield.auth.bits import channel_means, select_bits
from modelshield.auth.key import AuthKey
from modelshield.auth.keygen import generate_key
from modelshield.data.types import TensorData
from modelshield.errors import ConfigError
from modelshield.training import evaluate

if TYPE_CHECKING:
    from modelshield.auth.embedding import AuthConfig

__all__ = ["AuthEvaluation", "accuracy_with_key", "evaluate_auth", "independent_key"]


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


def _subseed(seed: int, tag: str) -> int:
    return int.from_bytes(hashlib.sha256(f"modelshield-auth-independent:{seed}:{tag}".encode()).digest()[:8], "little") >> 1


def independent_key(model: nn.Module, key: AuthKey, train: TensorData, config: AuthConfig, *, seed: int) -> AuthKey:
    """A key made with the same public procedure as ``key`` on other randomness: what an attacker who knows the
    method (and has the model and training data) but not the secret would try.

    The bits are drawn afresh (``config``'s pool rule, the same count as ``key``'s), on a fresh subset of
    ``config.key_images`` training images, and the key is generated with ``config.key`` from a fresh start.

    Args:
        model: the protected model.
        key: its key (gate, bit count, normalisation and input shape are taken from it).
        train: training images.
        config: the embedding configuration ``key`` was made with.
        seed: this key's randomness (one seed per independent key).
    """
    x = train.x if config.key_images is None or config.key_images >= len(train) else \
        train.subset(config.key_images, _subseed(seed, "data")).x
    means = channel_means(model, key.gate, x)
    num_bits = len(key.bits) or (config.num_bits or 1)
    bits = select_bits(means, num_bits, config.gamma, pool=config.pool_size(means, num_bits),
                       generator=torch.Generator().manual_seed(_subseed(seed, "bits")))
    return generate_key(model, key.gate, x, bits, key.normalization, replace(config.key, seed=_subseed(seed, "key"))).key
