"""``modelshield bench SUITE``: run a benchmark suite, write ``bench/results/<suite>.{json,md,png}``."""

from __future__ import annotations

import argparse
import sys

from modelshield.bench import SUITES, load_suite
from modelshield.bench.harness import BenchContext, run_suite
from modelshield.cli._common import Subparsers, add_command, add_config_option, add_output_args, emit

__all__ = ["register"]


def _cmd_bench(args: argparse.Namespace) -> int:
    module = load_suite(args.suite)
    ctx = BenchContext(args.suite, quick=args.quick, seed=args.seed, data_root=args.data_root, root=args.root,
                       progress=not args.quiet, fresh=args.fresh)
    paths = run_suite(module, ctx, ["modelshield", *sys.argv[1:]])
    emit(args, {k: str(v) for k, v in paths.items()}, [(k, str(v)) for k, v in paths.items()])
    return 0


def register(sub: Subparsers) -> None:
    """Add ``bench``."""
    p = add_command(sub, "bench", help="run a benchmark suite, write bench/results/<suite>.{json,md,png}", examples=[
        "modelshield bench train --data-root ../shared/datasets", "modelshield bench train --quick"])
    p.add_argument("suite", help=", ".join(SUITES))
    add_config_option(p, BenchContext, "quick", action="store_true", help="reduced grid (minutes)")
    add_config_option(p, BenchContext, "data_root", type=str,
                      help="folder holding the datasets (default: $MODELSHIELD_DATA)")
    add_config_option(p, BenchContext, "seed", type=int, help="base seed")
    add_config_option(p, BenchContext, "fresh", action="store_true",
                      help="discard this suite's cached cells (trained models are kept)")
    add_config_option(p, BenchContext, "root", type=str, help="folder for cache/ and results/")
    add_output_args(p)
    p.set_defaults(handler=_cmd_bench)
