"""Suite ``train``: LeNet-5 on MNIST and the small VGG on Fashion-MNIST, plus a DDP check.

The two victims trained here are the protected models of every other suite (they import :func:`victim`),
so a model is trained once and shared through ``bench/cache/models``.

DDP check: the same LeNet-5 training (MNIST, a few epochs) run as one process and as two ``torchrun``
processes (gloo, CPU), both through the ``modelshield train`` CLI; the two test accuracies are compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from modelshield.bench.harness import BenchContext, SuiteReport, markdown_table
from modelshield.models import Checkpoint
from modelshield.training import TrainConfig

__all__ = ["VICTIMS", "run", "victim"]

# dataset -> (architecture, full config, quick config)
VICTIMS: dict[str, tuple[str, TrainConfig, TrainConfig]] = {
    "mnist": ("lenet5", TrainConfig(epochs=12, batch_size=128, lr=1e-3, schedule="cosine"),
              TrainConfig(epochs=2, batch_size=128, lr=2e-3, schedule="cosine")),
    "fashion-mnist": ("vgg", TrainConfig(epochs=12, batch_size=128, lr=1e-3, schedule="cosine", weight_decay=5e-4, optimizer="adamw"),
                      TrainConfig(epochs=2, batch_size=128, lr=2e-3, schedule="cosine")),
}
QUICK_TRAIN_SIZE = 10_000


def victim(ctx: BenchContext, dataset: str) -> tuple[Checkpoint, dict[str, Any]]:
    """The benchmark victim for ``dataset`` (trained once, cached, shared by all suites)."""
    architecture, full, quick = VICTIMS[dataset]
    if ctx.quick:
        return ctx.trained_model(architecture, dataset, quick, train_size=QUICK_TRAIN_SIZE)
    return ctx.trained_model(architecture, dataset, full)


def _cli_train(ctx: BenchContext, processes: int, epochs: int, train_size: int | None) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="ms-ddp-")) / "model.safetensors"
    args = ["-m", "modelshield", "train", "--model", "lenet5", "--dataset", "mnist", "--epochs", str(epochs),
            "--seed", str(ctx.seed), "--out", str(out), "--json", "--quiet"]
    if ctx.data_root is not None:
        args += ["--data-root", str(ctx.data_root)]
    if train_size:
        args += ["--train-size", str(train_size)]
    env = dict(os.environ)
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
        env["OMP_NUM_THREADS"] = "1"
    else:
        cmd = [sys.executable, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


def run(ctx: BenchContext) -> SuiteReport:
    """Train both victims and compare single-process with 2-process DDP training."""
    rows, results = [], {}
    for dataset, (architecture, full, quick) in VICTIMS.items():
        _, record = victim(ctx, dataset)
        results[dataset] = {k: record[k] for k in ("architecture", "train_images", "epochs_run", "best_epoch",
                                                  "val_accuracy", "test_accuracy", "train_seconds")}
        rows.append([architecture, dataset, record["train_images"], record["epochs_run"],
                     f"{100 * record['test_accuracy']:.2f}%", f"{record['train_seconds'] / 60:.1f} min"])
    ddp_epochs, ddp_size = (1, QUICK_TRAIN_SIZE) if ctx.quick else (3, None)
    single = ctx.cell(f"ddp-single-e{ddp_epochs}", lambda: _cli_train(ctx, 1, ddp_epochs, ddp_size))
    double = ctx.cell(f"ddp-2proc-e{ddp_epochs}", lambda: _cli_train(ctx, 2, ddp_epochs, ddp_size))
    results["ddp"] = {"epochs": ddp_epochs, "single": single, "two_processes": double,
                      "accuracy_gap_points": round(100 * (double["test_accuracy"] - single["test_accuracy"]), 2)}
    md = ["## Victim models (test accuracy of the weights kept on the validation split)", "",
          markdown_table(["model", "dataset", "train images", "epochs", "test accuracy", "wall time"], rows), "",
          f"## DistributedDataParallel (LeNet-5, MNIST, {ddp_epochs} epochs, gloo on CPU)", "",
          markdown_table(["run", "processes", "test accuracy", "wall time"], [
              ["single process", 1, f"{100 * single['test_accuracy']:.2f}%", f"{single['train_seconds']:.0f} s"],
              ["torchrun DDP", 2, f"{100 * double['test_accuracy']:.2f}%", f"{double['train_seconds']:.0f} s"],
          ]), "",
          f"Accuracy gap (DDP - single): {results['ddp']['accuracy_gap_points']:+.2f} points."]
    return SuiteReport(results=results, markdown="\n".join(md))
