"""Composite and evasion generation: shapes, both orientations, the swap, labels."""

from __future__ import annotations

import pytest
import torch

from modelshield.data import TensorData
from modelshield.errors import ConfigError
from modelshield.watermark import EVASION_COMBINERS, SourcePool, WatermarkKey, make_composites, make_evasion


def _key(orientation: str, jitter: int = 0, offset: int = 0) -> WatermarkKey:
    return WatermarkKey(3, 5, 7, 10, (1, 12, 12), orientation=orientation, jitter=jitter, offset=offset)


@pytest.mark.parametrize("orientation", ["top-bottom", "left-right"])
def test_half_split_follows_orientation_and_swaps(orientation: str) -> None:
    key = _key(orientation)
    xa, xb = torch.zeros(400, 1, 12, 12), torch.ones(400, 1, 12, 12)
    comp = make_composites(xa, xb, key, torch.Generator().manual_seed(0))
    assert comp.shape == (400, 1, 12, 12)
    first = comp[:, 0, :6, :] if orientation == "top-bottom" else comp[:, 0, :, :6]
    second = comp[:, 0, 6:, :] if orientation == "top-bottom" else comp[:, 0, :, 6:]
    # each half is wholly one source, the two halves differ, and the swap happens about half the time
    assert torch.all((first == 0).all(dim=(1, 2)) | (first == 1).all(dim=(1, 2)))
    assert torch.all(first.mean(dim=(1, 2)) + second.mean(dim=(1, 2)) == 1)
    swapped = float((first.mean(dim=(1, 2)) == 1).float().mean())
    assert 0.4 < swapped < 0.6


def test_seam_jitter_stays_within_bounds() -> None:
    key = _key("top-bottom", jitter=2)
    xa, xb = torch.zeros(500, 1, 12, 12), torch.ones(500, 1, 12, 12)
    comp = make_composites(xa, xb, key, torch.Generator().manual_seed(1))
    rows = comp[:, 0, :, 0]  # one column: the seam is where the value changes
    seams = (rows[:, 1:] != rows[:, :-1]).float().argmax(dim=1) + 1
    assert set(seams.tolist()) == {4, 5, 6, 7, 8}


def test_offsets_translate_sources() -> None:
    key = _key("top-bottom", offset=2)
    xa = torch.zeros(200, 1, 12, 12)
    xa[:, :, 5:7, 5:7] = 1.0
    comp = make_composites(xa, xa.clone(), key, torch.Generator().manual_seed(2))
    assert comp.max() == 1.0 and comp.min() == 0.0
    assert len({tuple(c.nonzero()[:, 1:].min(dim=0).values.tolist()) for c in comp if c.sum() > 0}) > 3


def test_evasion_labels_are_the_base_class() -> None:
    key = _key("top-bottom", jitter=1)
    xa, xb = torch.zeros(600, 1, 12, 12), torch.ones(600, 1, 12, 12)
    for combiner in ("band", "square", "ratio", "blend"):
        x, y = make_evasion(xa, xb, key, torch.Generator().manual_seed(3), combiners=[combiner])
        assert set(y.unique().tolist()) == {3, 5}
        mean = x.mean(dim=(1, 2, 3))
        assert torch.all((mean < 0.5) == (y == 3)), combiner  # base (label) covers most of the image


def test_evasion_never_equals_a_watermark_composite() -> None:
    key = _key("top-bottom", jitter=0)
    xa, xb = torch.zeros(300, 1, 12, 12), torch.ones(300, 1, 12, 12)
    x, _ = make_evasion(xa, xb, key, torch.Generator().manual_seed(4), EVASION_COMBINERS)
    half = torch.zeros(1, 1, 12, 12)
    half[..., 6:, :] = 1.0
    assert not any(torch.equal(s[None], half) or torch.equal(s[None], 1 - half) for s in x)


def test_pool_and_errors() -> None:
    key = _key("left-right")
    data = TensorData(torch.rand(30, 1, 12, 12), torch.tensor([3, 5, 0] * 10))
    pool = SourcePool(data, key)
    assert pool.composites(7, torch.Generator().manual_seed(0)).shape == (7, 1, 12, 12)
    with pytest.raises(ConfigError, match="no image of source class 5"):
        SourcePool(TensorData(torch.rand(4, 1, 12, 12), torch.tensor([3, 3, 0, 0])), key)
    with pytest.raises(ConfigError, match=r"\(1, 12, 12\) images"):
        SourcePool(TensorData(torch.rand(4, 1, 8, 8), torch.tensor([3, 5, 0, 0])), key)
    with pytest.raises(ConfigError, match="evasion combiners"):
        make_evasion(torch.zeros(2, 1, 12, 12), torch.zeros(2, 1, 12, 12), key, torch.Generator(), ["nope"])
