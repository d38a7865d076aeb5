"""The benchmark harness: resumable suites that write JSON + Markdown + PNG under ``bench/results/``.

A suite is a module with ``run(ctx: BenchContext) -> SuiteReport``. The harness records the command, seed,
library versions, machine and wall time beside the suite's own results. Work is cached under
``bench/cache/`` so an interrupted run continues where it stopped:

* ``ctx.cell(name, fn)`` runs ``fn()`` once and keeps its JSON-able result;
* ``ctx.trained_model(...)`` trains a zoo model once and shares it between suites (``bench/cache/models``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from modelshield._io import atomic_write_bytes
from modelshield.data import DatasetBundle, load_dataset
from modelshield.errors import ConfigError, FormatError
from modelshield.models import Checkpoint, CheckpointMeta, build_model, load_checkpoint, save_checkpoint
from modelshield.models.checkpoint import library_versions
from modelshield.training import TrainConfig, evaluate, seed_everything, train_model

__all__ = ["BenchContext", "SuiteReport", "machine_info", "markdown_table"]


@dataclass
class SuiteReport:
    """What a suite returns: JSON-able results, a Markdown body, and matplotlib figures to save as PNG."""

    results: dict[str, Any]
    markdown: str
    figures: dict[str, Any] = field(default_factory=dict)


def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory and OS of this machine."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "memory_gib": mem_gib,
            "platform": platform.platform(), "gpu": None, "load_average_1_5_15min": load}


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub Markdown table; floats printed with 4 significant digits.

    Example:
        >>> print(markdown_table(["a", "b"], [[1, 0.5]]))
        | a | b |
        |---|---|
        | 1 | 0.5 |
    """
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class BenchContext:
    """Settings of a suite run and its caches.

    Attributes:
        suite: suite name.
        quick: reduced grid.
        seed: base seed.
        data_root: dataset root (``--data-root`` or ``MODELSHIELD_DATA``).
        cache_dir: this suite's cell cache (``bench/cache/<suite>[-quick]``).
        models_dir: trained models shared by all suites (``bench/cache/models``).
        progress: show progress bars.
        console: where to report progress (stderr).
    """

    def __init__(self, suite: str, *, quick: bool = False, seed: int = 0, data_root: str | os.PathLike[str] | None = None,
                 root: str | os.PathLike[str] = "bench", progress: bool = True, fresh: bool = False) -> None:
        self.suite, self.quick, self.seed, self.progress = suite, quick, seed, progress
        self.data_root = data_root
        self.root = Path(root)
        self.cache_dir = self.root / "cache" / (suite + ("-quick" if quick else ""))
        self.models_dir = self.root / "cache" / "models"
        self.results_dir = self.root / "results"
        self.console = Console(stderr=True, quiet=not progress)
        self.cells_computed = self.cells_reused = 0
        if fresh and self.cache_dir.exists():
            for item in self.cache_dir.glob("*.json"):
                item.unlink()

    def dataset(self, name: str) -> DatasetBundle:
        """Load a dataset from the data root (cached in memory)."""
        return load_dataset(name, self.data_root)

    def cell(self, name: str, fn: Callable[[], Any]) -> Any:
        """Return the cached result of cell ``name``, computing and storing it first if absent."""
        path = self.cache_dir / f"{_safe(name)}.json"
        if path.exists():
            with contextlib.suppress(json.JSONDecodeError):
                result = json.loads(path.read_text())["result"]
                self.cells_reused += 1
                return result
        self.console.log(f"[bold]{self.suite}[/]: {name}")
        start = time.perf_counter()
        result = fn()
        self.cells_computed += 1
        doc = {"cell": name, "seconds": time.perf_counter() - start, "result": result}
        atomic_write_bytes(path, json.dumps(doc, indent=1).encode())
        return result

    def trained_model(self, architecture: str, dataset: str, config: TrainConfig, *, seed: int | None = None,
                      train_size: int | None = None) -> tuple[Checkpoint, dict[str, Any]]:
        """Train (once, shared across suites) a zoo model on a dataset's ``train`` split, selected on ``val``.

        Returns the checkpoint and its training record (epochs, wall seconds, val and test accuracy).
        """
        seed = self.seed if seed is None else seed
        digest = hashlib.sha256(json.dumps([asdict(config), train_size], sort_keys=True).encode()).hexdigest()[:10]
        name = f"{architecture}-{dataset}-s{seed}-{digest}"
        weights, record_path = self.models_dir / f"{name}.safetensors", self.models_dir / f"{name}.json"
        with _file_lock(self.models_dir / f".{name}.lock"):
            if weights.exists() and record_path.exists():
                try:
                    return load_checkpoint(weights), json.loads(record_path.read_text())
                except (FormatError, json.JSONDecodeError):
                    pass  # retrain below
            bundle = self.dataset(dataset)
            info = bundle.info
            seed_everything(seed)
            model = build_model(architecture, in_channels=info.in_channels, image_size=info.image_size,
                                num_classes=info.num_classes, normalization=info.normalization)
            train = bundle.train if train_size is None else bundle.train.subset(train_size, seed)
            self.console.log(f"training {architecture} on {dataset} ({len(train)} images, {config.epochs} epochs)")
            result = train_model(model, train, val=bundle.val, config=config, progress=self.progress,
                                 description=f"{architecture}/{dataset}")
            test = evaluate(model, bundle.test)
            meta = CheckpointMeta.for_model(architecture, in_channels=info.in_channels, image_size=info.image_size,
                                            num_classes=info.num_classes, dataset=dataset, normalization=info.normalization,
                                            accuracy=test.accuracy, seed=seed)
            save_checkpoint(weights, model, meta)
            record = {"architecture": architecture, "dataset": dataset, "seed": seed, "config": asdict(config),
                      "train_images": len(train), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                      "val_accuracy": result.val_accuracy, "test_accuracy": test.accuracy,
                      "train_seconds": result.wall_seconds, "history": result.history}
            atomic_write_bytes(record_path, json.dumps(record, indent=1).encode())
            record = json.loads(json.dumps(record))  # the form a later run loads (tuples such as milestones become lists)
            return load_checkpoint(weights), record

    def write(self, report: SuiteReport, *, started: float, command: list[str]) -> dict[str, Path]:
        """Write ``<suite>[-quick].json``, ``.md`` and one PNG per figure; returns the paths."""
        stem = self.suite + ("-quick" if self.quick else "")
        self.results_dir.mkdir(parents=True, exist_ok=True)
        wall = time.time() - started
        header = {
            "suite": self.suite, "quick": self.quick, "command": shlex.join(command), "seed": self.seed,
            "versions": library_versions(), "machine": machine_info(),
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": round(wall, 1), "cells_computed": self.cells_computed, "cells_reused": self.cells_reused,
        }
        paths: dict[str, Path] = {}
        for fig_name, figure in report.figures.items():
            png = self.results_dir / f"{stem}-{fig_name}.png"
            figure.savefig(png, dpi=110, bbox_inches="tight")
            paths[fig_name] = png
        doc = {**header, "figures": [p.name for p in paths.values()], "results": report.results}
        paths["json"] = atomic_write_bytes(self.results_dir / f"{stem}.json", (json.dumps(doc, indent=1) + "\n").encode())
        machine = header["machine"]
        md = [f"# Benchmark `{self.suite}`" + (" (quick)" if self.quick else ""), "",
              f"- command: `{header['command']}`", f"- seed: {self.seed}",
              f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, no GPU; "
              f"load average at the end {machine['load_average_1_5_15min']} (above {machine['cores']} means other jobs shared the CPU)",
              f"- versions: " + ", ".join(f"{k} {v}" for k, v in header["versions"].items()),
              f"- started {header['started']}, wall time {wall / 60:.1f} min" + _reuse_note(self), "", report.markdown.strip(), ""]
        md += [f"![{name}]({p.name})" for name, p in paths.items() if p.suffix == ".png"]
        paths["md"] = atomic_write_bytes(self.results_dir / f"{stem}.md", ("\n".join(md) + "\n").encode())
        return paths


def _reuse_note(ctx: BenchContext) -> str:
    """Say when a run reused cached cells, whose time is not in its wall time."""
    if not ctx.cells_reused:
        return ""
    def cells(n: int) -> str:
        return f"{n} cell{'' if n == 1 else 's'}"

    return (f" ({cells(ctx.cells_computed)} computed in this run, {ctx.cells_reused} reused from earlier runs in "
            f"`{ctx.cache_dir.as_posix()}`; their time is not included)")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_suite(module: Any, ctx: BenchContext, command: list[str] | None = None) -> dict[str, Path]:
    """Run a suite module and write its results."""
    started = time.time()
    report = module.run(ctx)
    if not isinstance(report, SuiteReport):
        raise ConfigError(f"suite {ctx.suite!r} returned {type(report).__name__}, expected SuiteReport")
    return ctx.write(report, started=started, command=command or sys.argv)
