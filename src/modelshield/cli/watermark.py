"""``modelshield watermark embed`` and ``modelshield watermark verify`` (MEA-Defender).

The watermark key is always a file (mode 0600), written by ``embed --key-out`` or reused with ``--key-file``;
never a command-line value, and never printed (only its public description: classes and orientation).
"""

from __future__ import annotations

import argparse
import json
import secrets
from dataclasses import asdict, replace
from pathlib import Path

from modelshield.cli._common import (
    SPLITS,
    Subparsers,
    add_command,
    add_config_option,
    add_data_args,
    add_output_args,
    emit,
    load_checkpoint_and_data,
    refuse_overwrite,
    subcommand_group,
)
from modelshield.errors import ConfigError
from modelshield.oracle import load_api_key
from modelshield.serve.config import ServeConfig
from modelshield.watermark.embedding import WatermarkConfig
from modelshield.watermark.key import ORIENTATIONS, WatermarkKey
from modelshield.watermark.verify import VerifyConfig

__all__ = ["register"]


def _cmd_embed(args: argparse.Namespace) -> int:
    from modelshield.models import build_model, save_checkpoint
    from modelshield.training import evaluate, seed_everything
    from modelshield.watermark.embedding import embed_watermark

    refuse_overwrite(args.out, *([args.key_out] if args.key_file is None and args.key_out is not None else []), force=args.force)
    checkpoint, bundle, dataset = load_checkpoint_and_data(args)
    if args.key_file is not None:
        key = WatermarkKey.load(args.key_file)
    else:
        if args.key_out is None:
            raise ConfigError("pass --key-out PATH to write a new watermark key (or --key-file PATH to reuse one)")
        if args.classes is not None:
            a, b, t = args.classes
            key = WatermarkKey(a, b, t, bundle.info.num_classes, bundle.info.input_shape, orientation=args.orientation,
                               seed=secrets.randbits(63))
        else:
            key = WatermarkKey.for_dataset(dataset, orientation=args.orientation)
    model = checkpoint.model
    reference = None  # fine-tuning: the given model's own validation accuracy
    if args.from_scratch:
        reference = evaluate(model, bundle.val).accuracy  # stay within the tolerance of the given (clean) model
        seed_everything(args.seed)
        meta = checkpoint.meta
        model = build_model(meta.architecture, normalization=meta.normalization, **meta.arch_args)
        config = WatermarkConfig.from_scratch(seed=args.seed)
    else:
        config = WatermarkConfig(seed=args.seed)
    if args.embed_epochs is not None:
        config = replace(config, epochs=args.embed_epochs)
    if args.embed_lr is not None:
        config = replace(config, lr=args.embed_lr)
    result = embed_watermark(model, bundle.train, key, val=bundle.val, config=config, reference_accuracy=reference,
                             progress=not args.quiet)
    accuracy = evaluate(model, bundle.test).accuracy
    extra = dict(checkpoint.meta.extra)
    extra["watermark"] = {"method": "mea-defender", "config": asdict(config), "val_wsr": result.wsr, "val_wfpr": result.wfpr}
    out = save_checkpoint(args.out, model, replace(checkpoint.meta, accuracy=accuracy, extra=extra))
    key_path = args.key_file if args.key_file is not None else key.save(args.key_out, overwrite=args.force)
    summary = {"checkpoint": str(args.checkpoint), "watermarked": str(out), "key_file": str(key_path), "dataset": dataset,
               "mode": "from scratch" if args.from_scratch else "fine-tuned", "test_accuracy": accuracy,
               "val_accuracy": result.clean_accuracy, "val_reference_accuracy": result.reference_accuracy,
               "val_wsr": result.wsr, "val_wfpr": result.wfpr, "seconds": round(result.seconds, 1)}
    emit(args, summary, [("watermarked model", str(out)), ("key file (0600)", str(key_path)),
                         ("test accuracy", f"{100 * accuracy:.2f}%"), ("val WSR", f"{100 * result.wsr:.2f}%"),
                         ("val WFPR", f"{100 * result.wfpr:.2f}%"), ("time", f"{result.seconds:.1f} s")])
    return 0


def _suspect(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if args.url is None:
        from modelshield.models import load_checkpoint

        if args.checkpoint is None:
            raise ConfigError("name a suspect: a CHECKPOINT, or --url URL")
        return load_checkpoint(args.checkpoint).model, str(args.checkpoint)
    if args.checkpoint is not None:
        raise ConfigError("give either a CHECKPOINT or --url, not both")
    from modelshield.oracle import HttpOracle

    oracle = HttpOracle(args.url, args.model_name, api_key=load_api_key(args.api_key_file, args.api_key_env),
                        client_id="watermark-verifier")
    return oracle, f"{args.url} ({args.model_name})"


def _cmd_verify(args: argparse.Namespace) -> int:
    from modelshield.data import load_dataset
    from modelshield.watermark.verify import NullCalibration, verify_watermark

    key = WatermarkKey.load(args.key_file)
    suspect, name = _suspect(args)
    bundle = load_dataset(args.dataset, args.data_root)
    if bundle.info.input_shape != key.input_shape:
        raise ConfigError(f"the key is for {key.input_shape} images, dataset {args.dataset!r} has {bundle.info.input_shape}")
    null = None
    if args.null_rate is not None:
        null = NullCalibration(args.null_rate, 0.95, ("given on the command line",), (), ())
    config = VerifyConfig(samples=args.samples, evasion_samples=args.evasion_samples, alpha=args.alpha, seed=args.seed,
                          wfpr_margin=args.wfpr_margin)
    report = verify_watermark(suspect, bundle.split(args.split), key, config=config, null=null)
    if args.report is not None:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    if not args.json:
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(f"**suspect**: {name}\n\n" + report.to_markdown()))
    else:
        emit(args, {"suspect": name, **report.to_dict()})
    return 0


def register(sub: Subparsers) -> None:
    """Add ``watermark embed`` and ``watermark verify``."""
    group = subcommand_group(sub, "watermark", "MEA-Defender: embed an extraction-robust watermark, verify a suspect", examples=[
        "modelshield watermark embed lenet.safetensors --out wm.safetensors --key-out wm.key",
        "modelshield watermark verify pirate.safetensors --key-file wm.key"])

    p = add_command(group, "embed", help="fine-tune a checkpoint with the watermark: watermarked checkpoint + key file",
                    examples=["modelshield watermark embed model.safetensors --out wm.safetensors --key-out wm.key"])
    p.add_argument("checkpoint", type=Path, help="checkpoint (.safetensors) to watermark")
    add_data_args(p, dataset_default=None)
    p.add_argument("--out", required=True, type=Path, help="watermarked checkpoint to write")
    p.add_argument("--key-out", type=Path, default=None, help="new watermark key file to write (mode 0600)")
    p.add_argument("--key-file", type=Path, default=None, help="reuse an existing watermark key file instead")
    p.add_argument("--classes", type=int, nargs=3, metavar=("S_I", "S_J", "TARGET"), default=None,
                   help="source classes and target (default: the dataset's, e.g. 0 1 2)")
    add_config_option(p, WatermarkKey.for_dataset, "orientation", choices=ORIENTATIONS, help="half-split orientation")
    p.add_argument("--from-scratch", action="store_true",
                   help="retrain the architecture from scratch with the watermark (WatermarkConfig.from_scratch())")
    p.add_argument("--epochs", dest="embed_epochs", type=int, default=None, help="epochs (default: WatermarkConfig's, or from_scratch()'s)")
    p.add_argument("--lr", dest="embed_lr", type=float, default=None, help="learning rate (default: WatermarkConfig's, or from_scratch()'s)")
    add_config_option(p, WatermarkConfig, "seed", help="seed of the shuffling and composite sampling")
    p.add_argument("--force", action="store_true", help="overwrite --out and --key-out")
    add_output_args(p)
    p.set_defaults(handler=_cmd_embed)

    p = add_command(group, "verify", help="query a suspect (checkpoint or served model) with fresh composites", examples=[
        "modelshield watermark verify pirate.safetensors --key-file wm.key",
        "modelshield watermark verify --url http://host:8000 --api-key-file alice.key --key-file wm.key"])
    p.add_argument("checkpoint", type=Path, nargs="?", default=None, help="suspect checkpoint")
    p.add_argument("--url", default=None, help="base URL of a served suspect (Open Inference Protocol v2)")
    add_config_option(p, ServeConfig, "model_name", help="the model's name on the server (with --url)")
    p.add_argument("--api-key-file", type=Path, default=None, help="file holding the API key (with --url)")
    add_config_option(p, load_api_key, "env", "--api-key-env", metavar="VAR",
                      help="environment variable holding the API key, used when --api-key-file is not given")
    p.add_argument("--key-file", required=True, type=Path, help="watermark key file (mode 0600)")
    add_data_args(p, dataset_default="digits")
    p.add_argument("--split", default="test", choices=SPLITS, help="held-out images for the composites")
    for field in ("samples", "evasion_samples", "alpha", "wfpr_margin", "seed"):
        add_config_option(p, VerifyConfig, field, f"--{field.replace('_', '-')}")
    p.add_argument("--null-rate", type=float, default=None,
                   help="calibrated null WSR r0 (from independent models); default: the paper's 30%% threshold")
    p.add_argument("--report", type=Path, default=None, help="also write the JSON report here")
    add_output_args(p)
    p.set_defaults(handler=_cmd_verify)
