"""``modelshield evaluate``: accuracy of a checkpoint (or of a Deep-Lock file, see :mod:`.lock`) on a split."""

from __future__ import annotations

import argparse
from pathlib import Path

from modelshield.cli._common import SPLITS, Subparsers, add_command, add_data_args, add_output_args, emit, load_checkpoint_and_data
from modelshield.cli.lock import add_locked_evaluate_args, evaluate_locked_file
from modelshield.lock import is_locked_file

__all__ = ["register"]


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from modelshield.training import evaluate

    if is_locked_file(args.checkpoint):  # a Deep-Lock file: with its key, or as-is
        return evaluate_locked_file(args)
    checkpoint, bundle, dataset = load_checkpoint_and_data(args)
    result = evaluate(checkpoint.model, bundle.split(args.split))
    summary = {"checkpoint": str(args.checkpoint), "dataset": dataset, "split": args.split, "accuracy": result.accuracy,
               "correct": result.correct, "total": result.total, "nonfinite": result.nonfinite}
    emit(args, summary, [("checkpoint", str(args.checkpoint)), ("data", f"{dataset} / {args.split} ({result.total} images)"),
                         ("accuracy", f"{100 * result.accuracy:.2f}%")])
    return 0


def register(sub: Subparsers) -> None:
    """Add ``evaluate`` (plain checkpoints and locked files)."""
    p = add_command(sub, "evaluate", help="accuracy of a checkpoint on a dataset split", examples=[
        "modelshield evaluate lenet.safetensors --data-root ../shared/datasets",
        "modelshield evaluate lenet.mslock --key-file master.key"])
    p.add_argument("checkpoint", type=Path)
    add_data_args(p, dataset_default=None)
    p.add_argument("--split", default="test", choices=SPLITS)
    add_output_args(p)
    add_locked_evaluate_args(p)
    p.set_defaults(handler=_cmd_evaluate)
