"""The benchmark harness: cell cache keys, acceptance criteria, provenance (tiny fake suites, a tmp root)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import modelshield
from modelshield.bench.harness import (
    BenchContext,
    Criterion,
    SuiteReport,
    criteria_table,
    git_provenance,
    machine_info,
    run_suite,
)
from modelshield.bench.train_suite import QUICK_TRAIN_SIZE, VICTIMS, victim_dataset
from modelshield.errors import ConfigError
from modelshield.models.checkpoint import state_dict_fingerprint
from modelshield.training import TrainConfig


@dataclass(frozen=True)
class _Settings:
    lr: float = 0.1
    epochs: int = 2


class _Suite:
    """A fake suite: one cell whose config and upstream the test sets; records how often the cell ran."""

    calls = 0
    settings: Any = _Settings()
    upstream: dict[str, str] = {"victim": "aaaa"}
    criteria: list[Criterion] = []

    @classmethod
    def run(cls, ctx: BenchContext) -> SuiteReport:
        def work() -> dict[str, Any]:
            cls.calls += 1
            return {"value": 42, "call": cls.calls}

        value = ctx.cell("answer", work, config={"settings": cls.settings, "grid": (1, 2)}, upstream=cls.upstream)
        return SuiteReport(results={"answer": value}, markdown="| a |\n|---|\n| 1 |", criteria=cls.criteria)


@pytest.fixture()
def suite(monkeypatch: pytest.MonkeyPatch) -> type[_Suite]:
    monkeypatch.setattr(_Suite, "calls", 0)
    monkeypatch.setattr(_Suite, "settings", _Settings())
    monkeypatch.setattr(_Suite, "upstream", {"victim": "aaaa"})
    monkeypatch.setattr(_Suite, "criteria", [])
    return _Suite


def _run(root: Path, suite: type[_Suite], **kwargs: Any) -> tuple[dict[str, Path], dict[str, Any]]:
    paths = run_suite(suite, BenchContext("toy", root=root, progress=False, **kwargs), ["modelshield", "bench", "toy"])
    return paths, json.loads(paths["json"].read_text())


def test_cells_are_cached_and_results_recorded(tmp_path: Path, suite: type[_Suite]) -> None:
    paths, first = _run(tmp_path, suite)
    assert (first["cells_computed"], first["cells_reused"]) == (1, 0) and first["cells"]["computed"] == ["answer"]
    paths, doc = _run(tmp_path, suite)
    assert suite.calls == 1, "the second run resumes from the cache"
    assert doc["results"] == {"answer": {"value": 42, "call": 1}}
    for field in ("command", "seed", "versions", "machine", "git", "torch_threads", "wall_seconds", "started", "criteria"):
        assert field in doc
    assert "modelshield bench toy" in paths["md"].read_text()
    assert (doc["cells_computed"], doc["cells_reused"]) == (0, 1) and doc["cells"]["reused"] == ["answer"]
    assert "0 cells computed in this run, 1 reused" in paths["md"].read_text()
    _, fresh = _run(tmp_path, suite, fresh=True)
    assert suite.calls == 2, "--fresh recomputes"
    assert (fresh["cells_computed"], fresh["cells_reused"]) == (1, 0) and "reused" not in paths["md"].read_text()


def test_the_cache_file_records_its_key_inputs(tmp_path: Path, suite: type[_Suite]) -> None:
    _run(tmp_path, suite, seed=3)
    [cached] = (tmp_path / "cache" / "toy").glob("answer.*.json")
    doc = json.loads(cached.read_text())
    inputs = doc["inputs"]
    assert inputs["config"] == {"settings": {"lr": 0.1, "epochs": 2}, "grid": [1, 2]}
    assert inputs["upstream"] == {"victim": "aaaa"}
    assert (inputs["suite"], inputs["cell"], inputs["seed"], inputs["quick"]) == ("toy", "answer", 3, False)
    assert inputs["modelshield"] == modelshield.__version__
    ctx = BenchContext("toy", root=tmp_path, progress=False, seed=3)
    assert doc["key"] == ctx.cell_key("answer", {"settings": _Settings(), "grid": (1, 2)}, {"victim": "aaaa"})
    assert cached.name == f"answer.{doc['key'][:16]}.json"


def test_a_changed_setting_recomputes_and_the_same_one_reuses(tmp_path: Path, suite: type[_Suite]) -> None:
    _run(tmp_path, suite)
    suite.settings = _Settings(lr=0.2)
    _, doc = _run(tmp_path, suite)
    assert suite.calls == 2 and doc["cells_computed"] == 1, "another learning rate is another cell"
    suite.settings = _Settings(lr=0.2)
    _, doc = _run(tmp_path, suite)
    assert suite.calls == 2 and doc["cells_reused"] == 1
    suite.settings = _Settings()
    _, doc = _run(tmp_path, suite)
    assert suite.calls == 2 and doc["results"]["answer"]["call"] == 1, "the first setting's cell is still there"


def test_an_upstream_fingerprint_change_recomputes(tmp_path: Path, suite: type[_Suite]) -> None:
    _run(tmp_path, suite)
    suite.upstream = {"victim": "bbbb"}
    _run(tmp_path, suite)
    assert suite.calls == 2, "a retrained victim is another upstream"
    suite.upstream = {"victim": "bbbb", "queen": "cccc"}
    _run(tmp_path, suite)
    assert suite.calls == 3


def test_a_package_version_change_recomputes(tmp_path: Path, suite: type[_Suite], monkeypatch: pytest.MonkeyPatch) -> None:
    _run(tmp_path, suite)
    monkeypatch.setattr(modelshield, "__version__", modelshield.__version__ + ".post1")
    _run(tmp_path, suite)
    assert suite.calls == 2


def test_the_seed_and_quick_flag_are_part_of_the_key(tmp_path: Path, suite: type[_Suite]) -> None:
    _run(tmp_path, suite)
    _run(tmp_path, suite, seed=1)
    _run(tmp_path, suite, quick=True)
    assert suite.calls == 3


def test_reuse_if_rejects_a_cached_result(tmp_path: Path) -> None:
    ctx = BenchContext("toy", root=tmp_path, progress=False)
    marker = tmp_path / "made-by-the-cell"
    calls = []

    def work() -> str:
        calls.append(1)
        marker.write_text("x")
        return str(marker)

    for _ in range(2):
        ctx.cell("files", work, config={}, reuse_if=lambda path: Path(path).exists())
    assert len(calls) == 1
    marker.unlink()
    ctx.cell("files", work, config={}, reuse_if=lambda path: Path(path).exists())
    assert len(calls) == 2 and ctx.cells_computed == ["files", "files"] and ctx.cells_reused == ["files"]


def test_a_damaged_cache_file_is_recomputed(tmp_path: Path) -> None:
    ctx = BenchContext("toy", root=tmp_path, progress=False)
    assert ctx.cell("x", lambda: 1, config={"a": 1}) == 1
    [cached] = ctx.cache_dir.glob("x.*.json")
    cached.write_text("{truncated")
    assert ctx.cell("x", lambda: 2, config={"a": 1}) == 2


@pytest.mark.parametrize("config", [{"model": torch.nn.Linear(1, 1)}, {"path": Path("a")}, {1: "int key"}])
def test_configs_must_be_json_able(tmp_path: Path, config: dict[Any, Any]) -> None:
    ctx = BenchContext("toy", root=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="cell 'c' config"):
        ctx.cell("c", lambda: 1, config=config)
    with pytest.raises(ConfigError, match="expected a mapping"):
        ctx.cell("c", lambda: 1, config=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fingerprints"):
        ctx.cell("c", lambda: 1, config={}, upstream={"victim": 3})  # type: ignore[dict-item]


# -- acceptance criteria ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("comparison", "below", "equal", "above"), [
    ("<=", True, True, False), ("<", True, False, False), (">=", False, True, True),
    (">", False, False, True), ("==", False, True, False), ("!=", True, False, True),
])
def test_criteria_compare_including_the_boundary(comparison: str, below: bool, equal: bool, above: bool) -> None:
    assert [Criterion("c", v, 0.15, comparison).met for v in (0.14, 0.15, 0.16)] == [below, equal, above]
    assert Criterion("c", 1, 1, comparison).met is equal, "integers"


def test_float_noise_at_the_boundary_counts_as_equal() -> None:
    noisy = 100 * (0.9901 - 0.9801)  # 1.0000000000000009, "1.00 points"
    assert noisy != 1.0
    assert Criterion("drop", noisy, 1.0, "<=").met and not Criterion("drop", noisy, 1.0, "<").met
    assert not Criterion("drop", 1.001, 1.0, "<=").met


def test_unmeasured_text_and_boolean_criteria() -> None:
    assert not Criterion("c", None, 1.0, "<=").met and Criterion("c", None, 1.0, "<=").measured_text == "not measured"
    assert Criterion("best", "queen", "queen", "==").met and not Criterion("best", "top1", "queen", "==").met
    assert Criterion("ok", True, True, "==").met and not Criterion("ok", False, True, "==").met
    with pytest.raises(ConfigError, match="expected a number"):
        Criterion("c", "queen", "queen", "<=")
    with pytest.raises(ConfigError, match="expected a number"):
        Criterion("c", True, 0.5, ">=")
    with pytest.raises(ConfigError, match="comparison"):
        Criterion("c", 1.0, 1.0, "=<")
    with pytest.raises(ConfigError, match="unit"):
        Criterion("c", 1.0, 1.0, "<=", unit="percent")


def test_criteria_render_into_the_json_and_the_markdown(tmp_path: Path, suite: type[_Suite]) -> None:
    suite.criteria = [Criterion("unauthorized accuracy", 0.1234, 0.15, "<=", unit="%"),
                      Criterion("overhead", 1.6, 1.5, "<=", unit="x", detail="fresh client")]
    table = criteria_table(suite.criteria)
    assert "| unauthorized accuracy | 12.34% | <= 15.00% | met |" in table
    assert "| overhead | 1.60x (fresh client) | <= 1.50x | **missed** |" in table
    paths, doc = _run(tmp_path, suite)
    assert doc["criteria"] == [
        {"name": "unauthorized accuracy", "measured": 0.1234, "threshold": 0.15, "comparison": "<=", "unit": "%",
         "detail": "", "met": True},
        {"name": "overhead", "measured": 1.6, "threshold": 1.5, "comparison": "<=", "unit": "x",
         "detail": "fresh client", "met": False}]
    assert (doc["criteria_met"], doc["criteria_total"]) == (1, 2)
    md = paths["md"].read_text()
    assert "## Acceptance" in md and table in md


# -- provenance -------------------------------------------------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_git_provenance_follows_the_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never the checkout tmp_path may sit in
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "src" / "code.py").write_text("x = 1\n")
    (repo / "results").mkdir()
    (repo / "results" / "r.json").write_text("{}")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_provenance(repo / "src") == {"commit": head, "dirty": False, "changed": []}
    (repo / "results" / "r.json").write_text('{"new": 1}')
    assert git_provenance(repo / "src")["dirty"] is True
    assert git_provenance(repo / "src", exclude=[repo / "results"])["dirty"] is False, "results are excluded"
    (repo / "src" / "code.py").write_text("x = 2\n")
    changed = git_provenance(repo / "src", exclude=[repo / "results"])
    assert changed["dirty"] is True and changed["changed"] == [" M src/code.py"]
    _git(repo, "commit", "-q", "-am", "second")
    assert git_provenance(repo)["commit"] == _git(repo, "rev-parse", "HEAD") != head
    outside = tmp_path / "outside"
    outside.mkdir()
    assert git_provenance(outside) == {"commit": "unknown", "dirty": None, "changed": []}


def test_results_record_the_code_the_threads_and_the_machine(tmp_path: Path) -> None:
    base = torch.get_num_threads()

    class Threaded:
        @staticmethod
        def run(ctx: BenchContext) -> SuiteReport:
            def work() -> int:
                with ctx.torch_threads(base + 1):
                    return torch.get_num_threads()
            return SuiteReport(results={"n": ctx.cell("t", work, config={})}, markdown="")

    ctx = BenchContext("threads", root=tmp_path, progress=False)
    paths = run_suite(Threaded, ctx, ["x"])
    doc = json.loads(paths["json"].read_text())
    assert doc["results"]["n"] == base + 1 and torch.get_num_threads() == base
    assert doc["torch_threads"] == {"this_run": sorted({base, base + 1}), "reused_cells": []}
    [cached] = ctx.cache_dir.glob("t.*.json")
    assert json.loads(cached.read_text())["torch_threads"] == sorted({base, base + 1})
    again = json.loads(run_suite(Threaded, BenchContext("threads", root=tmp_path, progress=False), ["x"])["json"].read_text())
    assert again["torch_threads"] == {"this_run": [], "reused_cells": sorted({base, base + 1})}

    package = Path(modelshield.__file__).parent
    inside = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    expected = inside.stdout.strip() if inside.returncode == 0 else "unknown"
    assert doc["git"]["commit"] == expected
    machine = doc["machine"]
    assert machine == {**machine_info(), "load_average_1_5_15min": machine["load_average_1_5_15min"]}
    assert machine["cores"] == os.cpu_count()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    assert [g["name"] for g in machine["gpus"]] == gpus
    md = paths["md"].read_text()
    assert ("no GPU visible to torch" in md) == (not gpus)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        if models:
            assert machine["cpu"] == models[0] and machine["cpu"] in md


# -- trained models ---------------------------------------------------------------------------------------

def test_trained_models_are_shared_and_fingerprinted(tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, batch_size=64)
    first = BenchContext("a", root=tmp_path, progress=False).trained_model("lenet5", "digits", config)
    ctx = BenchContext("b", root=tmp_path, progress=False)
    checkpoint, record = ctx.trained_model("lenet5", "digits", config)
    assert record["train_images"] == 839 and ctx.models_reused == [first.name] and not ctx.models_trained
    assert first.record == record
    assert all((a == b).all() for a, b in zip(first.checkpoint.model.state_dict().values(), checkpoint.model.state_dict().values()))
    assert first.fingerprint == record["fingerprint"] == state_dict_fingerprint(checkpoint.model.state_dict())
    assert (tmp_path / "cache" / "models" / f"{first.name}.safetensors").exists()


def test_victim_names_are_stable() -> None:
    """The benchmark victims are cached under these names; a changed digest would retrain them all."""
    ctx = BenchContext("train", progress=False)
    names = {(name, quick): ctx.model_name(arch, victim_dataset(name), quick_config if quick else full,
                                           train_size=QUICK_TRAIN_SIZE if quick else None)
             for name, (arch, full, quick_config) in VICTIMS.items() for quick in (False, True)}
    assert names == {("mnist", False): "lenet5-mnist-s0-3879c076f5", ("mnist", True): "lenet5-mnist-s0-fb1bf33af7",
                     ("fashion-mnist", False): "vgg-fashion-mnist-s0-f8ecfad28b",
                     ("fashion-mnist", True): "vgg-fashion-mnist-s0-fb1bf33af7",
                     ("resnet20-fashion-mnist", False): "resnet20-fashion-mnist-s0-f8ecfad28b",
                     ("resnet20-fashion-mnist", True): "resnet20-fashion-mnist-s0-fb1bf33af7"}
