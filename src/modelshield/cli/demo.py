"""``modelshield demo``: the zero-setup tour on the bundled digits (:mod:`modelshield.demo`)."""

from __future__ import annotations

import argparse

from modelshield.cli._common import Subparsers, add_command, add_config_option
from modelshield.demo import run_demo

__all__ = ["register"]


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(seed=args.seed, quiet=args.quiet)
    return 0


def register(sub: Subparsers) -> None:
    """Add ``demo``."""
    p = add_command(sub, "demo", help="zero-setup demo on the bundled digits", examples=["modelshield demo"])
    add_config_option(p, run_demo, "seed", help="demo seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_demo)
