"""Suite ``train``: LeNet-5 on MNIST, the small VGG and ResNet-20 on Fashion-MNIST, plus a DDP check.

The victims trained here are the protected models of every other suite (they import :func:`victim`),
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

import torch

from modelshield.bench.harness import BenchContext, Criterion, SuiteReport, TrainedModel, markdown_table
from modelshield.training import TrainConfig

__all__ = ["VICTIMS", "run", "victim", "victim_dataset"]

# victim name (the dataset's name, or "<architecture>-<dataset>" for a second model on a dataset)
#   -> (architecture, full config, quick config)
VICTIMS: dict[str, tuple[str, TrainConfig, TrainConfig]] = {
    "mnist": ("lenet5", TrainConfig(epochs=12, batch_size=128, lr=1e-3, schedule="cosine"),
              TrainConfig(epochs=2, batch_size=128, lr=2e-3, schedule="cosine")),
    "fashion-mnist": ("vgg", TrainConfig(epochs=12, batch_size=128, lr=1e-3, schedule="cosine", weight_decay=5e-4, optimizer="adamw"),
                      TrainConfig(epochs=2, batch_size=128, lr=2e-3, schedule="cosine")),
    "resnet20-fashion-mnist": ("resnet20", TrainConfig(epochs=12, batch_size=128, lr=1e-3, schedule="cosine", weight_decay=5e-4,
                                                       optimizer="adamw"),
                               TrainConfig(epochs=2, batch_size=128, lr=2e-3, schedule="cosine")),
}
QUICK_TRAIN_SIZE = 10_000
# acceptance (issue 2): victim test accuracy; DDP "of the same quality" read as losing at most 1 point
TARGET_ACCURACY = {"mnist": 0.985, "fashion-mnist": 0.90, "resnet20-fashion-mnist": 0.90}
DDP_GAP_MAX = 1.0  # points


def victim_dataset(name: str) -> str:
    """The dataset of a victim: its name, less an ``<architecture>-`` prefix (``resnet20-fashion-mnist``).

    Example:
        >>> victim_dataset("mnist"), victim_dataset("resnet20-fashion-mnist")
        ('mnist', 'fashion-mnist')
    """
    architecture = VICTIMS[name][0]
    return name.removeprefix(f"{architecture}-")


def victim(ctx: BenchContext, name: str) -> TrainedModel:
    """The benchmark victim ``name`` (a key of :data:`VICTIMS`; trained once, cached, shared by all suites).

    Unpacks as ``checkpoint, record``; its ``fingerprint`` is the upstream key of cells computed from it.
    """
    architecture, full, quick = VICTIMS[name]
    dataset = victim_dataset(name)
    if ctx.quick:
        return ctx.trained_model(architecture, dataset, quick, train_size=QUICK_TRAIN_SIZE)
    return ctx.trained_model(architecture, dataset, full)


def _train_args(ctx: BenchContext, epochs: int, train_size: int | None) -> list[str]:
    """``modelshield train`` arguments of the DDP check (without ``--out`` and ``--data-root``)."""
    args = ["train", "--model", "lenet5", "--dataset", "mnist", "--epochs", str(epochs), "--seed", str(ctx.seed),
            "--json", "--quiet"]
    return args + (["--train-size", str(train_size)] if train_size else [])


def _threads_per_process(processes: int) -> int:
    """Torch threads of each training process: one under DDP, else what this process uses."""
    return 1 if processes > 1 else torch.get_num_threads()


def _cli_train(ctx: BenchContext, processes: int, args: list[str]) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="ms-ddp-")) / "model.safetensors"
    args = ["-m", "modelshield", *args, "--out", str(out)]
    if ctx.data_root is not None:
        args += ["--data-root", str(ctx.data_root)]
    env = {**os.environ, "OMP_NUM_THREADS": str(_threads_per_process(processes))}
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    else:
        cmd = [sys.executable, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1]
    return {**json.loads(line), "torch_threads_per_process": _threads_per_process(processes)}


def run(ctx: BenchContext) -> SuiteReport:
    """Train the victims and compare single-process with 2-process DDP training."""
    rows, results, criteria = [], {}, []
    for name, (architecture, full, quick) in VICTIMS.items():
        _, record = victim(ctx, name)
        dataset = victim_dataset(name)
        results[name] = {k: record.get(k) for k in ("architecture", "train_images", "epochs_run", "best_epoch",
                                                      "val_accuracy", "test_accuracy", "train_seconds", "config",
                                                      "fingerprint", "cache_name", "torch_threads")}
        criteria.append(Criterion(f"{architecture} test accuracy on {dataset}", record["test_accuracy"],
                                  TARGET_ACCURACY[name], ">=", unit="%"))
        rows.append([architecture, dataset, record["train_images"], record["epochs_run"],
                     f"{100 * record['test_accuracy']:.2f}%", f"{record['train_seconds'] / 60:.1f} min"])
    ddp_epochs, ddp_size = (1, QUICK_TRAIN_SIZE) if ctx.quick else (3, None)
    args = _train_args(ctx, ddp_epochs, ddp_size)
    single, double = (ctx.cell(f"ddp-{label}", lambda n=n: _cli_train(ctx, n, args),
                               config={"command": args, "processes": n, "torch_threads_per_process": _threads_per_process(n)})
                      for label, n in (("single", 1), ("2proc", 2)))
    gap = 100 * (double["test_accuracy"] - single["test_accuracy"])
    results["ddp"] = {"epochs": ddp_epochs, "single": single, "two_processes": double, "accuracy_gap_points": round(gap, 2)}
    lost = 100 * (single["test_accuracy"] - double["test_accuracy"])
    criteria.append(Criterion("test accuracy lost by 2-process DDP against one process (same data)", lost, DDP_GAP_MAX,
                              "<=", unit="points",
                              detail=f"{100 * double['test_accuracy']:.2f}% vs {100 * single['test_accuracy']:.2f}%"))
    md = ["## Victim models (test accuracy of the weights kept on the validation split)", "",
          markdown_table(["model", "dataset", "train images", "epochs", "test accuracy", "wall time"], rows), "",
          f"## DistributedDataParallel (LeNet-5, MNIST, {ddp_epochs} epochs, gloo on CPU)", "",
          markdown_table(["run", "processes", "test accuracy", "wall time"], [
              ["single process", 1, f"{100 * single['test_accuracy']:.2f}%", f"{single['train_seconds']:.0f} s"],
              ["torchrun DDP", 2, f"{100 * double['test_accuracy']:.2f}%", f"{double['train_seconds']:.0f} s"],
          ]), "",
          f"Accuracy gap (DDP - single): {results['ddp']['accuracy_gap_points']:+.2f} points."]
    note = "Quick run: 2-epoch victims on 10,000 images; the thresholds are the full run's." if ctx.quick else ""
    return SuiteReport(results=results, markdown="\n".join(md), criteria=criteria, criteria_note=note)
