"""Split a classifier into its penultimate features ``phi(x)`` and its final linear layer ``h``.

QUEEN works on ``f(x) = h(phi(x))``. Zoo models expose ``features(x)`` and ``classifier`` directly; for any
other module the features are the input of its last ``nn.Linear`` (in registration order), captured with a
forward pre-hook during the ordinary forward pass, and that layer must produce the logits.

Example:
    >>> import torch
    >>> from modelshield.models import build_model
    >>> split = FeatureSplit(build_model("lenet5", in_channels=1, image_size=8, num_classes=10))
    >>> phi, logits = split(torch.rand(3, 1, 8, 8))
    >>> tuple(phi.shape), tuple(logits.shape), split.mode
    ((3, 84), (3, 10), 'zoo')
    >>> torch.allclose(split.head(phi), logits)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from modelshield.errors import ConfigError

__all__ = ["FeatureSplit"]


class FeatureSplit:
    """``(phi(x), logits)`` of a classifier in one forward pass.

    Attributes:
        model: the classifier (kept in eval mode).
        head: its final ``nn.Linear`` (``h``).
        mode: ``"zoo"`` (``features``/``classifier`` attributes) or ``"hook"`` (input of the last ``nn.Linear``).

    Raises:
        ConfigError: the module has no ``nn.Linear`` layer.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        classifier = getattr(model, "classifier", None)
        if callable(getattr(model, "features", None)) and isinstance(classifier, nn.Linear):
            self.head: nn.Linear = classifier
            self.mode = "zoo"
            return
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(f"{type(model).__name__} has no nn.Linear layer: QUEEN needs f = h(phi(x)) with h linear; "
                              "give the model a final nn.Linear (or `features`/`classifier` attributes)")
        self.head = linears[-1]
        self.mode = "hook"

    @property
    def feature_dim(self) -> int:
        """Width of ``phi(x)``."""
        return int(self.head.in_features)

    @property
    def num_classes(self) -> int:
        """Number of logits."""
        return int(self.head.out_features)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(features (N, D), logits (N, C))`` for a raw batch."""
        if self.mode == "zoo":
            phi = self.model.features(x)  # type: ignore[operator]
            return phi, self.head(phi)
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
            captured.append(inputs[0])

        handle = self.head.register_forward_pre_hook(hook)
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        if not captured:
            raise ConfigError(f"the last nn.Linear of {type(self.model).__name__} was not called in forward")
        return captured[-1].reshape(x.shape[0], -1), logits

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """``phi(x)`` of a large batch, in chunks."""
        return torch.cat([self(x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)])
