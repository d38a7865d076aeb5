"""The demo's driver: train the digits model, run every stage of :data:`DEMO_STAGES`, print the summary."""

from __future__ import annotations

import importlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelshield.data import load_dataset
from modelshield.demo.context import DemoContext
from modelshield.models import CheckpointMeta, build_model, save_checkpoint
from modelshield.training import TrainConfig, evaluate, seed_everything, train_model

__all__ = ["DEMO_STAGES", "DEMO_TRAIN", "run_demo"]

# stage modules of modelshield.demo, run in this order; each has stage(ctx) -> [(metric, value)]
DEMO_STAGES: tuple[str, ...] = ("lock", "defense", "auth", "watermark")

DEMO_TRAIN = TrainConfig(epochs=30, batch_size=64, lr=3e-3, schedule="cosine")


def _stage(name: str) -> Callable[[DemoContext], list[tuple[str, str]]]:
    return importlib.import_module(f"modelshield.demo.{name}").stage  # type: ignore[no-any-return]


def run_demo(seed: int = 0, quiet: bool = False, console: Console | None = None) -> list[tuple[str, str, str]]:
    """Run the demo; returns the summary rows (stage, metric, value) it printed.

    Args:
        seed: seeds the training and every stage.
        quiet: no progress bars.
        console: where to print (default: the terminal).
    """
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
        for name in DEMO_STAGES:
            rows += [(name, metric, value) for metric, value in _stage(name)(ctx)]
    table = Table(title=f"modelshield demo summary ({time.perf_counter() - start:.0f} s)")
    for column in ("stage", "metric", "value"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return rows
