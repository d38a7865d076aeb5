"""The auth suite's cached cells follow the embedding config and the victim (the harness's cache keys).

The expensive embedding is replaced by a fake that saves a tiny zoo model and a key bound to it, so the test
checks the suite's bookkeeping: which cell is reused, which files it loads.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from modelshield.auth import AuthConfig, AuthKey
from modelshield.bench import auth_suite
from modelshield.bench.harness import BenchContext
from modelshield.models import CheckpointMeta, build_model, save_checkpoint


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    state = SimpleNamespace(victim="v1", embeds=[], ctx=BenchContext("auth", root=tmp_path, progress=False))
    info = state.ctx.dataset("digits").info

    def embed_cell(ctx: BenchContext, dataset: str, config: AuthConfig, model_path: Path, key_path: Path) -> dict[str, Any]:
        state.embeds.append(config)
        torch.manual_seed(config.tail_epochs or 0)  # another config, other weights
        model = build_model("lenet5", in_channels=info.in_channels, image_size=info.image_size,
                            num_classes=info.num_classes, normalization=info.normalization)
        save_checkpoint(model_path, model, CheckpointMeta.for_model(
            "lenet5", in_channels=info.in_channels, image_size=info.image_size, num_classes=info.num_classes,
            dataset="digits", normalization=info.normalization))
        key = AuthKey.random((info.in_channels, info.image_size, info.image_size), info.normalization, "body.pool1",
                             generator=torch.Generator().manual_seed(config.tail_epochs or 0))
        key.bound_to(model).save(key_path, overwrite=True)
        return {"config": config.to_dict()}

    monkeypatch.setattr(auth_suite, "_embed_cell", embed_cell)
    monkeypatch.setattr(auth_suite, "victim", lambda ctx, dataset: SimpleNamespace(fingerprint=state.victim))
    return state


def _protect(fake: SimpleNamespace, config: AuthConfig) -> tuple[AuthKey, dict[str, str]]:
    _, _, key = auth_suite._protected(fake.ctx, "mnist", config)
    return key, auth_suite._upstream(fake.ctx, "mnist", key)


def test_the_embed_cell_follows_the_config_and_keeps_each_configs_files(fake: SimpleNamespace) -> None:
    a, b = AuthConfig(tail_epochs=10), AuthConfig(tail_epochs=8)
    key_a, up_a = _protect(fake, a)
    assert _protect(fake, a)[1] == up_a and fake.embeds == [a], "same config: reused"
    key_b, up_b = _protect(fake, b)
    assert fake.embeds == [a, b], "another config: embedded again"
    assert up_a["protected"] != up_b["protected"] and up_a["key"] != up_b["key"]
    assert _protect(fake, a)[1] == up_a and fake.embeds == [a, b], "back to the first config: its own files"
    assert len(list(fake.ctx.cache_dir.glob("mnist-*-protected.safetensors"))) == 2
    eval_config = {"auth": a, "random_keys": 10}
    assert fake.ctx.cell_key("mnist/eval", eval_config, up_a) != fake.ctx.cell_key("mnist/eval", eval_config, up_b), \
        "cells computed from the protected model follow it"


def test_a_retrained_victim_or_lost_files_embed_again(fake: SimpleNamespace) -> None:
    config = AuthConfig()
    _protect(fake, config)
    fake.victim = "v2"
    _protect(fake, config)
    assert len(fake.embeds) == 2, "another victim: embedded again"
    for path in fake.ctx.cache_dir.glob("*.authkey"):
        path.unlink()
    _protect(fake, config)
    assert len(fake.embeds) == 3, "the cell survived but its key file did not"
    _protect(fake, config)
    assert len(fake.embeds) == 3


def test_the_bench_measures_the_library_defaults() -> None:
    ctx = BenchContext("auth", progress=False, seed=3)
    for name in ("lenet5", "vgg", "resnet20"):
        model = build_model(name, in_channels=1, image_size=8, num_classes=2)
        # AuthConfig() as a user gets it, as embed() fills it in for the model, with the run's seed only
        assert auth_suite.config_for(ctx, model) == AuthConfig(seed=3).for_model(model)
    quick = auth_suite.config_for(BenchContext("auth", progress=False, quick=True), auth_suite.ProbeCNN())
    assert quick.train_images == auth_suite.QUICK_TRAIN_IMAGES and quick.tail_epochs == 8


def test_the_probe_cnn_is_outside_the_zoo_so_auto_chooses_its_gate() -> None:
    from modelshield.auth import default_gate, gate_candidates

    model = auth_suite.ProbeCNN()
    assert default_gate(model) == "auto"
    assert gate_candidates(model, torch.rand(2, 1, 28, 28)) == ("block1", "block2", "block3")


def test_victim_selection_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelshield.errors import ConfigError

    monkeypatch.delenv(auth_suite.THIEF_ENV, raising=False)
    assert auth_suite._selected(auth_suite.THIEF_ENV) == auth_suite.DATASETS  # unset: every victim
    monkeypatch.setenv(auth_suite.THIEF_ENV, "mnist, fashion-mnist")
    assert auth_suite._selected(auth_suite.THIEF_ENV) == ("mnist", "fashion-mnist")
    monkeypatch.setenv(auth_suite.THIEF_ENV, "none")
    assert auth_suite._selected(auth_suite.THIEF_ENV) == ()
    monkeypatch.setenv(auth_suite.DATASETS_ENV, "mnist,resnet")
    with pytest.raises(ConfigError, match="resnet; choose from"):
        auth_suite._selected()
    monkeypatch.setenv(auth_suite.DATASETS_ENV, "none")
    with pytest.raises(ConfigError, match="no victim"):
        auth_suite.run(BenchContext("auth", progress=False))


def _eval(legit: float, independent: list[float]) -> dict[str, Any]:
    return {"clean": 0.99, "legit": legit, "unauthorized": 0.05, "random_keys": [0.1, 0.1], "random_mean": 0.1,
            "random_max": 0.1, "independent_keys": independent, "independent_max": max(independent),
            "independent_mean": sum(independent) / len(independent)}


def test_every_embedding_seed_is_held_to_the_key_rows_and_tabled(fake: SimpleNamespace) -> None:
    seeds = {"1": _eval(0.985, [0.05, 0.08]), "2": _eval(0.985, [0.05, 0.55])}  # seed 2: one key gets in
    criteria = [c for seed, ev in seeds.items() for c in auth_suite._key_criteria(f"mnist (embedding seed {seed})", ev)]
    failing = [c.name for c in criteria if not c.met]
    assert failing == ["mnist (embedding seed 2): worst of 2 independently generated keys (each must pass)"]
    table = "\n".join(auth_suite._seed_markdown({"embed_seed": 0, "eval": _eval(0.985, [0.02, 0.03]), "seeds": seeds}))
    assert "| 0 (above) |" in table and "55.00% / 30.00%" in table


def test_the_seed_study_embeds_each_extra_seed_in_its_own_cells(fake: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_suite, "_eval_cell", lambda ctx, dataset, model, key, config: _eval(0.98, [0.01 * config.seed]))
    config = AuthConfig(seed=10, tail_epochs=3)
    study = auth_suite._seed_study(fake.ctx, "mnist", config)
    assert sorted(study) == [str(10 + o) for o in auth_suite.EXTRA_EMBED_SEEDS]
    assert [c.seed for c in fake.embeds] == [10 + o for o in auth_suite.EXTRA_EMBED_SEEDS]
    assert study["11"]["independent_max"] == pytest.approx(0.11)
    auth_suite._seed_study(fake.ctx, "mnist", config)  # cached: no embedding again
    assert len(fake.embeds) == len(auth_suite.EXTRA_EMBED_SEEDS)
