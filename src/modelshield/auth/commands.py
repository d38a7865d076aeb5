"""CLI commands ``modelshield auth embed`` and ``modelshield auth evaluate``.

The AuthNet key file comes from ``--key-file`` or from an environment variable holding the key file as
base64 (``--key-env``, default ``MODELSHIELD_AUTH_KEY``); never from the command line. Keys are never
printed: only their public fingerprint.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from modelshield.auth.key import AUTH_KEY_ENV, AuthKey
from modelshield.errors import ConfigError

__all__ = ["load_auth_key", "register"]


def load_auth_key(key_file: str | os.PathLike[str] | None, env: str = AUTH_KEY_ENV) -> AuthKey:
    """The AuthNet key from ``key_file`` if given, else from the environment variable ``env`` (base64 file)."""
    if key_file is not None:
        return AuthKey.load(key_file)
    if os.environ.get(env):
        return AuthKey.from_env(env)
    raise ConfigError(f"no AuthNet key given: pass --key-file PATH or set the environment variable {env}")


def _cmd_embed(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from modelshield.auth.embedding import AuthConfig, embed
    from modelshield.auth.evaluation import evaluate_auth
    from modelshield.auth.keygen import KeyGenConfig
    from modelshield.cli import emit, load_checkpoint_and_data
    from modelshield.models import save_checkpoint
    from modelshield.training import evaluate

    for path in (args.out, args.key_out):
        if Path(path).exists() and not args.force:
            raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    if Path(args.out).resolve() == Path(args.key_out).resolve():
        raise ConfigError("--out and --key-out must be different files")
    checkpoint, bundle, dataset = load_checkpoint_and_data(args)
    config = AuthConfig(gate=args.gate, num_bits=args.bits, bit_pool=args.bit_pool, gamma=args.gamma,
                        tail_epochs=args.tail_epochs, tail_lr=args.tail_lr, decoy_ratio=args.decoy_ratio,
                        decoy_keys=args.decoy_keys, near_share=args.near_share, keyed_weight=args.keyed_weight,
                        distill=args.distill, key_images=args.key_images, train_images=args.train_images,
                        seed=args.seed, key=KeyGenConfig(epochs=args.key_epochs))
    result = embed(checkpoint.model, bundle.train, bundle.val, config=config, progress=not args.quiet)
    clean = evaluate(checkpoint.model, bundle.test).accuracy
    report = evaluate_auth(result.model, result.key, bundle.test, random_keys=0)
    extra = dict(checkpoint.meta.extra)
    extra["auth"] = {"gate": result.split.gate, "gate_choice": result.gate_choice.method, "num_bits": len(result.bits.channels), "config": config.to_dict(),
                     "key_fingerprint": result.key.fingerprint, "model_fingerprint": result.key.model_fingerprint,
                     "clean_accuracy": clean, "legit_accuracy": report.legit, "unauthorized_accuracy": report.unauthorized}
    meta = replace(checkpoint.meta, accuracy=report.legit, extra=extra)
    out = save_checkpoint(args.out, result.model, meta)
    key_path = result.key.save(args.key_out, overwrite=args.force)
    summary = {"checkpoint": str(args.checkpoint), "protected": str(out), "key_file": str(key_path), "dataset": dataset,
               "gate": result.split.gate, "bits": len(result.bits.channels), "key_fingerprint": result.key.fingerprint,
               "clean_accuracy": clean, "legit_accuracy": report.legit, "unauthorized_accuracy": report.unauthorized,
               "embed_seconds": round(result.timings["total"], 2)}
    emit(args, summary, [
        ("protected checkpoint", str(out)), ("key file", f"{key_path} (mode 0600, fingerprint {result.key.fingerprint})"),
        ("gate", f"{result.split.gate} ({len(result.bits.channels)} bits of {result.split.channels} channels)"),
        ("clean accuracy", f"{100 * clean:.2f}%"), ("with the key", f"{100 * report.legit:.2f}%"),
        ("without the key", f"{100 * report.unauthorized:.2f}%"), ("embedding time", f"{result.timings['total']:.1f} s"),
    ])
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from modelshield.auth.evaluation import evaluate_auth
    from modelshield.cli import emit, load_checkpoint_and_data

    checkpoint, bundle, dataset = load_checkpoint_and_data(args)
    key = load_auth_key(args.key_file, args.key_env)
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
    from modelshield.cli import add_data_args

    p.add_argument("checkpoint", type=Path, help="checkpoint (.safetensors)")
    add_data_args(p, dataset_default=None)


def _add_key_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key-file", default=None, help="AuthNet key file (mode 0600) written by `modelshield auth embed`")
    p.add_argument("--key-env", default=AUTH_KEY_ENV,
                   help="environment variable holding the key file as base64, used when --key-file is not given")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``auth embed`` and ``auth evaluate`` (``embed``'s defaults are :class:`AuthConfig`'s fields)."""
    from modelshield.auth.embedding import AuthConfig
    from modelshield.cli import _Formatter, add_output_args

    defaults = AuthConfig()

    auth = subparsers.add_parser("auth", help="AuthNet: a model that only works on inputs carrying a secret key",
                                 formatter_class=_Formatter,
                                 epilog="examples:\n  modelshield auth embed lenet.safetensors --out lenet-auth.safetensors --key-out lenet.authkey\n"
                                        "  modelshield auth evaluate lenet-auth.safetensors --key-file lenet.authkey")
    sub = auth.add_subparsers(dest="auth_command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("embed", help="protect a checkpoint: protected checkpoint + key file", formatter_class=_Formatter,
                       epilog="example:\n  modelshield auth embed lenet.safetensors --data-root ../shared/datasets "
                              "--out lenet-auth.safetensors --key-out lenet.authkey")
    _add_common(p)
    p.add_argument("--out", required=True, type=Path, help="protected checkpoint to write (.safetensors)")
    p.add_argument("--key-out", required=True, type=Path, help="key file to write (mode 0600)")
    p.add_argument("--gate", default=defaults.gate,
                   help="gate module name, or 'auto' (short trials on the validation split); default: the zoo "
                        "architecture's gate, else auto")
    p.add_argument("--bits", type=int, default=defaults.num_bits, help="number of authentication bits (default: 1 per 8 gate channels, 2..16)")
    p.add_argument("--bit-pool", type=int, default=defaults.bit_pool,
                   help="draw the bits among this many lowest live channels (default 4x bits; = --bits: the paper's fixed choice)")
    p.add_argument("--gamma", type=float, default=defaults.gamma, help="bit target multiplier")
    p.add_argument("--key-epochs", type=int, default=defaults.key.epochs, help="key-generation epochs")
    p.add_argument("--key-images", type=int, default=defaults.key_images, help="generate keys on a subset of N training images")
    p.add_argument("--train-images", type=int, default=defaults.train_images, help="fine-tune the tail on a subset of N training images")
    p.add_argument("--tail-epochs", type=int, default=defaults.tail_epochs, help="tail fine-tuning epochs")
    p.add_argument("--tail-lr", type=float, default=defaults.tail_lr, help="tail learning rate (Adam)")
    p.add_argument("--decoy-ratio", type=float, default=defaults.decoy_ratio,
                   help="extra negatives under other keys, per training image (0 with --decoy-keys 0: the paper's method)")
    p.add_argument("--decoy-keys", type=int, default=defaults.decoy_keys, help="independently generated keys among the decoys")
    p.add_argument("--near-share", type=float, default=defaults.near_share,
                   help="share of the decoys under partial copies of the key (near misses)")
    p.add_argument("--keyed-weight", type=float, default=defaults.keyed_weight,
                   help="loss weight of the keyed samples (negatives weigh 1)")
    p.add_argument("--distill", type=float, default=defaults.distill,
                   help="share of the keyed samples' loss taken from the clean model's soft predictions (0 = true labels only)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for a reproducible key (default: fresh randomness; a known seed lets anyone with the data regenerate the key)")
    p.add_argument("--force", action="store_true", help="overwrite --out and --key-out")
    add_output_args(p)
    p.set_defaults(handler=_cmd_embed)

    p = sub.add_parser("evaluate", help="accuracy with the key, without it, and with random keys", formatter_class=_Formatter,
                       epilog="example:\n  modelshield auth evaluate lenet-auth.safetensors --key-file lenet.authkey --random-keys 10")
    _add_common(p)
    _add_key_source(p)
    p.add_argument("--split", default="test", choices=("train", "val", "attacker", "test"))
    p.add_argument("--random-keys", type=int, default=10, help="random keys to try")
    p.add_argument("--seed", type=int, default=0, help="seed of the random keys")
    add_output_args(p)
    p.set_defaults(handler=_cmd_evaluate)
