"""The auth suite forgets cached cells made under another embedding config."""

from __future__ import annotations

import json

from modelshield.auth import AuthConfig
from modelshield.bench.auth_suite import _drop_stale_cells
from modelshield.bench.harness import BenchContext


def _cells(ctx: BenchContext, config: AuthConfig) -> None:
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    for name in ("mnist_embed", "mnist_eval", "mnist_clean-timing", "fashion-mnist_eval"):
        (ctx.cache_dir / f"{name}.json").write_text(json.dumps({"result": {"config": config.to_dict()}}))
    (ctx.cache_dir / "mnist-protected.safetensors").write_bytes(b"x")


def test_cells_of_another_config_are_dropped_and_the_rest_kept(tmp_path) -> None:
    ctx = BenchContext("auth", root=tmp_path, progress=False)
    _cells(ctx, AuthConfig(tail_epochs=10))
    _drop_stale_cells(ctx, "mnist", AuthConfig(tail_epochs=10))
    assert len(list(ctx.cache_dir.iterdir())) == 5, "same config: everything is kept"
    _drop_stale_cells(ctx, "mnist", AuthConfig(tail_epochs=8))
    left = sorted(p.name for p in ctx.cache_dir.iterdir())
    assert left == ["fashion-mnist_eval.json", "mnist_clean-timing.json"]


def test_a_cache_without_an_embed_cell_is_left_alone(tmp_path) -> None:
    ctx = BenchContext("auth", root=tmp_path, progress=False)
    _drop_stale_cells(ctx, "mnist", AuthConfig())  # no cache folder yet
    ctx.cache_dir.mkdir(parents=True)
    (ctx.cache_dir / "mnist_embed.json").write_text("{not json")
    _drop_stale_cells(ctx, "mnist", AuthConfig())
    assert (ctx.cache_dir / "mnist_embed.json").exists()
