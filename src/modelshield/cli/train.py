"""``modelshield train``: train a zoo model and save a checkpoint (also under ``torchrun``)."""

from __future__ import annotations

import argparse

from modelshield.cli._common import Subparsers, add_command, add_config_option, add_data_args, add_output_args, emit
from modelshield.training import TrainConfig

__all__ = ["register"]

# the TrainConfig fields `train` exposes, in help order (option --field-name each)
TRAIN_FIELDS = ("epochs", "batch_size", "lr", "optimizer", "schedule", "weight_decay", "patience", "augment", "seed")


def _cmd_train(args: argparse.Namespace) -> int:
    from modelshield.data import load_dataset
    from modelshield.models import CheckpointMeta, build_model, save_checkpoint
    from modelshield.training import _distributed, evaluate, seed_everything, train_model

    config = TrainConfig(**{name: getattr(args, name) for name in TRAIN_FIELDS})
    bundle = load_dataset(args.dataset, args.data_root)
    info = bundle.info
    seed_everything(config.seed)
    model = build_model(args.model, in_channels=info.in_channels, image_size=info.image_size,
                        num_classes=info.num_classes, normalization=info.normalization)
    train = bundle.train.subset(args.train_size, config.seed) if args.train_size else bundle.train
    rank, world = _distributed()
    result = train_model(model, train, val=bundle.val, config=config, progress=not args.quiet,
                         description=f"{args.model}/{info.name}")
    test = evaluate(model, bundle.test)
    if rank != 0:
        return 0
    meta = CheckpointMeta.for_model(args.model, in_channels=info.in_channels, image_size=info.image_size,
                                    num_classes=info.num_classes, dataset=info.name,
                                    normalization=info.normalization, accuracy=test.accuracy, seed=config.seed)
    path = save_checkpoint(args.out, model, meta)
    summary = {"model": args.model, "dataset": info.name, "train_images": len(train), "processes": world,
               "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "val_accuracy": result.val_accuracy,
               "test_accuracy": test.accuracy, "train_seconds": round(result.wall_seconds, 2), "checkpoint": str(path)}
    emit(args, summary, [("model", f"{args.model} on {info.name}"), ("epochs", f"{result.epochs_run} (kept {result.best_epoch})"),
                         ("test accuracy", f"{100 * test.accuracy:.2f}%"), ("wall time", f"{result.wall_seconds:.1f} s"),
                         ("checkpoint", str(path))])
    return 0


def register(sub: Subparsers) -> None:
    """Add ``train``."""
    p = add_command(sub, "train", help="train a zoo model and save a checkpoint", examples=[
        "modelshield train --model lenet5 --dataset mnist --data-root ../shared/datasets --epochs 12 --out lenet.safetensors",
        "torchrun --nproc_per_node 2 -m modelshield train --model lenet5 --dataset mnist --out lenet.safetensors"])
    p.add_argument("--model", default="lenet5", help="lenet5, vgg or resnet20")
    add_data_args(p)
    helps = {"optimizer": "adam, adamw or sgd", "schedule": "cosine, step or none", "augment": "none, shift or shift-flip",
             "patience": "early stopping after N epochs without improvement"}
    for name in TRAIN_FIELDS[:-1]:
        add_config_option(p, TrainConfig, name, help=helps.get(name))
    p.add_argument("--train-size", type=int, default=None, help="train on a seeded subset of N images")
    add_config_option(p, TrainConfig, "seed")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    add_output_args(p)
    p.set_defaults(handler=_cmd_train)
