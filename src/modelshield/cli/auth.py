"""``modelshield auth embed`` and ``modelshield auth evaluate`` (AuthNet).

The AuthNet key file comes from ``--key-file`` or from an environment variable holding the key file as
base64 (``--key-env``, default ``MODELSHIELD_AUTH_KEY``); never from the command line. Keys are never
printed: only their public fingerprint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modelshield.auth.embedding import AuthConfig
from modelshield.auth.evaluation import evaluate_auth
from modelshield.auth.key import AuthKey
from modelshield.auth.keygen import KeyGenConfig
from modelshield.cli._common import (
    SPLITS,
    Subparsers,
    add_command,
    add_config_option,
    add_data_args,
    add_key_args,
    add_output_args,
    emit,
    load_checkpoint_and_data,
    load_key,
    refuse_overwrite,
    subcommand_group,
)
from modelshield.errors import ConfigError

__all__ = ["register"]

# option -> AuthConfig field, for the fields whose option name differs
_RENAMED = {"bits": "num_bits"}


def _cmd_embed(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from modelshield.auth.embedding import embed
    from modelshield.models import save_checkpoint
    from modelshield.training import evaluate

    refuse_overwrite(args.out, args.key_out, force=args.force)
    if Path(args.out).resolve() == Path(args.key_out).resolve():
        raise ConfigError("--out and --key-out must be different files")
    checkpoint, bundle, dataset = load_checkpoint_and_data(args)
    config = AuthConfig(gate=args.gate, num_bits=args.bits, bit_pool=args.bit_pool, gamma=args.gamma,
                        tail_epochs=args.tail_epochs, tail_lr=args.tail_lr, decoy_ratio=args.decoy_ratio,
                        decoy_keys=args.decoy_keys, near_share=args.near_share, keyed_weight=args.keyed_weight,
                        distill=args.distill, key_images=args.key_images, train_images=args.train_images,
                        seed=args.seed, key=KeyGenConfig(epochs=args.key_epochs, theta=args.key_theta))
    result = embed(checkpoint.model, bundle.train, bundle.val, config=config, progress=not args.quiet)
    clean = evaluate(checkpoint.model, bundle.test).accuracy
    report = evaluate_auth(result.model, result.key, bundle.test, random_keys=0)
    extra = dict(checkpoint.meta.extra)
    extra["auth"] = {"gate": result.split.gate, "gate_choice": result.gate_choice.method, "num_bits": len(result.bits.channels), "config": result.config.to_dict(),
                     "key_fingerprint": result.key.fingerprint, "model_fingerprint": result.key.model_fingerprint,
                     "clean_accuracy": clean, "legit_accuracy": report.legit, "unauthorized_accuracy": report.unauthorized}
    meta = replace(checkpoint.meta, accuracy=report.legit, extra=extra)
    out = save_checkpoint(args.out, result.model, meta)
    key_path = result.key.save(args.key_out, overwrite=args.force)
    summary = {"checkpoint": str(args.checkpoint), "protected": str(out), "key_file": str(key_path), "dataset": dataset,
               "gate": result.split.gate, "gate_choice": result.gate_choice.method, "bits": len(result.bits.channels), "key_fingerprint": result.key.fingerprint,
               "clean_accuracy": clean, "legit_accuracy": report.legit, "unauthorized_accuracy": report.unauthorized,
               "embed_seconds": round(result.timings["total"], 2)}
    emit(args, summary, [
        ("protected checkpoint", str(out)), ("key file", f"{key_path} (mode 0600, fingerprint {result.key.fingerprint})"),
        ("gate", f"{result.split.gate} ({result.gate_choice.method}; {len(result.bits.channels)} bits of "
                 f"{result.split.channels} channels)"),
        ("clean accuracy", f"{100 * clean:.2f}%"), ("with the key", f"{100 * report.legit:.2f}%"),
        ("without the key", f"{100 * report.unauthorized:.2f}%"), ("embedding time", f"{result.timings['total']:.1f} s"),
    ])
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    checkpoint, bundle, dataset = load_checkpoint_and_data(args)
    key = load_key(args.key_file, args.key_env, from_file=AuthKey.load, from_env=AuthKey.from_env, what="AuthNet key")
    key.check_model(checkpoint.model)
    if key.input_shape != checkpoint.meta.input_shape:
        raise ConfigError(f"the key is for {key.input_shape} images but {args.checkpoint} takes {checkpoint.meta.input_shape}")
    report = evaluate_auth(checkpoint.model, key, bundle.split(args.split), random_keys=args.random_keys, seed=args.seed)
    summary = {"checkpoint": str(args.checkpoint), "dataset": dataset, "split": args.split, "key_fingerprint": key.fingerprint,
               **report.to_dict()}
    rows = [("checkpoint", str(args.checkpoint)), ("data", f"{dataset} / {args.split} ({report.total} images)"),
            ("with the key", f"{100 * report.legit:.2f}%"), ("without the key", f"{100 * report.unauthorized:.2f}%")]
    if report.random_keys:
        rows.append((f"{len(report.random_keys)} random keys",
                     f"mean {100 * (report.random_mean or 0):.2f}%, best {100 * (report.random_max or 0):.2f}%"))
    emit(args, summary, rows)
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="checkpoint (.safetensors)")
    add_data_args(p, dataset_default=None)


def register(sub: Subparsers) -> None:
    """Add ``auth embed`` and ``auth evaluate``."""
    group = subcommand_group(sub, "auth", "AuthNet: a model that only works on inputs carrying a secret key", examples=[
        "modelshield auth embed lenet.safetensors --out lenet-auth.safetensors --key-out lenet.authkey",
        "modelshield auth evaluate lenet-auth.safetensors --key-file lenet.authkey"])

    p = add_command(group, "embed", help="protect a checkpoint: protected checkpoint + key file", examples=[
        "modelshield auth embed lenet.safetensors --data-root ../shared/datasets --out lenet-auth.safetensors --key-out lenet.authkey"])
    _add_common(p)
    p.add_argument("--out", required=True, type=Path, help="protected checkpoint to write (.safetensors)")
    p.add_argument("--key-out", required=True, type=Path, help="key file to write (mode 0600)")
    option = {
        "gate": "gate module name, or 'auto' (embedding trials on the validation split, cheapest tail first); default: the zoo "
                "architecture's gate, else auto",
        "bits": "number of authentication bits (default: 1 per 8 gate channels, 2..16)",
        "bit_pool": "draw the bits among this many lowest live channels (default 8x bits, at most every live channel; = --bits: the paper's fixed choice)",
        "gamma": "bit target multiplier",
        "key_epochs": None,
        "key_theta": None,
        "key_images": "generate keys on a subset of N training images",
        "train_images": "fine-tune the tail on a subset of N training images",
        "tail_epochs": "tail fine-tuning epochs (default: the architecture's; ResNet-20 12, small VGG 6, else 8)",
        "tail_lr": "tail learning rate (Adam; default: the architecture's; LeNet-5 2e-3, else 1e-3)",
        "decoy_ratio": "extra negatives under other keys, per training image (0 with --decoy-keys 0: the paper's method)",
        "decoy_keys": "independently generated keys among the decoys (default: the architecture's; small VGG 4, else 2)",
        "near_share": "share of the decoys under partial copies of the key (near misses)",
        "keyed_weight": "loss weight of the keyed samples (negatives weigh 1; default: the architecture's; ResNet-20 4, else 2)",
        "distill": "share of the keyed samples' loss taken from the clean model's soft predictions (0 = true labels only)",
        "seed": "seed for a reproducible key (default: fresh randomness; a known seed lets anyone with the data "
                "regenerate the key)",
    }
    for name, help_text in option.items():
        if name == "key_epochs":
            add_config_option(p, KeyGenConfig, "epochs", "--key-epochs", help="key-generation epochs")
        elif name == "key_theta":
            add_config_option(p, KeyGenConfig, "theta", "--key-theta",
                              help="bound on the key's offset in normalised space (default: the architecture's; LeNet-5 1.0, "
                                   "else the paper's 0.5)")
        else:
            add_config_option(p, AuthConfig, _RENAMED.get(name, name), f"--{name.replace('_', '-')}", dest=name,
                              help=help_text)
    p.add_argument("--force", action="store_true", help="overwrite --out and --key-out")
    add_output_args(p)
    p.set_defaults(handler=_cmd_embed)

    p = add_command(group, "evaluate", help="accuracy with the key, without it, and with random keys", examples=[
        "modelshield auth evaluate lenet-auth.safetensors --key-file lenet.authkey --random-keys 10"])
    _add_common(p)
    add_key_args(p, env=(AuthKey.from_env, "variable"), env_help="environment variable holding the key file as base64",
                 file_help="AuthNet key file (mode 0600) written by `modelshield auth embed`")
    p.add_argument("--split", default="test", choices=SPLITS)
    add_config_option(p, evaluate_auth, "random_keys", help="random keys to try")
    add_config_option(p, evaluate_auth, "seed", help="seed of the random keys")
    add_output_args(p)
    p.set_defaults(handler=_cmd_evaluate)
