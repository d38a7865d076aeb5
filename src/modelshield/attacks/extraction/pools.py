"""Query pools: the unlabelled images an extraction attacker draws its queries from.

* ``attacker``: the victim dataset's ``attacker`` split, disjoint from the victim's train and val splits
  (in-distribution queries, e.g. 20,000 MNIST images).
* ``surrogate``: another dataset of the same image shape (MNIST <-> Fashion-MNIST here): all of its
  official training images (train + val + attacker splits).
* ``noise``: :data:`NOISE_POOL_SIZE` images of uniform random pixels in [0, 1], of the victim's input shape,
  drawn from ``seed`` (the attacker with no data at all).

The labels of a pool are never given to the attacker; only images.

Example:
    >>> pool = query_pool("digits", "attacker")
    >>> pool.name, tuple(pool.x.shape[1:]), len(pool) > 100
    ('digits/attacker', (1, 8, 8), True)
    >>> noise = query_pool("digits", "noise")
    >>> noise.name, len(noise), bool(noise.x.min() >= 0 and noise.x.max() <= 1)
    ('noise/1x8x8', 20000, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from modelshield.data import load_dataset
from modelshield.errors import ConfigError

__all__ = ["NOISE_POOL_SIZE", "POOL_KINDS", "SURROGATES", "QueryPool", "noise_pool", "query_pool"]

POOL_KINDS = ("attacker", "surrogate", "noise")
NOISE_POOL_SIZE = 20_000
SURROGATES = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}


@dataclass(frozen=True)
class QueryPool:
    """Unlabelled candidate queries.

    Attributes:
        x: images (N, C, H, W) in [0, 1].
        name: where they come from (``dataset/split``).
    """

    x: torch.Tensor
    name: str

    def __post_init__(self) -> None:
        if self.x.dim() != 4 or len(self.x) == 0:
            raise ConfigError(f"a query pool needs a non-empty (N, C, H, W) image tensor, got {tuple(self.x.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])


def noise_pool(shape: tuple[int, int, int], *, size: int = NOISE_POOL_SIZE, seed: int = 0) -> QueryPool:
    """``size`` images of uniform random pixels in [0, 1] of shape ``(C, H, W)``, named ``noise/CxHxW``.

    Raises:
        ConfigError: a shape that is not three positive sizes, or ``size < 1``.
    """
    dims = tuple(shape)
    if len(dims) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise ConfigError(f"noise pool shape must be (C, H, W) with positive sizes, got {shape!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"noise pool size must be an integer >= 1, got {size!r}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(size, *dims, generator=gen)
    return QueryPool(x, "noise/" + "x".join(str(d) for d in dims))


def query_pool(victim_dataset: str, kind: str, root: str | os.PathLike[str] | None = None,
               surrogate: str | None = None, seed: int = 0) -> QueryPool:
    """The ``attacker`` split of the victim's dataset, a surrogate dataset's training images, or noise.

    Args:
        victim_dataset: the dataset the victim was trained on.
        kind: ``attacker`` (alias ``in-distribution``), ``surrogate`` or ``noise``.
        root: data root.
        surrogate: surrogate dataset name (default: MNIST <-> Fashion-MNIST).
        seed: the noise pool's seed (other kinds ignore it).

    Raises:
        ConfigError: unknown kind, no default surrogate for this dataset, or a surrogate of another shape.
    """
    kind = {"in-distribution": "attacker", "in_distribution": "attacker", "own": "attacker"}.get(kind, kind)
    if kind not in POOL_KINDS:
        raise ConfigError(f"query pool must be one of {', '.join(POOL_KINDS)}, got {kind!r}")
    bundle = load_dataset(victim_dataset, root)
    if kind == "attacker":
        return QueryPool(bundle.attacker.x, f"{bundle.info.name}/attacker")
    if kind == "noise":
        return noise_pool(bundle.info.input_shape, seed=seed)
    other = surrogate or SURROGATES.get(bundle.info.name)
    if other is None:
        raise ConfigError(f"no default surrogate dataset for {bundle.info.name!r}: name one (e.g. --surrogate mnist)")
    sur = load_dataset(other, root)
    if sur.info.input_shape != bundle.info.input_shape:
        raise ConfigError(f"surrogate {other!r} has {sur.info.input_shape} images, the victim takes {bundle.info.input_shape}")
    x = torch.cat([sur.train.x, sur.val.x, sur.attacker.x])
    return QueryPool(x, f"{sur.info.name}/train")
