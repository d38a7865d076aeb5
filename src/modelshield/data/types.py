"""Plain containers for in-memory datasets: images as float32 NCHW in [0, 1], labels as int64."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from modelshield.errors import ConfigError

__all__ = ["DatasetBundle", "DatasetInfo", "Normalization", "TensorData"]


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation, applied as ``(x - mean) / std``.

    Example:
        >>> import torch
        >>> n = Normalization((0.5,), (0.25,))
        >>> n.apply(torch.ones(1, 1, 2, 2)).flatten().tolist()
        [2.0, 2.0, 2.0, 2.0]
        >>> n.invert(n.apply(torch.zeros(1, 1, 1, 1))).item()
        0.0
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std) or not self.mean:
            raise ConfigError(f"normalization needs one mean and one std per channel, got {self.mean} and {self.std}")
        if any(not (s > 0 and math.isfinite(s)) for s in self.std):
            raise ConfigError(f"normalization std must be positive and finite, got {self.std}")

    @property
    def channels(self) -> int:
        """Number of channels the statistics describe."""
        return len(self.mean)

    def _shape(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return mean, std

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a raw NCHW batch."""
        mean, std = self._shape(x)
        return (x - mean) / std

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Map a normalised NCHW batch back to raw pixel space."""
        mean, std = self._shape(x)
        return x * std + mean

    @classmethod
    def identity(cls, channels: int) -> Normalization:
        """Statistics that leave inputs unchanged."""
        return cls((0.0,) * channels, (1.0,) * channels)

    @classmethod
    def from_images(cls, x: torch.Tensor) -> Normalization:
        """Estimate per-channel statistics from an NCHW batch."""
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
        return cls(tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(std.tolist()))

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, doc: dict[str, list[float]]) -> Normalization:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(tuple(doc["mean"]), tuple(doc["std"]))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"normalization must have 'mean' and 'std' lists, got {doc!r}") from exc


@dataclass(frozen=True)
class TensorData:
    """Images and labels held in memory.

    Attributes:
        x: float32 images, shape (N, C, H, W), values in [0, 1].
        y: int64 labels, shape (N,).

    Example:
        >>> import torch
        >>> d = TensorData(torch.zeros(10, 1, 4, 4), torch.arange(10) % 2)
        >>> len(d), len(d.subset(0.5, seed=0)), len(d.subset(3, seed=0))
        (10, 5, 3)
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dim() != 4:
            raise ConfigError(f"images must be NCHW (4 dimensions), got shape {tuple(self.x.shape)}")
        if self.y.dim() != 1 or self.y.shape[0] != self.x.shape[0]:
            raise ConfigError(f"labels must be 1-D with one per image: {self.x.shape[0]} images, labels {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index: slice | torch.Tensor) -> TensorData:
        return TensorData(self.x[index], self.y[index])

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield consecutive (x, y) batches in order."""
        for start in range(0, len(self), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]

    def subset(self, size: float | int, seed: int = 0) -> TensorData:
        """A seeded random subset: ``size`` is a fraction in (0, 1] or a count.

        Raises:
            ConfigError: the size is not a valid fraction or count.
        """
        n = len(self)
        if isinstance(size, float):
            if not 0.0 < size <= 1.0:
                raise ConfigError(f"subset fraction must be in (0, 1], got {size}")
            count = max(1, round(size * n))
        else:
            if not 0 < size <= n:
                raise ConfigError(f"subset size must be in 1..{n}, got {size}")
            count = size
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(n, generator=generator)[:count]
        return self[index]

    def concat(self, other: TensorData) -> TensorData:
        """Concatenate two datasets of the same image shape."""
        return TensorData(torch.cat([self.x, other.x]), torch.cat([self.y, other.y]))


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    normalization: Normalization
    class_names: tuple[str, ...] = field(default=())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return (self.in_channels, self.image_size, self.image_size)


@dataclass(frozen=True)
class DatasetBundle:
    """The deterministic splits of one dataset.

    Attributes:
        info: shape, classes and normalisation.
        train: the protected model's training split.
        val: validation split (early stopping, checkpoint selection).
        attacker: a split disjoint from train and val, reserved for attackers (fine-tuning data, query pools).
        test: held-out test split (the official one where the dataset has it).
    """

    info: DatasetInfo
    train: TensorData
    val: TensorData
    attacker: TensorData
    test: TensorData

    def split(self, name: str) -> TensorData:
        """Return a split by name ('train', 'val', 'attacker', 'test')."""
        if name not in ("train", "val", "attacker", "test"):
            raise ConfigError(f"unknown split {name!r}; expected one of train, val, attacker, test")
        return getattr(self, name)
