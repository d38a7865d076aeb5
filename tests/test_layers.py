"""The import-linter contracts in pyproject.toml hold: the layers cli > bench | demo > serve > attacks > methods > core,
with the method packages independent of each other. Runs ``lint-imports`` so the README's test command enforces it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str | None:
    beside = Path(sys.executable).with_name("lint-imports")
    return str(beside) if beside.exists() else shutil.which("lint-imports")


def test_the_layer_contract_names_every_layer() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["id"] == "layers")
    assert layers["type"] == "layers" and layers["exhaustive"] is True
    assert layers["layers"][1] == "cli" and "serve" in layers["layers"] and "lock | auth | defense | (watermark)" in layers["layers"]


def test_imports_follow_the_layers() -> None:
    tool = _lint_imports()
    if tool is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]'); the layer contract was not checked")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([tool, "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " 0 broken" in run.stdout, run.stdout[-4000:]
