"""``modelshield lock`` / ``unlock``, and locked files in ``modelshield evaluate`` (Deep-Lock).

Keys come from ``--key-file`` or an environment variable (``--key-env``, default ``MODELSHIELD_KEY``);
passphrases only from an environment variable (``--passphrase-env``). Never from the command line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from modelshield.cli._common import (
    Subparsers,
    add_command,
    add_config_option,
    add_key_args,
    add_output_args,
    check_input_shape,
    emit,
    load_key,
    refuse_overwrite,
)
from modelshield.errors import ConfigError
from modelshield.keys import SecretKey, load_secret_key
from modelshield.lock import LockConfig, LockedModel, LockKey, Passphrase, checkpoint_meta, lock_model, unlock_model
from modelshield.lock.format import SCHEMES

__all__ = ["add_lock_key_args", "add_locked_evaluate_args", "evaluate_locked_file", "register"]

_KEY_FILE_HELP = "key file (mode 0600) written by `modelshield keygen`"


def _key_from_args(args: argparse.Namespace, *, required: bool = True) -> LockKey | None:
    env_name = getattr(args, "passphrase_env", None)
    if env_name:
        if getattr(args, "key_file", None):
            raise ConfigError("give either --key-file or --passphrase-env, not both")
        value = os.environ.get(env_name)
        if not value:
            raise ConfigError(f"environment variable {env_name} (from --passphrase-env) is not set")
        return Passphrase(value)
    if not required and args.key_file is None and not os.environ.get(args.key_env):
        return None
    return load_key(args.key_file, args.key_env, from_file=SecretKey.load, from_env=SecretKey.from_env)


def add_lock_key_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, required: bool = True) -> None:
    """``--key-file``, ``--key-env`` and ``--passphrase-env``: where a Deep-Lock key comes from."""
    add_key_args(parser, env=(load_secret_key, "env"), required=required,
                 file_help=_KEY_FILE_HELP if required else "unlock a locked file with this key file before evaluating")
    parser.add_argument("--passphrase-env", default=None, metavar="VAR",
                        help="environment variable holding a passphrase (scrypt) instead of a key file")


def _cmd_lock(args: argparse.Namespace) -> int:
    from modelshield.models import load_checkpoint

    config = LockConfig(scheme=args.scheme, rounds=args.rounds)
    key = _key_from_args(args)
    refuse_overwrite(args.out, force=args.force)
    checkpoint = load_checkpoint(args.checkpoint)
    locked = lock_model(checkpoint.model, key, config, meta=checkpoint.meta)  # type: ignore[arg-type]
    path = locked.save(args.out)
    summary = {"checkpoint": str(args.checkpoint), "locked": str(path), "scheme": config.scheme, "rounds": config.rounds,
               "tensors": len(locked.tensor_names), "payload_bytes": locked.payload_bytes,
               "kdf": locked.header.kdf.name}
    emit(args, summary, [("locked file", str(path)), ("scheme", f"{config.scheme}, {config.rounds} round(s)"),
                         ("tensors", f"{len(locked.tensor_names)} ({locked.payload_bytes} bytes)")])
    return 0


def _cmd_unlock(args: argparse.Namespace) -> int:
    from modelshield.models import save_checkpoint

    refuse_overwrite(args.out, force=args.force)
    locked = LockedModel.load(args.locked)
    meta = checkpoint_meta(locked)
    if meta is None:
        raise ConfigError(f"{args.locked} holds no checkpoint metadata (locked from a bare state dict); "
                          "unlock it with modelshield.lock.unlock_state_dict in Python")
    key = _key_from_args(args)
    model = unlock_model(locked, key)  # type: ignore[arg-type]
    path = save_checkpoint(args.out, model, meta)
    emit(args, {"locked": str(args.locked), "checkpoint": str(path), "architecture": meta.architecture},
         [("checkpoint", str(path)), ("architecture", meta.architecture)])
    return 0


def add_locked_evaluate_args(parser: argparse.ArgumentParser) -> None:
    """Key options of ``modelshield evaluate`` for locked files (all optional)."""
    group = parser.add_argument_group("locked files (modelshield lock)")
    add_lock_key_args(group, required=False)
    group.add_argument("--as-is", action="store_true",
                       help="evaluate a locked file without its key (the locked bits as weights: the thief's view)")


def evaluate_locked_file(args: argparse.Namespace) -> int:
    """``modelshield evaluate LOCKED``: with the key if one is given (MAC checked), else as-is."""
    from modelshield.data import load_dataset
    from modelshield.lock.evaluation import evaluate_locked

    locked = LockedModel.load(args.checkpoint)
    meta = checkpoint_meta(locked)
    if meta is None:
        raise ConfigError(f"{args.checkpoint} holds no checkpoint metadata, so its architecture is unknown")
    key = None if getattr(args, "as_is", False) else _key_from_args(args, required=False)
    dataset = args.dataset or meta.dataset
    bundle = load_dataset(dataset, args.data_root)
    check_input_shape(meta.input_shape, bundle.info.input_shape, str(args.checkpoint), dataset)
    result = evaluate_locked(locked, bundle.split(args.split), key=key)
    view = {"as-is": "locked, as-is (no key)", "unlocked": "unlocked with the key (MAC verified)"}[result.view]
    summary = {"checkpoint": str(args.checkpoint), "locked": True, "view": result.view, "dataset": dataset,
               "split": args.split, "accuracy": result.accuracy, "correct": result.correct, "total": result.total,
               "nonfinite": result.nonfinite_rows, "nonfinite_weights": result.nonfinite_weights}
    emit(args, summary, [("locked file", str(args.checkpoint)), ("view", view),
                         ("data", f"{dataset} / {args.split} ({result.total} images)"),
                         ("accuracy", f"{100 * result.accuracy:.2f}%"),
                         ("non-finite outputs", f"{result.nonfinite_rows} rows (scored wrong)")])
    return 0


def register(sub: Subparsers) -> None:
    """Add ``lock`` and ``unlock``."""
    p = add_command(sub, "lock", help="lock every weight of a checkpoint under a secret key (Deep-Lock)", examples=[
        "modelshield keygen --out master.key",
        "modelshield lock lenet.safetensors --key-file master.key --out lenet.mslock",
        "MODELSHIELD_KEY=... modelshield lock lenet.safetensors --out lenet.mslock"])
    p.add_argument("checkpoint", type=Path, help="checkpoint to lock (.safetensors from `modelshield train`)")
    p.add_argument("--out", required=True, type=Path, help="locked file to write (.mslock)")
    add_config_option(p, LockConfig, "scheme", choices=SCHEMES,
                      help="key schedule: ctr (AES-256-CTR) or aes-expansion (paper-faithful, weak)")
    add_config_option(p, LockConfig, "rounds", help="S-box rounds (1..16)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    add_lock_key_args(p)
    add_output_args(p)
    p.set_defaults(handler=_cmd_lock)

    p = add_command(sub, "unlock", help="check and unlock a locked file back into a checkpoint", examples=[
        "modelshield unlock lenet.mslock --key-file master.key --out lenet.safetensors"])
    p.add_argument("locked", type=Path, help="locked file (.mslock)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (.safetensors)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    add_lock_key_args(p)
    add_output_args(p)
    p.set_defaults(handler=_cmd_unlock)
