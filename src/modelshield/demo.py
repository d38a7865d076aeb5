"""``modelshield demo``: zero-setup tour on scikit-learn's bundled 8x8 digits.

It trains a small LeNet-5, evaluates it, then runs every registered protection stage on that model and
prints one summary table. Feature subpackages add a stage by naming a ``module:function`` in
:data:`DEMO_STAGES`; a stage takes a :class:`DemoContext` and returns (metric, value) rows.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from torch import nn

from modelshield.data import DatasetBundle, load_dataset
from modelshield.models import CheckpointMeta, build_model, save_checkpoint
from modelshield.training import TrainConfig, evaluate, seed_everything, train_model

__all__ = ["DEMO_STAGES", "DemoContext", "run_demo"]

# "module:function" of each protection's demo stage, run in this order
DEMO_STAGES: tuple[str, ...] = (
    "modelshield.lock.demo:stage",
    "modelshield.defense.demo_stage:stage",
    "modelshield.auth.demo:stage",
    "modelshield.watermark.demo:stage",
)

DEMO_TRAIN = TrainConfig(epochs=30, batch_size=64, lr=3e-3, schedule="cosine")


@dataclass(frozen=True)
class DemoContext:
    """What a demo stage gets.

    Attributes:
        model: the trained digits model (eval mode). Stages must not modify it in place (copy it).
        meta: its checkpoint metadata.
        checkpoint: path of its saved checkpoint.
        bundle: the digits dataset splits.
        workdir: a temporary folder for the stage's files.
        seed: demo seed.
        quiet: no progress bars.
        console: where to report.
    """

    model: nn.Module
    meta: CheckpointMeta
    checkpoint: Path
    bundle: DatasetBundle
    workdir: Path
    seed: int
    quiet: bool
    console: Console


def _stage(spec: str) -> Callable[[DemoContext], list[tuple[str, str]]]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def run_demo(seed: int = 0, quiet: bool = False, console: Console | None = None) -> list[tuple[str, str, str]]:
    """Run the demo; returns the summary rows (stage, metric, value) it printed."""
    console = console or Console()
    start = time.perf_counter()
    bundle = load_dataset("digits")
    info = bundle.info
    seed_everything(seed)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10, normalization=info.normalization)
    console.print(f"[bold]modelshield demo[/]: LeNet-5 on scikit-learn digits ({len(bundle.train)} training images)")
    result = train_model(model, bundle.train, val=bundle.val, config=DEMO_TRAIN, progress=not quiet, description="train digits")
    test = evaluate(model, bundle.test)
    rows: list[tuple[str, str, str]] = [
        ("model", "architecture", "LeNet-5 (digits 8x8, 10 classes)"),
        ("model", "test accuracy", f"{100 * test.accuracy:.1f}% ({test.total} images)"),
        ("model", "training", f"{result.epochs_run} epochs, {result.wall_seconds:.1f} s"),
    ]
    with tempfile.TemporaryDirectory(prefix="modelshield-demo-") as tmp:
        workdir = Path(tmp)
        meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits",
                                        normalization=info.normalization, accuracy=test.accuracy, seed=seed)
        path = save_checkpoint(workdir / "digits-lenet5.safetensors", model, meta)
        ctx = DemoContext(model, meta, path, bundle, workdir, seed, quiet, console)
        for spec in DEMO_STAGES:
            stage_name = spec.split(":")[0].split(".")[-2] if spec.count(".") > 1 else spec
            rows += [(stage_name, metric, value) for metric, value in _stage(spec)(ctx)]
    table = Table(title=f"modelshield demo summary ({time.perf_counter() - start:.0f} s)")
    for column in ("stage", "metric", "value"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return rows
