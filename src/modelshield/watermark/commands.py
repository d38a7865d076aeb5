"""CLI commands ``modelshield watermark embed`` and ``modelshield watermark verify``.

(Written as a feature module with ``register(subparsers)``, named in ``cli.FEATURE_COMMANDS``, because the
``cli/`` package of the architecture issue had not landed; move it to ``cli/watermark.py`` when it does.)

The watermark key is a file (``--key-file`` / ``--key-out``, mode 0600), never a command-line value. A served
model is verified over HTTP with ``--url URL --model-name NAME``; its API key comes from an environment
variable (``--api-key-env``, default ``MODELSHIELD_API_KEY``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from dataclasses import asdict, replace
from pathlib import Path

from modelshield.errors import ConfigError

__all__ = ["register"]

API_KEY_ENV = "MODELSHIELD_API_KEY"


def _cmd_embed(args: argparse.Namespace) -> int:
    from modelshield.cli import emit, load_checkpoint_and_data
    from modelshield.models import build_model, save_checkpoint
    from modelshield.training import evaluate, seed_everything
    from modelshield.watermark.embedding import WatermarkConfig, embed_watermark
    from modelshield.watermark.key import WatermarkKey

    if Path(args.out).exists() and not args.force:
        raise ConfigError(f"{args.out} already exists; pass --force to overwrite it")
    checkpoint, bundle, dataset = load_checkpoint_and_data(args)
    if args.key_file is not None:
        key = WatermarkKey.load(args.key_file)
    else:
        if args.key_out is None:
            raise ConfigError("pass --key-out PATH to write a new watermark key (or --key-file PATH to reuse one)")
        if Path(args.key_out).exists() and not args.force:
            raise ConfigError(f"{args.key_out} already exists; pass --force to overwrite it")
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
    if args.epochs is not None:
        config = replace(config, epochs=args.epochs)
    if args.lr is not None:
        config = replace(config, lr=args.lr)
    result = embed_watermark(model, bundle.train, key, val=bundle.val, config=config, reference_accuracy=reference,
                             progress=not args.quiet)
    accuracy = evaluate(model, bundle.test).accuracy
    extra = dict(checkpoint.meta.extra)
    extra["watermark"] = {"method": "mea-defender", "config": asdict(config),
                          "val_wsr": result.wsr, "val_wfpr": result.wfpr}
    out = save_checkpoint(args.out, model, replace(checkpoint.meta, accuracy=accuracy, extra=extra))
    key_path = args.key_file
    if args.key_file is None:
        key_path = key.save(args.key_out, overwrite=args.force)
    summary = {"checkpoint": str(args.checkpoint), "watermarked": str(out), "key_file": str(key_path), "dataset": dataset,
               "mode": "from scratch" if args.from_scratch else "fine-tuned", "test_accuracy": accuracy,
               "val_accuracy": result.clean_accuracy, "val_wsr": result.wsr, "val_wfpr": result.wfpr,
               "seconds": round(result.seconds, 1)}
    emit(args, summary, [("watermarked model", str(out)), ("key file (0600)", str(key_path)),
                         ("test accuracy", f"{100 * accuracy:.2f}%"), ("val WSR", f"{100 * result.wsr:.2f}%"),
                         ("val WFPR", f"{100 * result.wfpr:.2f}%"), ("time", f"{result.seconds:.1f} s")])
    return 0


def _suspect(args: argparse.Namespace, num_classes: int):  # type: ignore[no-untyped-def]
    if args.url is None:
        from modelshield.models import load_checkpoint

        if args.checkpoint is None:
            raise ConfigError("name a suspect: a CHECKPOINT, or --url URL --model-name NAME")
        return load_checkpoint(args.checkpoint).model, str(args.checkpoint)
    if args.checkpoint is not None:
        raise ConfigError("give either a CHECKPOINT or --url, not both")
    if not args.model_name:
        raise ConfigError("--url needs --model-name NAME (the served model's name)")
    import modelshield.oracle as oracle_module

    http = getattr(oracle_module, "HttpOracle", None)
    if http is None:
        raise ConfigError("verifying over HTTP needs modelshield.oracle.HttpOracle (the serving feature), not in this build")
    api_key = os.environ.get(args.api_key_env, "")
    if not api_key:
        raise ConfigError(f"no API key for {args.url}: set the environment variable {args.api_key_env}")
    return http(args.url, args.model_name, api_key=api_key, client_id="watermark-verifier"), f"{args.url} ({args.model_name})"


def _cmd_verify(args: argparse.Namespace) -> int:
    from modelshield.cli import emit
    from modelshield.data import load_dataset
    from modelshield.watermark.key import WatermarkKey
    from modelshield.watermark.verify import NullCalibration, VerifyConfig, verify_watermark

    key = WatermarkKey.load(args.key_file)
    suspect, name = _suspect(args, key.num_classes)
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


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``watermark embed`` and ``watermark verify``."""
    from modelshield.cli import _Formatter, add_data_args, add_output_args

    wm = subparsers.add_parser("watermark", help="MEA-Defender: embed an extraction-robust watermark, verify a suspect")
    sub = wm.add_subparsers(dest="watermark_command", required=True, metavar="COMMAND")

    p = sub.add_parser("embed", help="embed a watermark into a checkpoint (fine-tuning it, or retraining from scratch)",
                       formatter_class=_Formatter,
                       epilog="example:\n  modelshield watermark embed model.safetensors --out wm.safetensors --key-out wm.key")
    p.add_argument("checkpoint", type=Path, help="checkpoint (.safetensors) to watermark")
    add_data_args(p, dataset_default=None)
    p.add_argument("--out", required=True, type=Path, help="watermarked checkpoint to write")
    p.add_argument("--key-out", type=Path, default=None, help="new watermark key file to write (mode 0600)")
    p.add_argument("--key-file", type=Path, default=None, help="reuse an existing watermark key file instead")
    p.add_argument("--classes", type=int, nargs=3, metavar=("S_I", "S_J", "TARGET"), default=None,
                   help="source classes and target (default: the dataset's, e.g. 0 1 2)")
    p.add_argument("--orientation", choices=("top-bottom", "left-right"), default="top-bottom", help="half-split orientation")
    p.add_argument("--from-scratch", action="store_true", help="retrain the architecture from scratch with the watermark")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: WatermarkConfig's, or from_scratch()'s)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: WatermarkConfig's, or from_scratch()'s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite --out and --key-out")
    add_output_args(p)
    p.set_defaults(handler=_cmd_embed)

    p = sub.add_parser("verify", help="query a suspect (checkpoint or served model) with fresh composites",
                       formatter_class=_Formatter,
                       epilog="examples:\n  modelshield watermark verify pirate.safetensors --key-file wm.key\n"
                              "  MODELSHIELD_API_KEY=... modelshield watermark verify --url http://host:8000 --model-name m --key-file wm.key")
    p.add_argument("checkpoint", type=Path, nargs="?", default=None, help="suspect checkpoint")
    p.add_argument("--url", default=None, help="base URL of a served suspect (Open Inference Protocol v2)")
    p.add_argument("--model-name", default=None, help="the served model's name")
    p.add_argument("--api-key-env", default=API_KEY_ENV, help="environment variable holding the API key for --url")
    p.add_argument("--key-file", required=True, type=Path, help="watermark key file (mode 0600)")
    add_data_args(p, dataset_default="digits")
    p.add_argument("--split", default="test", choices=("val", "attacker", "test"), help="held-out images for the composites")
    p.add_argument("--samples", type=int, default=1000, help="watermark composites to query")
    p.add_argument("--evasion-samples", type=int, default=1000, help="evasion mixes to query (WFPR)")
    p.add_argument("--wfpr-margin", type=float, default=0.30,
                   help="a positive verdict needs WSR - WFPR >= this (default: VerifyConfig.wfpr_margin; 0 disables, then --evasion-samples may be 0)")
    p.add_argument("--alpha", type=float, default=1e-3, help="significance level")
    p.add_argument("--null-rate", type=float, default=None,
                   help="calibrated null WSR r0 (from independent models); default: the paper's 30%% threshold")
    p.add_argument("--seed", type=int, default=0, help="seed of the composites")
    p.add_argument("--report", type=Path, default=None, help="also write the JSON report here")
    add_output_args(p)
    p.set_defaults(handler=_cmd_verify)
