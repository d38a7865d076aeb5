"""``modelshield defense fit``: build QUEEN's artefacts for a checkpoint.

Also holds the shared QUEEN/defense command-line options used by ``modelshield attack extract``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from modelshield.errors import ConfigError

__all__ = ["add_defense_args", "defense_from_args", "register", "subcommand_group"]


def subcommand_group(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse._SubParsersAction:
    """The sub-subcommand group ``name`` (created once; shared by features adding commands to it)."""
    if name in sub.choices:
        parser = sub.choices[name]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
        raise ConfigError(f"command {name!r} exists without subcommands")
    parser = sub.add_parser(name, help=help_text)
    group = parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
    group.required = True
    return group


def add_defense_args(p: argparse.ArgumentParser) -> None:
    """``--defense`` and the settings of every defense."""
    from modelshield.defense.registry import DEFENSE_NAMES

    p.add_argument("--defense", default="none", help=", ".join(DEFENSE_NAMES))
    p.add_argument("--queen", type=Path, default=None, help="QUEEN artefacts written by `modelshield defense fit`")
    p.add_argument("--queen-radius", type=float, default=1e-4, help="QUEEN novelty radius r (unit-circle mapping space)")
    p.add_argument("--queen-threshold-queries", type=int, default=50,
                   help="QUEEN threshold: novel in-region queries per class before reversing (0 = from the start)")
    p.add_argument("--queen-threshold", type=float, default=None,
                   help="QUEEN coverage threshold t instead of the count (the released scripts used 0.2; inf = never reverse)")
    p.add_argument("--queen-beta", type=float, default=1.5, help="QUEEN region radius R_c = beta * rho_c")
    p.add_argument("--queen-shadows", type=int, default=5, help="shadow models averaged per reversed answer (k)")
    p.add_argument("--state-db", type=Path, default=None, help="QUEEN per-client state in this SQLite file (default: in memory)")
    p.add_argument("--decimals", type=int, default=1, help="rounding: decimals kept")
    p.add_argument("--rs-beta", type=float, default=0.7, help="reverse sigmoid beta")
    p.add_argument("--rs-gamma", type=float, default=0.4, help="reverse sigmoid gamma")
    p.add_argument("--sigma", type=float, default=0.1, help="gaussian: noise standard deviation")


def defense_from_args(args: argparse.Namespace, model: object) -> object:
    """Build the defense named by ``--defense`` for ``model``."""
    from modelshield.defense.queen import QueenConfig
    from modelshield.defense.queen_artifacts import load_queen_artifacts
    from modelshield.defense.registry import build_defense
    from modelshield.state import SQLiteStateStore

    name = args.defense.lower()
    if name == "queen":
        if args.queen is None:
            raise ConfigError("--defense queen needs --queen FILE (write it with `modelshield defense fit`)")
        by_coverage = args.queen_threshold is not None
        config = QueenConfig(novelty_radius=args.queen_radius,
                             coverage_threshold=args.queen_threshold if by_coverage else 0.2,
                             threshold_queries=None if by_coverage else args.queen_threshold_queries,
                             beta=args.queen_beta, shadows_per_answer=args.queen_shadows, seed=args.seed)
        store = SQLiteStateStore(args.state_db) if args.state_db is not None else None
        return build_defense("queen", model=model, artifacts=load_queen_artifacts(args.queen), queen=config, store=store)  # type: ignore[arg-type]
    settings = {"rounding": {"decimals": args.decimals}, "reverse-sigmoid": {"beta": args.rs_beta, "gamma": args.rs_gamma},
                "gaussian": {"sigma": args.sigma, "seed": args.seed}}
    from modelshield.defense.registry import _ALIASES

    return build_defense(name, **settings.get(_ALIASES.get(name, name), {}))


def _cmd_fit(args: argparse.Namespace) -> int:
    from modelshield.cli import emit, load_checkpoint_and_data
    from modelshield.defense.queen_fit import QueenFitConfig, fit_queen

    checkpoint, bundle, dataset = load_checkpoint_and_data(args)
    config = QueenFitConfig(mapping_epochs=args.mapping_epochs, num_shadows=args.shadows, shadow_samples=args.shadow_samples,
                            shadow_architecture=args.shadow_arch, shadow_lr=args.shadow_lr, seed=args.seed)
    art = fit_queen(checkpoint.model, bundle.train, config=config, val=bundle.val, progress=not args.quiet)
    path = art.save(args.out)
    rec = art.record
    summary = {"artefacts": str(path), "checkpoint": str(args.checkpoint), "dataset": dataset,
               "train_samples": rec["train_samples"], "fit_seconds": rec["fit_seconds"],
               "final_mapping_loss": rec["mapping_loss"][-1], "region_spread": rec["region_spread"],
               "shadow_val_accuracy": rec.get("shadow_val_accuracy"), "val_in_region_fraction": rec.get("val_in_region_fraction")}
    accs = rec.get("shadow_val_accuracy") or []
    emit(args, summary, [
        ("artefacts", str(path)), ("fitted on", f"{dataset} train ({rec['train_samples']} images)"),
        ("mapping loss", f"{rec['mapping_loss'][-1]:.4f} after {config.mapping_epochs} epochs"),
        ("shadow models", f"{config.num_shadows} x {config.shadow_architecture}, val accuracy "
                          + (f"{100 * min(accs):.1f}-{100 * max(accs):.1f}%" if accs else "n/a")),
        ("in-region (val)", f"{100 * rec.get('val_in_region_fraction', math.nan):.1f}%"),
        ("wall time", f"{rec['fit_seconds']:.1f} s"),
    ])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``defense fit``."""
    from modelshield.cli import _Formatter, add_data_args, add_output_args

    group = subcommand_group(sub, "defense", "extraction defenses (QUEEN)")
    p = group.add_parser("fit", help="fit QUEEN (mapping network, sensitive regions, shadow models) for a checkpoint",
                         formatter_class=_Formatter,
                         epilog="example:\n  modelshield defense fit lenet.safetensors --data-root ../shared/datasets --out queen.safetensors")
    p.add_argument("checkpoint", type=Path, help="the protected model's checkpoint")
    add_data_args(p, dataset_default=None)
    p.add_argument("--out", required=True, type=Path, help="artefact file to write (.safetensors)")
    p.add_argument("--mapping-epochs", type=int, default=20)
    p.add_argument("--shadows", type=int, default=10, help="number of shadow models")
    p.add_argument("--shadow-samples", type=int, default=300, help="images per shadow model (one epoch; fewer = weaker)")
    p.add_argument("--shadow-arch", default="softmax", help="softmax (cheap) or a zoo name")
    p.add_argument("--shadow-lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p)
    p.set_defaults(handler=_cmd_fit)
