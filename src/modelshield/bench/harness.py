"""The benchmark harness: resumable suites that write JSON + Markdown + PNG under ``bench/results/``.

A suite is a module with ``run(ctx: BenchContext) -> SuiteReport``. The harness owns what every suite
shares, so no suite writes it by hand:

* **cells**: ``ctx.cell(name, fn, config=..., upstream=...)`` runs ``fn()`` once and keeps its JSON-able result
  under ``bench/cache/<suite>[-quick]/``, so an interrupted run (or a later session) resumes. The cache key
  hashes the suite, the cell name, the run's seed and quick flag, the cell's full ``config``, the fingerprints
  of what it was computed from (``upstream``, e.g. the victim's weights) and the package version: a changed
  setting, a retrained victim or a new release never reuses a stale cell. The cache file records its key
  inputs.
* **trained models**: ``ctx.trained_model(...)`` trains a zoo model once and shares it between suites
  (``bench/cache/models``); its :attr:`TrainedModel.fingerprint` is the upstream key of the cells that use it.
* **acceptance criteria**: a suite returns :class:`Criterion` objects (name, measured value, threshold,
  comparison); the harness writes them into the JSON (``criteria``) and as a Markdown table, so each threshold
  is written once.
* **provenance**: the command, seed, library versions, the git commit of the code that ran (with a dirty
  flag), the torch thread counts in force during the suite's work (``ctx.torch_threads``), machine facts read
  from the machine (CPU, cores, memory, GPUs), wall time, and the cells computed vs reused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import operator
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch
from rich.console import Console

import modelshield
from modelshield._io import atomic_write_bytes
from modelshield.data import DatasetBundle, load_dataset
from modelshield.errors import ConfigError, FormatError
from modelshield.models import Checkpoint, CheckpointMeta, build_model, load_checkpoint, save_checkpoint
from modelshield.models.checkpoint import library_versions, state_dict_fingerprint
from modelshield.training import TrainConfig, evaluate, seed_everything, train_model
from modelshield.training import torch_threads as _torch_threads

__all__ = [
    "BenchContext",
    "Criterion",
    "SuiteReport",
    "TrainedModel",
    "criteria_table",
    "git_provenance",
    "machine_info",
    "markdown_table",
    "percent",
    "run_suite",
]

VICTIM_THREADS = 1  # torch threads of every trained_model run (see trained_model)
CACHE_FORMAT = 2  # bumped when the cell cache layout changes (part of every key)
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq, "!=": operator.ne}
_UNITS = ("", "%", "points", "x", "s")
_REL_TOL = 1e-9


@dataclass(frozen=True)
class Criterion:
    """An acceptance criterion, ``measured <comparison> threshold``, written once and rendered by the harness.

    Numbers within a relative 1e-9 of the threshold count as equal to it, so the float noise of a difference
    such as ``100 * (a - b)`` cannot turn a boundary case either way.

    Attributes:
        name: what is checked, in words.
        measured: the measured value; None when this run did not measure it (then the criterion is not met).
        threshold: the value the measurement is compared with.
        comparison: ``<=``, ``<``, ``>=``, ``>``, ``==`` or ``!=``; text and booleans allow only ``==`` / ``!=``.
        unit: how both numbers are shown: ``""`` (4 significant digits), ``"%"`` (a fraction, shown in percent),
            ``"points"`` (percentage points), ``"x"`` (a ratio) or ``"s"`` (seconds).
        detail: context shown beside the measured value (e.g. the two accuracies a drop is computed from).

    Raises:
        ConfigError: unknown comparison or unit, or an ordering comparison on text or booleans.

    Example:
        >>> c = Criterion("unauthorized accuracy", 0.15, 0.15, "<=", unit="%")
        >>> c.met, c.measured_text, c.threshold_text
        (True, '15.00%', '<= 15.00%')
        >>> Criterion("QUEEN is the best defense", "top1", "queen", "==").met
        False
    """

    name: str
    measured: float | int | bool | str | None
    threshold: float | int | bool | str
    comparison: str
    unit: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.comparison not in _COMPARISONS:
            raise ConfigError(f"criterion {self.name!r}: comparison {self.comparison!r}; expected one of {', '.join(_COMPARISONS)}")
        if self.unit not in _UNITS:
            raise ConfigError(f"criterion {self.name!r}: unit {self.unit!r}; expected one of {', '.join(map(repr, _UNITS))}")
        ordered = self.comparison not in ("==", "!=")
        for label, value in (("threshold", self.threshold), ("measured", self.measured)):
            if label == "measured" and value is None:
                continue
            if ordered and (isinstance(value, (bool, str)) or not isinstance(value, (int, float))):
                raise ConfigError(f"criterion {self.name!r}: {label} {value!r} cannot be compared with "
                                  f"{self.comparison!r}; expected a number")

    @property
    def met(self) -> bool:
        """Whether the measurement satisfies the criterion (False when nothing was measured)."""
        m, t = self.measured, self.threshold
        if m is None:
            return False
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (m, t))
        if numbers and math.isfinite(float(m)) and math.isfinite(float(t)):
            if math.isclose(float(m), float(t), rel_tol=_REL_TOL, abs_tol=_REL_TOL):
                m = t
        return bool(_COMPARISONS[self.comparison](m, t))

    @property
    def measured_text(self) -> str:
        """The measured value as shown in the Markdown table."""
        return "not measured" if self.measured is None else _format(self.measured, self.unit)

    @property
    def threshold_text(self) -> str:
        """The comparison and threshold as shown in the Markdown table."""
        return f"{self.comparison} {_format(self.threshold, self.unit)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: every field plus ``met``."""
        return {**asdict(self), "met": self.met}


def percent(value: float | None, digits: int = 2, *, suffix: str = "%") -> str:
    """A fraction as a percentage for the suites' tables; "-" for a missing figure.

    Example:
        >>> percent(0.98765), percent(0.5, 1, suffix=""), percent(None)
        ('98.77%', '50.0', '-')
    """
    return "-" if value is None else f"{100 * value:.{digits}f}{suffix}"


def _format(value: Any, unit: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (int, float)):
        return str(value)
    if unit == "%":
        return f"{100 * value:.2f}%"
    if unit == "points":
        return f"{value:.2f} points"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def criteria_table(criteria: Sequence[Criterion]) -> str:
    """The Markdown table of acceptance criteria: criterion, measured, required, verdict.

    Example:
        >>> print(criteria_table([Criterion("drop", 0.5, 1.0, "<=", unit="points", detail="99.0% vs 99.5%")]))
        | criterion | measured | required | verdict |
        |---|---|---|---|
        | drop | 0.50 points (99.0% vs 99.5%) | <= 1.00 points | met |
    """
    rows = [[c.name, c.measured_text + (f" ({c.detail})" if c.detail else ""), c.threshold_text,
             "met" if c.met else "**missed**"] for c in criteria]
    return markdown_table(["criterion", "measured", "required", "verdict"], rows)


@dataclass
class SuiteReport:
    """What a suite returns.

    Attributes:
        results: JSON-able results.
        markdown: the Markdown body (the harness adds the provenance header and the acceptance table).
        figures: matplotlib figures, saved as ``<suite>-<name>.png``.
        criteria: acceptance criteria, rendered by the harness into the JSON and the Markdown.
        criteria_note: a sentence shown above the acceptance table (e.g. that a quick run is for orientation).
    """

    results: dict[str, Any]
    markdown: str
    figures: dict[str, Any] = field(default_factory=dict)
    criteria: list[Criterion] = field(default_factory=list)
    criteria_note: str = ""


class TrainedModel(NamedTuple):
    """A benchmark model trained once and shared between suites; unpacks as ``checkpoint, record``.

    Attributes:
        checkpoint: the trained model and its metadata.
        record: the training record (epochs, wall seconds, val and test accuracy, ...), plus ``fingerprint``
            (of the weights as loaded) and ``cache_name``.
    """

    checkpoint: Checkpoint
    record: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the weights (:func:`~modelshield.models.checkpoint.state_dict_fingerprint`): the
        upstream key of every cell computed from this model."""
        return str(self.record["fingerprint"])

    @property
    def name(self) -> str:
        """File stem under ``bench/cache/models`` (``<arch>-<dataset>-s<seed>-<digest>``)."""
        return str(self.record["cache_name"])


def machine_info() -> dict[str, Any]:
    """Facts read from this machine: CPU model, cores (and those this process may use), memory, OS, GPUs, load.

    ``gpus`` lists what ``torch.cuda`` sees (name and memory); an empty list means none.
    """
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "memory_gib": mem_gib,
            "platform": platform.platform(), "gpus": gpus, "cuda": torch.version.cuda,
            "load_average_1_5_15min": load}


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_provenance(directory: str | os.PathLike[str] | None = None, *,
                   exclude: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Any]:
    """The git commit of the checkout ``directory`` belongs to, and whether its tree has uncommitted changes.

    Args:
        directory: a folder of the code that runs (default: the ``modelshield`` package's folder).
        exclude: paths left out of the dirty check (e.g. the results folder a run is about to rewrite).

    Returns:
        ``{"commit": <40 hex> | "unknown", "dirty": bool | None, "changed": [up to 20 porcelain lines]}``;
        ``unknown`` / None outside a checkout (or for a package installed in a git-ignored folder such as a venv).
    """
    where = Path(directory if directory is not None else Path(modelshield.__file__).parent).resolve()
    unknown: dict[str, Any] = {"commit": "unknown", "dirty": None, "changed": []}
    top = _git(where, "rev-parse", "--show-toplevel")
    commit = _git(where, "rev-parse", "HEAD")
    if top is None or commit is None or _git(where, "check-ignore", "-q", str(where)) is not None:
        return unknown
    root = Path(top.strip())
    specs = ["."]
    for path in exclude:
        with contextlib.suppress(ValueError):
            specs.append(f":(exclude){Path(path).resolve().relative_to(root).as_posix()}")
    status = _git(root, "status", "--porcelain", "--", *specs)
    if status is None:
        return {**unknown, "commit": commit.strip()}
    changed = [line for line in status.splitlines() if line.strip()]
    return {"commit": commit.strip(), "dirty": bool(changed), "changed": changed[:20]}


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


def _canonical(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (dataclasses as dicts, tuples as lists); anything else is refused."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _canonical(asdict(value), where)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: key {k!r} is a {type(k).__name__}; expected str")
            out[k] = _canonical(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ConfigError(f"{where} is a {type(value).__name__}; expected JSON-able values (numbers, text, lists, "
                      "mappings, dataclasses)")


def _package_version() -> str:
    return str(modelshield.__version__)


class BenchContext:
    """Settings of a suite run and its caches.

    Attributes:
        suite: suite name.
        quick: reduced grid.
        seed: base seed.
        data_root: dataset root (``--data-root`` or ``MODELSHIELD_DATA``).
        cache_dir: this suite's cell cache (``bench/cache/<suite>[-quick]``).
        models_dir: trained models shared by all suites (``bench/cache/models``).
        results_dir: where :meth:`write` puts the results (``bench/results``).
        progress: show progress bars.
        console: where to report progress (stderr).
        cells_computed: names of the cells computed in this run (nested cells included).
        cells_reused: names of the cells taken from the cache.
        models_trained: trained models made in this run; ``models_reused``: those loaded from the cache.
        threads_used: torch thread counts in force during cells, model training and ``torch_threads`` blocks
            run in this run; ``threads_reused``: those the reused cells recorded when they were computed.
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
        self.cells_computed: list[str] = []
        self.cells_reused: list[str] = []
        self.models_trained: list[str] = []
        self.models_reused: list[str] = []
        self.threads_used: set[int] = set()
        self.threads_reused: set[int] = set()
        self.git: dict[str, Any] | None = None
        self._thread_frames: list[set[int]] = []
        if fresh and self.cache_dir.exists():
            for item in self.cache_dir.glob("*.json"):
                item.unlink()

    def dataset(self, name: str) -> DatasetBundle:
        """Load a dataset from the data root (cached in memory)."""
        return load_dataset(name, self.data_root)

    @contextlib.contextmanager
    def torch_threads(self, n: int) -> Iterator[None]:
        """Run a block with ``n`` torch threads (:func:`modelshield.training.torch_threads`) and record the count."""
        with _torch_threads(n):
            self._note_threads()
            yield

    def _note_threads(self) -> None:
        n = torch.get_num_threads()
        self.threads_used.add(n)
        for frame in self._thread_frames:
            frame.add(n)

    @contextlib.contextmanager
    def _work(self) -> Iterator[set[int]]:
        frame: set[int] = set()
        self._thread_frames.append(frame)
        try:
            self._note_threads()
            yield frame
        finally:
            self._thread_frames.pop()

    def cell_inputs(self, name: str, config: Mapping[str, Any], upstream: Mapping[str, str] | None = None) -> dict[str, Any]:
        """What the cache key of cell ``name`` hashes (recorded in its cache file).

        Raises:
            ConfigError: ``config`` or ``upstream`` holds something that is not JSON-able.
        """
        if not isinstance(config, Mapping):
            raise ConfigError(f"cell {name!r}: config is a {type(config).__name__}; expected a mapping of its settings")
        up = _canonical(dict(upstream or {}), f"cell {name!r} upstream")
        if any(not isinstance(v, str) for v in up.values()):
            raise ConfigError(f"cell {name!r}: upstream values must be fingerprints (str); got {up}")
        return {"cache_format": CACHE_FORMAT, "suite": self.suite, "quick": self.quick, "seed": self.seed, "cell": name,
                "config": _canonical(config, f"cell {name!r} config"), "upstream": up, "modelshield": _package_version()}

    def cell_key(self, name: str, config: Mapping[str, Any], upstream: Mapping[str, str] | None = None) -> str:
        """The cache key of cell ``name`` (SHA-256 hex of :meth:`cell_inputs`); also names files a cell keeps."""
        blob = json.dumps(self.cell_inputs(name, config, upstream), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def cell(self, name: str, fn: Callable[[], Any], *, config: Mapping[str, Any], upstream: Mapping[str, str] | None = None,
             reuse_if: Callable[[Any], bool] | None = None) -> Any:
        """Return the cached result of cell ``name`` for this ``config`` and ``upstream``, computing it first if absent.

        Args:
            name: the cell's name (unique within the suite).
            fn: computes the cell's JSON-able result.
            config: every setting the result depends on (JSON-able; dataclasses allowed).
            upstream: fingerprints of what the result is computed from, e.g. ``{"victim": trained.fingerprint}``.
            reuse_if: a check on a cached result; when it returns False the cell is recomputed (e.g. files the
                cell made are gone).

        Returns:
            ``fn()``'s result, or the cached one.
        """
        inputs = self.cell_inputs(name, config, upstream)
        key = self.cell_key(name, config, upstream)
        path = self.cache_dir / f"{_safe(name)}.{key[:16]}.json"
        if path.exists():
            with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError, OSError):
                doc = json.loads(path.read_text())
                if doc["key"] == key and (reuse_if is None or reuse_if(doc["result"])):
                    self.cells_reused.append(name)
                    self.threads_reused.update(doc.get("torch_threads", []))
                    return doc["result"]
        self.console.log(f"[bold]{self.suite}[/]: {name}")
        start = time.perf_counter()
        with self._work() as threads:
            result = fn()
        self.cells_computed.append(name)
        doc = {"cell": name, "key": key, "inputs": inputs, "seconds": time.perf_counter() - start,
               "torch_threads": sorted(threads), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "result": result}
        atomic_write_bytes(path, json.dumps(doc, indent=1).encode())
        return result

    def model_name(self, architecture: str, dataset: str, config: TrainConfig, *, seed: int | None = None,
                   train_size: int | None = None) -> str:
        """File stem of a trained model in :attr:`models_dir`: ``<arch>-<dataset>-s<seed>-<digest>``.

        The digest hashes every field of ``config`` that acts on the run (``milestones`` only under the
        ``multistep`` schedule) and ``train_size``; a test pins it for the benchmark victims
        (a new :class:`~modelshield.training.TrainConfig` field changes it, and the victims are then retrained).
        """
        seed = self.seed if seed is None else seed
        fields = asdict(config)
        if config.schedule != "multistep":  # milestones act only on that schedule: other configs keep their names
            fields.pop("milestones")
        digest = hashlib.sha256(json.dumps([fields, train_size], sort_keys=True).encode()).hexdigest()[:10]
        return f"{architecture}-{dataset}-s{seed}-{digest}"

    def trained_model(self, architecture: str, dataset: str, config: TrainConfig, *, seed: int | None = None,
                      train_size: int | None = None) -> TrainedModel:
        """Train (once, shared across suites) a zoo model on a dataset's ``train`` split, selected on ``val``.

        Returns the checkpoint and its training record (epochs, wall seconds, val and test accuracy), with the
        weights' ``fingerprint`` added.
        """
        seed = self.seed if seed is None else seed
        name = self.model_name(architecture, dataset, config, seed=seed, train_size=train_size)
        weights, record_path = self.models_dir / f"{name}.safetensors", self.models_dir / f"{name}.json"
        with _file_lock(self.models_dir / f".{name}.lock"):
            if weights.exists() and record_path.exists():
                try:
                    loaded = self._loaded(name, load_checkpoint(weights), json.loads(record_path.read_text()))
                    self.models_reused.append(name)
                    self.threads_reused.update(loaded.record.get("torch_threads", []))
                    return loaded
                except (FormatError, json.JSONDecodeError):
                    pass  # retrain below
            bundle = self.dataset(dataset)
            info = bundle.info
            seed_everything(seed)
            model = build_model(architecture, in_channels=info.in_channels, image_size=info.image_size,
                                num_classes=info.num_classes, normalization=info.normalization)
            train = bundle.train if train_size is None else bundle.train.subset(train_size, seed)
            self.console.log(f"training {architecture} on {dataset} ({len(train)} images, {config.epochs} epochs)")
            # always the same thread count, whichever suite trains the model first: CPU kernels sum in a
            # thread-dependent order, so a victim trained with 2 threads differs from one trained with 1 (VGG on
            # Fashion-MNIST: 92.56% vs 92.39%) and suites would disagree about "the" victim
            with self.torch_threads(VICTIM_THREADS), self._work() as threads:
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
                      "train_seconds": result.wall_seconds, "torch_threads": sorted(threads),
                      "versions": library_versions(), "history": result.history}
            atomic_write_bytes(record_path, json.dumps(record, indent=1).encode())
            record = json.loads(json.dumps(record))  # the form a later run loads (tuples such as milestones become lists)
            self.models_trained.append(name)
            return self._loaded(name, load_checkpoint(weights), record)

    @staticmethod
    def _loaded(name: str, checkpoint: Checkpoint, record: dict[str, Any]) -> TrainedModel:
        fingerprint = state_dict_fingerprint(checkpoint.model.state_dict())
        return TrainedModel(checkpoint, {**record, "fingerprint": fingerprint, "cache_name": name})

    def provenance(self) -> dict[str, Any]:
        """The git commit of the running code (taken once per run; the results folder is not part of the dirty check)."""
        if self.git is None:
            self.git = git_provenance(exclude=[self.results_dir])
        return self.git

    def write(self, report: SuiteReport, *, started: float, command: list[str]) -> dict[str, Path]:
        """Write ``<suite>[-quick].json``, ``.md`` and one PNG per figure; returns the paths."""
        stem = self.suite + ("-quick" if self.quick else "")
        self.results_dir.mkdir(parents=True, exist_ok=True)
        wall = time.time() - started
        criteria = [c.to_dict() for c in report.criteria]
        header = {
            "suite": self.suite, "quick": self.quick, "command": shlex.join(command), "seed": self.seed,
            "git": self.provenance(), "versions": library_versions(), "machine": machine_info(),
            "torch_threads": {"this_run": sorted(self.threads_used), "reused_cells": sorted(self.threads_reused)},
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": round(wall, 1), "cells_computed": len(self.cells_computed),
            "cells_reused": len(self.cells_reused),
            "cells": {"computed": self.cells_computed, "reused": self.cells_reused},
            "models": {"trained": self.models_trained, "reused": self.models_reused},
        }
        paths: dict[str, Path] = {}
        for fig_name, figure in report.figures.items():
            png = self.results_dir / f"{stem}-{fig_name}.png"
            figure.savefig(png, dpi=110, bbox_inches="tight")
            paths[fig_name] = png
        doc = {**header, "figures": [p.name for p in paths.values()], "criteria": criteria,
               "criteria_met": sum(c["met"] for c in criteria), "criteria_total": len(criteria),
               "results": report.results}
        paths["json"] = atomic_write_bytes(self.results_dir / f"{stem}.json", (json.dumps(doc, indent=1) + "\n").encode())
        md = [f"# Benchmark `{self.suite}`" + (" (quick)" if self.quick else ""), "",
              f"- command: `{header['command']}`", f"- seed: {self.seed}", f"- code: {_git_text(header['git'])}",
              f"- machine: {_machine_text(header['machine'])}",
              f"- torch threads during the work: {_threads_text(header['torch_threads'])}",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in header["versions"].items()),
              f"- started {header['started']}, wall time {wall / 60:.1f} min" + _reuse_note(self), ""]
        if report.criteria:
            md += ["## Acceptance", ""] + ([report.criteria_note.strip(), ""] if report.criteria_note else [])
            md += [criteria_table(report.criteria), ""]
        md += [report.markdown.strip(), ""]
        md += [f"![{name}]({p.name})" for name, p in paths.items() if p.suffix == ".png"]
        paths["md"] = atomic_write_bytes(self.results_dir / f"{stem}.md", ("\n".join(md) + "\n").encode())
        return paths


def _git_text(git: dict[str, Any]) -> str:
    if git["commit"] == "unknown":
        return "git commit unknown (not run from a git checkout)"
    n = len(git["changed"])
    state = (f"with uncommitted changes in {n}{'+' if n >= 20 else ''} path{'' if n == 1 else 's'}"
             if git["dirty"] else "clean tree")
    return f"git commit `{git['commit'][:12]}` ({state})"


def _machine_text(m: dict[str, Any]) -> str:
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in m["gpus"]) or "no GPU visible to torch"
    cores = f"{m['cores']} cores" + (f" ({m['usable_cores']} usable)" if m["usable_cores"] != m["cores"] else "")
    text = f"{m['cpu']}, {cores}, {m['memory_gib']} GiB memory, {gpus}; {m['platform']}"
    if m["load_average_1_5_15min"] is not None:
        text += (f"; load average at the end {m['load_average_1_5_15min']} (above {m['usable_cores']} means other jobs "
                 "shared the CPU)")
    return text


def _threads_text(threads: dict[str, list[int]]) -> str:
    def join(values: list[int]) -> str:
        return ", ".join(map(str, values)) or "-"

    text = f"{join(threads['this_run'])} in this run" if threads["this_run"] else "no work in this run"
    return text + (f"; {join(threads['reused_cells'])} in the reused cells" if threads["reused_cells"] else "")


def _reuse_note(ctx: BenchContext) -> str:
    """Say when a run reused cached cells, whose time is not in its wall time."""
    if not ctx.cells_reused:
        return ""

    def cells(n: int) -> str:
        return f"{n} cell{'' if n == 1 else 's'}"

    return (f" ({cells(len(ctx.cells_computed))} computed in this run, {len(ctx.cells_reused)} reused from earlier runs "
            f"in `{ctx.cache_dir.as_posix()}`; their time is not included)")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_suite(module: Any, ctx: BenchContext, command: list[str] | None = None) -> dict[str, Path]:
    """Run a suite module and write its results (the git commit is taken before the suite starts)."""
    started = time.time()
    ctx.provenance()
    report = module.run(ctx)
    if not isinstance(report, SuiteReport):
        raise ConfigError(f"suite {ctx.suite!r} returned {type(report).__name__}, expected SuiteReport")
    return ctx.write(report, started=started, command=command or sys.argv)
