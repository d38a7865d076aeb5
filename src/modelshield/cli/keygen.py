"""``modelshield keygen``: write a new random 256-bit secret key file (mode 0600)."""

from __future__ import annotations

import argparse
from pathlib import Path

from modelshield.cli._common import Subparsers, add_command, add_output_args, emit

__all__ = ["register"]


def _cmd_keygen(args: argparse.Namespace) -> int:
    from modelshield.keys import SecretKey

    key = SecretKey.generate()
    path = key.save(args.out, overwrite=args.force)
    emit(args, {"key_file": str(path), "fingerprint": key.fingerprint},
         [("key file", f"{path} (mode 0600)"), ("fingerprint", key.fingerprint)])
    return 0


def register(sub: Subparsers) -> None:
    """Add ``keygen``."""
    p = add_command(sub, "keygen", help="write a new random 256-bit secret key file (mode 0600)", examples=[
        "modelshield keygen --out master.key",
        "modelshield lock lenet.safetensors --key-file master.key --out lenet.mslock"])
    p.add_argument("--out", required=True, type=Path, help="key file to create")
    p.add_argument("--force", action="store_true", help="overwrite an existing key file")
    add_output_args(p)
    p.set_defaults(handler=_cmd_keygen)
