"""Query pools: the unlabelled images an extraction attacker draws its queries from.

* ``attacker``: the victim dataset's ``attacker`` split, disjoint from the victim's train and val splits
  (in-distribution queries, e.g. 20,000 MNIST images).
* ``surrogate``: another dataset of the same image shape (MNIST <-> Fashion-MNIST here): all of its
  official training images (train + val + attacker splits).

The labels of a pool are never given to the attacker; only images.

Example:
    >>> pool = query_pool("digits", "attacker")
    >>> pool.name, tuple(pool.x.shape[1:]), len(pool) > 100
    ('digits/attacker', (1, 8, 8), True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from modelshield.data import load_dataset
from modelshield.errors import ConfigError

__all__ = ["POOL_KINDS", "SURROGATES", "QueryPool", "query_pool"]

POOL_KINDS = ("attacker", "surrogate")
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


def query_pool(victim_dataset: str, kind: str, root: str | os.PathLike[str] | None = None,
               surrogate: str | None = None) -> QueryPool:
    """The ``attacker`` split of the victim's dataset, or a surrogate dataset's training images.

    Args:
        victim_dataset: the dataset the victim was trained on.
        kind: ``attacker`` (alias ``in-distribution``) or ``surrogate``.
        root: data root.
        surrogate: surrogate dataset name (default: MNIST <-> Fashion-MNIST).

    Raises:
        ConfigError: unknown kind, no default surrogate for this dataset, or a surrogate of another shape.
    """
    kind = {"in-distribution": "attacker", "in_distribution": "attacker", "own": "attacker"}.get(kind, kind)
    if kind not in POOL_KINDS:
        raise ConfigError(f"query pool must be one of {', '.join(POOL_KINDS)}, got {kind!r}")
    bundle = load_dataset(victim_dataset, root)
    if kind == "attacker":
        return QueryPool(bundle.attacker.x, f"{bundle.info.name}/attacker")
    other = surrogate or SURROGATES.get(bundle.info.name)
    if other is None:
        raise ConfigError(f"no default surrogate dataset for {bundle.info.name!r}: name one (e.g. --surrogate mnist)")
    sur = load_dataset(other, root)
    if sur.info.input_shape != bundle.info.input_shape:
        raise ConfigError(f"surrogate {other!r} has {sur.info.input_shape} images, the victim takes {bundle.info.input_shape}")
    x = torch.cat([sur.train.x, sur.val.x, sur.attacker.x])
    return QueryPool(x, f"{sur.info.name}/train")
