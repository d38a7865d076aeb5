"""The ``modelshield`` command line: parse, call the library, map errors to exit codes.

Layout: one module per feature, each with ``register(subparsers)``, over the leaf module :mod:`._common`
(help format, shared options, config-backed options, ``emit``, key and checkpoint loading, subcommand
groups). The feature modules are listed once, in :data:`COMMANDS`, in help order.

Adding a feature's commands (e.g. ``modelshield watermark embed``):

1. write ``modelshield/cli/watermark.py`` with ``register(sub)``; it adds its parsers with
   :func:`._common.add_command` (or a group with :func:`._common.subcommand_group`), declares each option
   that sets a library setting with :func:`._common.add_config_option` (the default comes from the config
   dataclass field or function parameter; never write it twice), and lists any other option's ``dest`` in
   :data:`._common.CLI_ONLY_OPTIONS`; handlers call the library, print with :func:`._common.emit`, return 0;
2. add ``"watermark"`` to :data:`COMMANDS`.

A feature module may use another's public helpers where the features meet: ``evaluate`` takes locked files
through :mod:`.lock`, and ``attack extract`` serves its victim behind the options of :mod:`.defense`
(:func:`.defense.add_defense_args`, which a serving command can reuse).

The method packages (``lock``, ``auth``, ``defense``, ...) contain no argparse and never import this
package (an import-linter contract in ``pyproject.toml`` enforces the layers). Every user error
(:class:`~modelshield.errors.ModelShieldError`) is printed as one line, ``error: ...``, and the process exits
with that error's ``exit_code``; a usage error (unknown option, bad value type) is one line too, exit code 2.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Sequence

from modelshield._version import __version__
from modelshield.cli._common import ArgumentParser, HelpFormatter, one_line_warning
from modelshield.errors import ModelShieldError

__all__ = ["COMMANDS", "build_parser", "main"]

# feature modules of this package, each with register(subparsers), in help order: one line per feature
COMMANDS: tuple[str, ...] = ("train", "evaluate", "keygen", "demo", "bench", "lock", "defense", "attack", "auth", "serve",
                             "watermark")


def build_parser() -> ArgumentParser:
    """The full argument parser: every module in :data:`COMMANDS` registered.

    Example:
        >>> build_parser().parse_args(["keygen", "--out", "k.key"]).force
        False
    """
    parser = ArgumentParser(
        prog="modelshield", formatter_class=HelpFormatter,
        description="Protect trained PyTorch models against theft.",
        epilog="examples:\n  modelshield demo\n  modelshield train --model lenet5 --dataset mnist --data-root DATA --out lenet.safetensors\n"
               "  modelshield keygen --out master.key\n  modelshield bench train --quick",
    )
    parser.add_argument("--version", action="version", version=f"modelshield {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``modelshield`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0), or a usage error already printed as one line (2)
        return exc.code if isinstance(exc.code, int) else 2
    warnings.showwarning = one_line_warning
    try:
        return int(args.handler(args) or 0)
    except ModelShieldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
