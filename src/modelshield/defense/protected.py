"""A protected model: the model and a defense, answering query batches for a client.

This is the one code path that turns queries into answers; the in-process oracle uses it, and an HTTP
service can wrap it unchanged (it holds no per-request state of its own; per-client state lives in the
defense's store).

Example:
    >>> import torch
    >>> from modelshield.models import build_model
    >>> from modelshield.defense.baselines import NoDefense
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
    >>> protected = ProtectedModel(model, NoDefense())
    >>> x = torch.rand(4, 1, 8, 8)
    >>> torch.allclose(protected.answer(x, "alice"), torch.softmax(model(x), 1))
    True
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from modelshield.defense.base import Defense
from modelshield.defense.features import FeatureSplit
from modelshield.errors import ConfigError

__all__ = ["ProtectedModel"]


class ProtectedModel:
    """``answer(x, client_id)``: features and logits in one forward pass, then the defense.

    Args:
        model: the classifier (put in eval mode).
        defense: the defense answering for it.
        input_shape: (C, H, W) accepted (default: not checked).
        max_batch: largest batch answered in one call to the defense (larger inputs are split in order).
    """

    def __init__(self, model: nn.Module, defense: Defense, *, input_shape: tuple[int, int, int] | None = None,
                 max_batch: int = 1024) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        self.split = FeatureSplit(model)
        self.defense = defense
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.max_batch = max_batch
        self._model_lock = threading.Lock()

    @property
    def num_classes(self) -> int:
        """Number of classes answered."""
        return self.split.num_classes

    def check(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a query batch (4-D float, expected shape, finite); returns it as float32."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ConfigError(f"queries must be a 4-D (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise ConfigError(f"queries must have shape (N, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        x = x.float()
        if not torch.isfinite(x).all():
            raise ConfigError("queries hold NaN or infinite values")
        return x

    @torch.no_grad()
    def answer(self, x: torch.Tensor, client_id: str) -> torch.Tensor:
        """The defended probability vectors (N, K) for a batch from ``client_id``, in order."""
        x = self.check(x)
        out = []
        for start in range(0, x.shape[0], self.max_batch):
            chunk = x[start : start + self.max_batch]
            with self._model_lock:
                features, logits = self.split(chunk)
            out.append(self.defense.answer(chunk, logits, features, client_id))
        return torch.cat(out) if out else torch.empty(0, self.num_classes)
