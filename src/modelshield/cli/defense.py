"""``modelshield defense fit`` (QUEEN's artefacts for a checkpoint), and the defense options of any command
that answers queries behind a defense (:func:`add_defense_args`, :func:`defense_from_args`; ``attack extract``).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

from modelshield.cli._common import (
    Subparsers,
    add_command,
    add_config_option,
    add_data_args,
    add_output_args,
    emit,
    load_checkpoint_and_data,
    subcommand_group,
)
from modelshield.defense.baselines import GaussianNoiseDefense, ReverseSigmoidDefense, RoundingDefense
from modelshield.defense.base import Defense
from modelshield.defense.queen import OUT_OF_REGION, QueenConfig
from modelshield.defense.queen_fit import QueenFitConfig
from modelshield.defense.registry import DEFENSE_NAMES, build_defense, canonical_defense_name
from modelshield.errors import ConfigError

__all__ = [
    "add_defense_args",
    "baseline_settings_from_args",
    "canonical_defense_name",
    "defense_from_args",
    "queen_config_from_args",
    "register",
]


def add_defense_args(p: argparse.ArgumentParser) -> None:
    """``--defense`` and the settings of every defense (defaults from their config classes).

    The command also needs a ``--seed`` option; :func:`defense_from_args` seeds QUEEN and the noise with it.
    """
    p.add_argument("--defense", default="none", help=", ".join(DEFENSE_NAMES))
    p.add_argument("--queen", type=Path, default=None, help="QUEEN artefacts written by `modelshield defense fit`")
    add_config_option(p, QueenConfig, "novelty_radius", "--queen-radius",
                      help="QUEEN novelty radius r (unit-circle mapping space)")
    add_config_option(p, QueenConfig, "threshold_queries", "--queen-threshold-queries",
                      help="QUEEN threshold: novel in-region queries per class before reversing (0 = from the start)")
    p.add_argument("--queen-threshold", type=float, default=None,
                   help="QUEEN coverage threshold t instead of the count (the released scripts used 0.2; inf = never reverse)")
    add_config_option(p, QueenConfig, "beta", "--queen-beta", help="QUEEN region radius R_c = beta * rho_c")
    add_config_option(p, QueenConfig, "shadows_per_answer", "--queen-shadows",
                      help="shadow models averaged per reversed answer (k)")
    add_config_option(p, QueenConfig, "reverse_keeps_label", "--queen-keep-label", action="store_true",
                      help="QUEEN label-preserving REVERSE (reversed answers keep the model's top-1)")
    add_config_option(p, QueenConfig, "out_of_region", "--queen-out-of-region", choices=OUT_OF_REGION,
                      help="QUEEN answer to queries outside every sensitive region")
    add_config_option(p, QueenConfig, "window_seconds", "--queen-window", metavar="SECONDS",
                      help="QUEEN coverage starts over every this many seconds (default: kept forever)")
    add_config_option(p, QueenConfig, "young_client_queries", "--queen-young-queries", metavar="N",
                      help="QUEEN sybil-resistant mode: clients with fewer than N queries answered share one pooled state")
    add_config_option(p, QueenConfig, "pool_threshold_queries", "--queen-pool-threshold",
                      help="QUEEN pooled state's threshold (novel in-region queries per class)")
    p.add_argument("--state-db", type=Path, default=None, help="QUEEN per-client state in this SQLite file (default: in memory)")
    add_config_option(p, RoundingDefense, "decimals", help="rounding: decimals kept")
    add_config_option(p, ReverseSigmoidDefense, "beta", "--rs-beta", help="reverse sigmoid beta")
    add_config_option(p, ReverseSigmoidDefense, "gamma", "--rs-gamma", help="reverse sigmoid gamma")
    add_config_option(p, GaussianNoiseDefense, "sigma", help="gaussian: noise standard deviation")


def queen_config_from_args(args: argparse.Namespace) -> QueenConfig:
    """QUEEN's online settings from the ``--queen-*`` options and ``--seed`` (the rest: QueenConfig's defaults)."""
    config = replace(QueenConfig(), novelty_radius=args.queen_radius, beta=args.queen_beta,
                     shadows_per_answer=args.queen_shadows, seed=args.seed, reverse_keeps_label=args.queen_keep_label,
                     out_of_region=args.queen_out_of_region, window_seconds=args.queen_window,
                     young_client_queries=args.queen_young_queries, pool_threshold_queries=args.queen_pool_threshold)
    if args.queen_threshold is not None:  # by coverage instead of by count
        return replace(config, coverage_threshold=args.queen_threshold, threshold_queries=None)
    return replace(config, threshold_queries=args.queen_threshold_queries)


def baseline_settings_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The settings of the baseline defense named by ``--defense`` (empty for those without settings)."""
    settings: dict[str, dict[str, object]] = {
        "rounding": {"decimals": args.decimals}, "reverse-sigmoid": {"beta": args.rs_beta, "gamma": args.rs_gamma},
        "gaussian": {"sigma": args.sigma, "seed": args.seed}}
    return settings.get(canonical_defense_name(args.defense), {})


def defense_from_args(args: argparse.Namespace, model: object) -> Defense:
    """Build the defense named by ``--defense`` for ``model``.

    Raises:
        ConfigError: unknown defense, bad setting, or ``queen`` without ``--queen``.
    """
    name = canonical_defense_name(args.defense)
    if name == "queen":
        from modelshield.defense.queen_artifacts import load_queen_artifacts
        from modelshield.state import SQLiteStateStore

        if args.queen is None:
            raise ConfigError("--defense queen needs --queen FILE (write it with `modelshield defense fit`)")
        store = SQLiteStateStore(args.state_db) if args.state_db is not None else None
        return build_defense("queen", model=model, artifacts=load_queen_artifacts(args.queen),  # type: ignore[arg-type]
                             queen=queen_config_from_args(args), store=store)
    return build_defense(name, **baseline_settings_from_args(args))


def _cmd_fit(args: argparse.Namespace) -> int:
    from modelshield.defense.queen_fit import fit_queen

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


def register(sub: Subparsers) -> None:
    """Add ``defense fit``."""
    group = subcommand_group(sub, "defense", "extraction defenses (QUEEN)", examples=[
        "modelshield defense fit lenet.safetensors --data-root ../shared/datasets --out queen.safetensors"])
    p = add_command(group, "fit", help="fit QUEEN (mapping network, sensitive regions, shadow models) for a checkpoint",
                    examples=["modelshield defense fit lenet.safetensors --data-root ../shared/datasets --out queen.safetensors"])
    p.add_argument("checkpoint", type=Path, help="the protected model's checkpoint")
    add_data_args(p, dataset_default=None)
    p.add_argument("--out", required=True, type=Path, help="artefact file to write (.safetensors)")
    add_config_option(p, QueenFitConfig, "mapping_epochs", help="epochs of supervised contrastive training of the mapping")
    add_config_option(p, QueenFitConfig, "num_shadows", "--shadows", help="number of shadow models")
    add_config_option(p, QueenFitConfig, "shadow_samples", help="images per shadow model (one epoch; fewer = weaker)")
    add_config_option(p, QueenFitConfig, "shadow_architecture", "--shadow-arch", help="softmax (cheap) or a zoo name")
    add_config_option(p, QueenFitConfig, "shadow_lr", help="shadow learning rate")
    add_config_option(p, QueenFitConfig, "seed", help="seeds everything the fit draws")
    add_output_args(p)
    p.set_defaults(handler=_cmd_fit)
