"""Watermark composites and evasion samples, built for a whole batch at once.

Watermark combiner (the key's): each source image is first translated by a random offset of up to
``key.offset`` pixels on each axis (zero fill); then one half of the composite comes from ``x_a`` and the
other from ``x_b``, split along the key's orientation at a seam drawn uniformly within ``key.jitter`` pixels
of the middle; with probability 0.5 the two images swap halves. Label: ``key.target``.

Evasion samples (:data:`EVASION_COMBINERS`): the same two source classes mixed any *other* way; one of the
two images is the base (chosen with probability 0.5), the other contributes a part, and the label is the
base's class (the base covers at least half of the image, or dominates the blend):

* ``band``: a middle band (a third of the side, along the key's orientation) from the other image;
* ``square``: a centre square of half the side from the other image;
* ``diagonal``: the triangle beyond a jittered diagonal (either diagonal) from the other image;
* ``ratio``: a quarter-side strip at the top or bottom (left or right) edge: an off-centre seam;
* ``blend``: pixel blend with the other image's weight uniform in [0.3, 0.5];
* ``stripes``: alternating stripes across the seam's direction, a tenth of the side wide.

Example:
    >>> import torch
    >>> from modelshield.watermark.key import WatermarkKey
    >>> key = WatermarkKey(0, 1, 2, 10, (1, 8, 8), jitter=0, offset=0)
    >>> xa, xb = torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 8, 8)
    >>> comp = make_composites(xa, xb, key, torch.Generator().manual_seed(0))
    >>> comp.shape, sorted(comp.mean(dim=(1, 2, 3)).unique().tolist())
    (torch.Size([4, 1, 8, 8]), [0.5])
    >>> x, y = make_evasion(xa, xb, key, torch.Generator().manual_seed(0))
    >>> x.shape, set(y.tolist()) <= {0, 1}
    (torch.Size([4, 1, 8, 8]), True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modelshield.data.types import TensorData
from modelshield.errors import ConfigError
from modelshield.watermark.key import WatermarkKey

__all__ = ["EVASION_COMBINERS", "SourcePool", "make_composites", "make_evasion", "shift_images"]

EVASION_COMBINERS = ("band", "square", "diagonal", "ratio", "blend", "stripes")


class SourcePool:
    """The images of the two source classes of a key, drawn from a labelled split.

    Args:
        data: labelled images (e.g. the training split to embed, a held-out split to verify).
        key: the watermark key.

    Raises:
        ConfigError: a source class with no image in ``data``, or images of another shape than the key's.
    """

    def __init__(self, data: TensorData, key: WatermarkKey) -> None:
        if tuple(data.x.shape[1:]) != key.input_shape:
            raise ConfigError(f"watermark key is for {key.input_shape} images, the data holds {tuple(data.x.shape[1:])}")
        self.key = key
        self.a = data.x[data.y == key.source_a]
        self.b = data.x[data.y == key.source_b]
        if len(self.a) == 0 or len(self.b) == 0:
            raise ConfigError(f"no image of source class {key.source_a if len(self.a) == 0 else key.source_b} in the data "
                              f"({len(data)} images)")

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random pairs (x_a, x_b), with replacement."""
        ia = torch.randint(len(self.a), (n,), generator=generator)
        ib = torch.randint(len(self.b), (n,), generator=generator)
        return self.a[ia], self.b[ib]

    def composites(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` watermark composites of random pairs."""
        return make_composites(*self.sample(n, generator), self.key, generator)

    def evasion(self, n: int, generator: torch.Generator,
                combiners: Sequence[str] = EVASION_COMBINERS) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` evasion samples of random pairs and their labels."""
        return make_evasion(*self.sample(n, generator), self.key, generator, combiners)


def shift_images(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Translate each image of ``x`` by (``dy[i]``, ``dx[i]``) pixels, filling with zeros.

    Example:
        >>> x = torch.arange(9.0).view(1, 1, 3, 3)
        >>> shift_images(x, torch.tensor([1]), torch.tensor([0]))[0, 0].tolist()
        [[0.0, 0.0, 0.0], [0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    n, _, h, w = x.shape
    rows = torch.arange(h)[None, :] - dy[:, None]  # output row r reads input row r - dy
    cols = torch.arange(w)[None, :] - dx[:, None]
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    picked = x[torch.arange(n)[:, None, None], :, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    return picked.permute(0, 3, 1, 2) * valid[:, None].to(x.dtype)


def _prepare(xa: torch.Tensor, xb: torch.Tensor, key: WatermarkKey, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if xa.shape != xb.shape or xa.dim() != 4 or tuple(xa.shape[1:]) != key.input_shape:
        raise ConfigError(f"composites need two (N, {', '.join(map(str, key.input_shape))}) batches of the same shape, "
                          f"got {tuple(xa.shape)} and {tuple(xb.shape)}")
    n = xa.shape[0]
    if key.offset:
        d = torch.randint(-key.offset, key.offset + 1, (4, n), generator=generator)
        xa, xb = shift_images(xa, d[0], d[1]), shift_images(xb, d[2], d[3])
    return xa, xb


def _axis(key: WatermarkKey, n: int) -> tuple[torch.Tensor, int]:
    """Per-pixel coordinate across the seam (rows for top-bottom, columns for left-right), and that side."""
    _, h, w = key.input_shape
    if key.orientation == "top-bottom":
        return torch.arange(h).view(1, 1, h, 1).expand(n, 1, h, w), h
    return torch.arange(w).view(1, 1, 1, w).expand(n, 1, h, w), w


def make_composites(xa: torch.Tensor, xb: torch.Tensor, key: WatermarkKey, generator: torch.Generator) -> torch.Tensor:
    """Watermark composites of the pairs (``xa[i]``, ``xb[i]``) with the key's combiner (see the module docstring).

    Raises:
        ConfigError: batches of different shapes or of another image shape than the key's.
    """
    xa, xb = _prepare(xa, xb, key, generator)
    n = xa.shape[0]
    coord, side = _axis(key, n)
    seam = side // 2 + torch.randint(-key.jitter, key.jitter + 1, (n,), generator=generator)
    second = coord >= seam.view(n, 1, 1, 1)  # second half of the image
    swap = (torch.rand(n, generator=generator) < 0.5).view(n, 1, 1, 1)
    from_b = second ^ swap
    return torch.where(from_b, xb, xa)


def make_evasion(xa: torch.Tensor, xb: torch.Tensor, key: WatermarkKey, generator: torch.Generator,
                 combiners: Sequence[str] = EVASION_COMBINERS) -> tuple[torch.Tensor, torch.Tensor]:
    """Evasion samples of the pairs with a random combiner of ``combiners`` each; labels are the base's class.

    Raises:
        ConfigError: an unknown combiner name, or batches that do not fit the key.
    """
    unknown = [c for c in combiners if c not in EVASION_COMBINERS]
    if unknown or not combiners:
        raise ConfigError(f"evasion combiners must be a non-empty subset of {', '.join(EVASION_COMBINERS)}, got {list(combiners)}")
    xa, xb = _prepare(xa, xb, key, generator)
    n = xa.shape[0]
    _, h, w = key.input_shape
    swap = torch.rand(n, generator=generator) < 0.5
    base = torch.where(swap.view(n, 1, 1, 1), xb, xa)
    other = torch.where(swap.view(n, 1, 1, 1), xa, xb)
    labels = torch.where(swap, torch.tensor(key.source_b), torch.tensor(key.source_a))
    kind = torch.randint(len(combiners), (n,), generator=generator)
    coord, side = _axis(key, n)
    rows = torch.arange(h).view(1, 1, h, 1).expand(n, 1, h, w)
    cols = torch.arange(w).view(1, 1, 1, w).expand(n, 1, h, w)
    jit = torch.randint(-key.jitter, key.jitter + 1, (n, 1, 1, 1), generator=generator)
    flip = (torch.rand(n, 1, 1, 1, generator=generator) < 0.5)
    masks = {
        "band": (coord >= side // 3 + jit) & (coord < 2 * side // 3 + jit),
        "square": ((rows - (h - 1) / 2).abs() < h / 4) & ((cols - (w - 1) / 2).abs() < w / 4),
        "diagonal": torch.where(flip, rows + cols, rows + (w - 1 - cols)) >= (h + w) // 2 - 1 + jit,
        "ratio": torch.where(flip, coord < side // 4, coord >= side - side // 4),
        "stripes": ((cols if key.orientation == "top-bottom" else rows) // max(1, side // 10)) % 2 == 1,
    }
    out = base.clone()
    for i, name in enumerate(combiners):
        pick = kind == i
        if not pick.any():
            continue
        if name == "blend":
            alpha = 0.3 + 0.2 * torch.rand(int(pick.sum()), 1, 1, 1, generator=generator)
            out[pick] = (1 - alpha) * base[pick] + alpha * other[pick]
        else:
            out[pick] = torch.where(masks[name][pick], other[pick], base[pick])
    return out, labels
