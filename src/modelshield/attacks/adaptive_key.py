"""Adaptive key recovery against AuthNet: a white-box thief optimises its own mask and offset.

The thief holds the protected model (weights and architecture) and a small labelled set of plain images
(1-5% of the training data in the benchmark). It knows the form of the key, ``key(z) = (1 - m) z + m P``
with ``m = 0.5 + 0.5 tanh(8 (M - 0.5))``, ``M`` in [0, 0.5], ``P`` in [-theta, theta], in the model's
normalised input space (a zoo model carries its normalisation), and maximises the model's accuracy on its
data: Adam on ``M`` and ``P`` minimising cross-entropy, projected back into the key space after every step,
from ``restarts`` random starts; the start with the lowest final training loss wins. Each start is one run of
:func:`~modelshield.training.train_model` with only ``M`` and ``P`` as parameters (the model stays frozen and
in eval mode).

Success is measured on held-out test data by the caller, against training from scratch on the same data.

Example:
    >>> import torch
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.models import build_model
    >>> from modelshield.data import Normalization
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> result = recover_key(model, make_synthetic(64, seed=0), Normalization.identity(1),
    ...                      AdaptiveKeyConfig(epochs=2, seed=0), progress=False)
    >>> result.key.input_shape, len(result.history)
    ((1, 8, 8), 2)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from modelshield.auth.key import DEFAULT_THETA, MASK_MAX, AuthKey, mask_from_raw
from modelshield.data.types import Normalization, TensorData
from modelshield.errors import ConfigError
from modelshield.training import TrainConfig, train_model

__all__ = ["AdaptiveKeyConfig", "AdaptiveKeyResult", "recover_key"]


@dataclass(frozen=True)
class AdaptiveKeyConfig:
    """Hyperparameters of the adaptive attacker.

    Attributes:
        epochs: passes over the thief's data per start.
        batch_size: images per step.
        lr: Adam learning rate on ``M`` and ``P``.
        restarts: random starts; the best final training loss is kept.
        theta: bound on the offset (the public key space).
        seed: seed of the starts and shuffling.
    """

    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.02
    restarts: int = 2
    theta: float = DEFAULT_THETA
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.restarts < 1:
            raise ConfigError(f"epochs, batch_size and restarts must be >= 1, got {self.epochs}, {self.batch_size}, {self.restarts}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.theta <= 10:
            raise ConfigError(f"theta must be in (0, 10], got {self.theta}")


@dataclass(frozen=True)
class AdaptiveKeyResult:
    """The thief's best key.

    Attributes:
        key: the recovered key (same form as a real one).
        train_accuracy: accuracy on the thief's own data with that key.
        history: per epoch of the winning start: mean loss.
        seconds: wall time of the whole attack.
    """

    key: AuthKey
    train_accuracy: float
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0


class _KeyedModel(nn.Module):
    """The attacked model behind a trainable key of the public form; input: normalised images."""

    def __init__(self, model: nn.Module, normalization: Normalization, theta: float, shape: tuple[int, int, int],
                 generator: torch.Generator) -> None:
        super().__init__()
        c, h, w = shape
        self.model, self.normalization, self.theta = model, normalization, theta
        self.mask_raw = nn.Parameter(torch.rand(1, h, w, generator=generator) * MASK_MAX)
        self.offset = nn.Parameter((torch.rand(c, h, w, generator=generator) * 2 - 1) * theta)

    @torch.no_grad()
    def project(self) -> None:
        """Clamp the key back into the public key space."""
        self.mask_raw.clamp_(0.0, MASK_MAX)
        self.offset.clamp_(-self.theta, self.theta)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m = mask_from_raw(self.mask_raw)
        return self.model(self.normalization.invert((1 - m) * z + m * self.offset))


def recover_key(model: nn.Module, data: TensorData, normalization: Normalization,
                config: AdaptiveKeyConfig | None = None, *, gate: str = "", progress: bool = True) -> AdaptiveKeyResult:
    """Optimise a mask and offset that maximise ``model``'s accuracy on ``data`` (see the module docstring).

    Args:
        model: the protected model (white box); its weights are not changed.
        data: the thief's labelled plain images (raw).
        normalization: the model's input statistics (public for a zoo model: its ``normalize`` buffers).
        config: hyperparameters.
        gate: recorded in the returned key (informational).
        progress: show a progress bar.

    Raises:
        ConfigError: empty data or a normalisation of the wrong channel count.
    """
    config = config or AdaptiveKeyConfig()
    if len(data) == 0:
        raise ConfigError("the adaptive attacker needs at least one labelled image")
    if normalization.channels != data.x.shape[1]:
        raise ConfigError(f"normalization has {normalization.channels} channels, the images have {data.x.shape[1]}")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    c, h, w = data.x.shape[1:]
    z_all = normalization.apply(data.x)
    best: tuple[float, _KeyedModel, list[float]] | None = None
    for r in range(config.restarts):
        keyed = _KeyedModel(model, normalization, config.theta, (c, h, w), gen)

        def loss(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], keyed: _KeyedModel = keyed) -> torch.Tensor:
            keyed.project()  # projected gradient: the previous step's update is projected before it is used
            return F.cross_entropy(net(batch[0]), batch[1])

        schedule = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, optimizer="adam",
                               schedule="none", seed=config.seed + 1 + r)
        run = train_model(keyed, (z_all, data.y), config=schedule, loss=loss, params=[keyed.mask_raw, keyed.offset],
                          progress=progress, description=f"adaptive key {r + 1}/{config.restarts}")
        keyed.project()
        history = [e["loss"] for e in run.history]
        if best is None or history[-1] < best[0]:
            best = (history[-1], keyed, history)
    assert best is not None
    key = AuthKey(best[1].mask_raw.detach().clone(), best[1].offset.detach().clone(), normalization, gate, theta=config.theta)
    with torch.no_grad():
        logits = torch.cat([model(key.apply(data.x[i : i + 1024])) for i in range(0, len(data), 1024)])
    accuracy = float((logits.argmax(1) == data.y).float().mean())
    return AdaptiveKeyResult(key, accuracy, best[2], time.perf_counter() - start)
