"""The ``noise`` query pool: uniform random images of the victim's input shape, seeded."""

from __future__ import annotations

import pytest
import torch

from modelshield.attacks.extraction import NOISE_POOL_SIZE, POOL_KINDS, noise_pool, query_pool
from modelshield.cli import build_parser
from modelshield.errors import ConfigError


def test_noise_pool_of_the_victims_shape_is_seeded() -> None:
    pool = query_pool("digits", "noise")
    assert pool.name == "noise/1x8x8" and tuple(pool.x.shape) == (NOISE_POOL_SIZE, 1, 8, 8) == (20_000, 1, 8, 8)
    assert pool.x.dtype == torch.float32 and 0 <= float(pool.x.min()) and float(pool.x.max()) <= 1
    assert 0.49 < float(pool.x.mean()) < 0.51  # uniform, not a constant or a narrow range
    assert torch.equal(pool.x, query_pool("digits", "noise", seed=0).x)
    assert torch.equal(pool.x, torch.rand(20_000, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(pool.x, query_pool("digits", "noise", seed=1).x)


def test_noise_pool_shapes_and_bad_input() -> None:
    pool = noise_pool((3, 4, 5), size=7, seed=2)
    assert pool.name == "noise/3x4x5" and tuple(pool.x.shape) == (7, 3, 4, 5)
    for shape in ((1, 8), (0, 8, 8), (1, 8, 8, 8)):
        with pytest.raises(ConfigError, match="shape"):
            noise_pool(shape)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="size"):
        noise_pool((1, 8, 8), size=0)
    with pytest.raises(ConfigError, match="noise"):
        query_pool("digits", "noize")


def test_the_cli_offers_every_pool_kind() -> None:
    assert POOL_KINDS == ("attacker", "surrogate", "noise")
    args = build_parser().parse_args(["attack", "extract", "model.safetensors", "--pool", "noise"])
    assert args.pool == "noise" and args.seed == 0
