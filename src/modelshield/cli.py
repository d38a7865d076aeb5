"""The ``modelshield`` command line: parse, call the library, map errors to exit codes.

Feature subpackages add their own subcommands: each module named in :data:`FEATURE_COMMANDS` has
``register(subparsers)``. Every user error (:class:`~modelshield.errors.ModelShieldError`) is printed as one
line, ``error: ...``, and the process exits with that error's ``exit_code``; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelshield import __version__
from modelshield.errors import ConfigError, ModelShieldError

__all__ = ["FEATURE_COMMANDS", "add_data_args", "add_key_args", "add_output_args", "build_parser", "main"]

# modules with register(subparsers): one line per feature
FEATURE_COMMANDS: tuple[str, ...] = (
    "modelshield.lock.commands",
    "modelshield.defense.cli",
    "modelshield.attacks.extraction.cli",
    "modelshield.auth.commands",
    "modelshield.serve.commands",
)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def add_data_args(parser: argparse.ArgumentParser, *, dataset_default: str | None = "digits") -> None:
    """``--dataset`` and ``--data-root``."""
    parser.add_argument("--dataset", default=dataset_default,
                        help="digits (bundled), mnist, fashion-mnist, cifar10, cifar100, synthetic, imagefolder:PATH")
    parser.add_argument("--data-root", default=None, help="folder holding the datasets (default: $MODELSHIELD_DATA)")


def add_key_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--key-file`` and ``--key-env``: keys never travel on the command line."""
    parser.add_argument("--key-file", default=None, help="key file (mode 0600) written by `modelshield keygen`")
    parser.add_argument("--key-env", default="MODELSHIELD_KEY",
                        help="environment variable holding the base64 key, used when --key-file is not given"
                        + ("" if required else " (if set)"))


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--json``."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def emit(args: argparse.Namespace, summary: dict[str, Any], rows: list[tuple[str, str]] | None = None) -> None:
    """Print a result: JSON with ``--json``, else a small table."""
    if getattr(args, "json", False):
        print(json.dumps(summary))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in rows or [(k, str(v)) for k, v in summary.items()]:
        table.add_row(f"[bold]{key}[/]", value)
    Console().print(table)


# -- core commands -----------------------------------------------------------------------------

def _cmd_train(args: argparse.Namespace) -> int:
    from modelshield.data import load_dataset
    from modelshield.models import CheckpointMeta, build_model, save_checkpoint
    from modelshield.training import TrainConfig, _distributed, evaluate, seed_everything, train_model

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                         schedule=args.schedule, patience=args.patience, augment=args.augment,
                         weight_decay=args.weight_decay, seed=args.seed)
    bundle = load_dataset(args.dataset, args.data_root)
    info = bundle.info
    seed_everything(args.seed)
    model = build_model(args.model, in_channels=info.in_channels, image_size=info.image_size,
                        num_classes=info.num_classes, normalization=info.normalization)
    train = bundle.train.subset(args.train_size, args.seed) if args.train_size else bundle.train
    rank, world = _distributed()
    result = train_model(model, train, val=bundle.val, config=config, progress=not args.quiet,
                         description=f"{args.model}/{info.name}")
    test = evaluate(model, bundle.test)
    if rank != 0:
        return 0
    meta = CheckpointMeta.for_model(args.model, in_channels=info.in_channels, image_size=info.image_size,
                                    num_classes=info.num_classes, dataset=info.name,
                                    normalization=info.normalization, accuracy=test.accuracy, seed=args.seed)
    path = save_checkpoint(args.out, model, meta)
    summary = {"model": args.model, "dataset": info.name, "train_images": len(train), "processes": world,
               "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "val_accuracy": result.val_accuracy,
               "test_accuracy": test.accuracy, "train_seconds": round(result.wall_seconds, 2), "checkpoint": str(path)}
    emit(args, summary, [("model", f"{args.model} on {info.name}"), ("epochs", f"{result.epochs_run} (kept {result.best_epoch})"),
                         ("test accuracy", f"{100 * test.accuracy:.2f}%"), ("wall time", f"{result.wall_seconds:.1f} s"),
                         ("checkpoint", str(path))])
    return 0


def check_input_shape(expected: tuple[int, int, int], got: tuple[int, int, int], model_source: str, dataset: str) -> None:
    """Raise a clear ConfigError when a dataset's images do not fit a model."""
    if tuple(expected) != tuple(got):
        e, g = "x".join(map(str, expected)), "x".join(map(str, got))
        raise ConfigError(f"{model_source} expects {e} images but dataset {dataset!r} has {g}; "
                          f"evaluate on the dataset it was trained on, or train a model for {dataset!r} with "
                          f"`modelshield train --dataset {dataset}`")


def load_checkpoint_and_data(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """``(checkpoint, bundle, dataset)`` for ``args.checkpoint`` and ``args.dataset`` (default: the checkpoint's own).

    Raises:
        ConfigError: the dataset's images or class count do not fit the model.
    """
    from modelshield.data import load_dataset
    from modelshield.models import load_checkpoint

    checkpoint = load_checkpoint(args.checkpoint)
    dataset = args.dataset or checkpoint.meta.dataset
    bundle = load_dataset(dataset, args.data_root)
    check_input_shape(checkpoint.meta.input_shape, bundle.info.input_shape, str(args.checkpoint), dataset)
    if checkpoint.meta.num_classes != bundle.info.num_classes:
        raise ConfigError(f"{args.checkpoint} has {checkpoint.meta.num_classes} classes but {dataset!r} has {bundle.info.num_classes}")
    return checkpoint, bundle, dataset


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from modelshield.lock.commands import evaluate_locked_file, is_locked_file
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


def _cmd_keygen(args: argparse.Namespace) -> int:
    from modelshield.keys import SecretKey

    key = SecretKey.generate()
    path = key.save(args.out, overwrite=args.force)
    emit(args, {"key_file": str(path), "fingerprint": key.fingerprint},
         [("key file", f"{path} (mode 0600)"), ("fingerprint", key.fingerprint)])
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from modelshield.demo import run_demo

    run_demo(seed=args.seed, quiet=args.quiet)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from modelshield.bench import load_suite
    from modelshield.bench.harness import BenchContext, run_suite

    module = load_suite(args.suite)
    ctx = BenchContext(args.suite, quick=args.quick, seed=args.seed, data_root=args.data_root, root=args.root,
                       progress=not args.quiet, fresh=args.fresh)
    paths = run_suite(module, ctx, ["modelshield", *sys.argv[1:]])
    emit(args, {k: str(v) for k, v in paths.items()}, [(k, str(v)) for k, v in paths.items()])
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, feature commands included."""
    parser = argparse.ArgumentParser(
        prog="modelshield", formatter_class=_Formatter,
        description="Protect trained PyTorch models against theft.",
        epilog="examples:\n  modelshield demo\n  modelshield train --model lenet5 --dataset mnist --data-root DATA --out lenet.safetensors\n"
               "  modelshield keygen --out master.key\n  modelshield bench train --quick",
    )
    parser.add_argument("--version", action="version", version=f"modelshield {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", help="train a zoo model and save a checkpoint", formatter_class=_Formatter,
                       epilog="example:\n  modelshield train --model lenet5 --dataset mnist --data-root ../shared/datasets --epochs 12 --out lenet.safetensors\n"
                              "  torchrun --nproc_per_node 2 -m modelshield train --model lenet5 --dataset mnist --out lenet.safetensors")
    p.add_argument("--model", default="lenet5", help="lenet5, vgg or resnet20")
    add_data_args(p)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", default="adam", help="adam, adamw or sgd")
    p.add_argument("--schedule", default="cosine", help="cosine, step or none")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--patience", type=int, default=None, help="early stopping after N epochs without improvement")
    p.add_argument("--augment", default="none", help="none, shift or shift-flip")
    p.add_argument("--train-size", type=int, default=None, help="train on a seeded subset of N images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    add_output_args(p)
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("evaluate", help="accuracy of a checkpoint on a dataset split", formatter_class=_Formatter,
                       epilog="example:\n  modelshield evaluate lenet.safetensors --data-root ../shared/datasets")
    p.add_argument("checkpoint", type=Path)
    add_data_args(p, dataset_default=None)
    p.add_argument("--split", default="test", choices=("train", "val", "attacker", "test"))
    add_output_args(p)
    importlib.import_module("modelshield.lock.commands").add_locked_evaluate_args(p)
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("keygen", help="write a new random 256-bit secret key file (mode 0600)", formatter_class=_Formatter,
                       epilog="example:\n  modelshield keygen --out master.key\n  export MODELSHIELD_KEY=$(python -c ...)  # or keep the file")
    p.add_argument("--out", required=True, type=Path, help="key file to create")
    p.add_argument("--force", action="store_true", help="overwrite an existing key file")
    add_output_args(p)
    p.set_defaults(handler=_cmd_keygen)

    p = sub.add_parser("demo", help="zero-setup demo on the bundled digits", formatter_class=_Formatter,
                       epilog="example:\n  modelshield demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_demo)

    from modelshield.bench import SUITES

    p = sub.add_parser("bench", help="run a benchmark suite, write bench/results/<suite>.{json,md,png}",
                       formatter_class=_Formatter,
                       epilog="example:\n  modelshield bench train --data-root ../shared/datasets\n  modelshield bench train --quick")
    p.add_argument("suite", help=", ".join(SUITES))
    p.add_argument("--quick", action="store_true", help="reduced grid (minutes)")
    p.add_argument("--data-root", default=None, help="folder holding the datasets (default: $MODELSHIELD_DATA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="discard this suite's cached cells (trained models are kept)")
    p.add_argument("--root", default="bench", help="folder for cache/ and results/")
    add_output_args(p)
    p.set_defaults(handler=_cmd_bench)

    for module in FEATURE_COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``modelshield`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        return int(args.handler(args) or 0)
    except ModelShieldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
