"""``modelshield attack extract``: run an extraction attack against a checkpoint behind a defense."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modelshield._io import atomic_write_bytes
from modelshield.errors import ConfigError

__all__ = ["register"]


def _cmd_extract(args: argparse.Namespace) -> int:
    from modelshield.attacks.extraction import PirateConfig, build_attack, query_pool, run_extraction
    from modelshield.cli import emit, load_checkpoint_and_data
    from modelshield.defense import ClientPolicy, ProtectedModel
    from modelshield.defense.cli import defense_from_args
    from modelshield.oracle import HttpOracle, ModelOracle, Oracle, load_api_key
    from modelshield.training import seed_everything

    if args.budget < 1:
        raise ConfigError(f"--budget must be >= 1, got {args.budget}")
    checkpoint, bundle, dataset = load_checkpoint_and_data(args)
    pool = query_pool(dataset, args.pool, args.data_root, surrogate=args.surrogate)
    oracle: Oracle
    if args.url is not None:  # the live server applies its own defense and the client's policy; the checkpoint scores fidelity
        if args.defense != "none" or args.labels != "soft":
            raise ConfigError("with --url the defense and the output mode are the server's (the client's policy): "
                              "leave out --defense and --labels")
        oracle = HttpOracle(args.url, args.model_name, api_key=load_api_key(args.api_key_file, args.api_key_env),
                            client_id=args.client_id)
        described = {"name": "remote", "url": args.url, "model_name": args.model_name}
    else:
        defense = defense_from_args(args, checkpoint.model)
        policy = ClientPolicy(output="label" if args.labels == "hard" else "probabilities", budget=args.budget)
        oracle = ModelOracle(ProtectedModel(checkpoint.model, defense), client_id=args.client_id, policy=policy)  # type: ignore[arg-type]
        described = defense.describe()  # type: ignore[attr-defined]
    seed_everything(args.seed)
    attack = build_attack(args.attack, budget=args.budget, seed=args.seed)
    pirate = PirateConfig(architecture=args.pirate_arch, epochs=args.pirate_epochs, seed=args.seed)
    result = run_extraction(attack, oracle, pool, bundle.test, victim=checkpoint.model, pirate=pirate, progress=not args.quiet)
    summary = {**result.summary(), "defense": described, "checkpoint": str(args.checkpoint),
               "dataset": dataset, "victim_accuracy": checkpoint.meta.accuracy, "seed": args.seed}
    if args.out is not None:
        atomic_write_bytes(args.out, (json.dumps(summary, indent=1) + "\n").encode())
    emit(args, summary, [
        ("attack", f"{result.attack} ({result.labels}-label), {result.queries} queries from {result.pool}"),
        ("defense", args.defense if args.url is None else f"the server's ({args.url}, model {args.model_name})"),
        ("pirate", f"{result.pirate_architecture}: test accuracy {100 * result.accuracy:.2f}%, "
                   f"fidelity {100 * (result.fidelity or 0):.2f}%"),
        ("victim", f"test accuracy {100 * (checkpoint.meta.accuracy or float('nan')):.2f}%"),
        ("wall time", f"queries {result.query_seconds:.1f} s, pirate training {result.train_seconds:.1f} s"),
        *([("result", str(args.out))] if args.out is not None else []),
    ])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``attack extract``."""
    from modelshield.attacks.extraction.run import ATTACK_NAMES
    from modelshield.cli import _Formatter, add_data_args, add_output_args
    from modelshield.defense.cli import add_defense_args, subcommand_group

    group = subcommand_group(sub, "attack", "attacks that measure the protections")
    p = group.add_parser("extract", help="model extraction (KnockoffNets, JBDA) against a checkpoint behind a defense",
                         formatter_class=_Formatter,
                         epilog="examples:\n  modelshield attack extract lenet.safetensors --data-root ../shared/datasets --budget 5000\n"
                                "  modelshield attack extract lenet.safetensors --defense queen --queen queen.safetensors "
                                "--attack jbda-tr --labels hard --pool surrogate --out result.json")
    p.add_argument("checkpoint", type=Path, help="the victim's checkpoint")
    add_data_args(p, dataset_default=None)
    p.add_argument("--attack", default="knockoff", help=", ".join(ATTACK_NAMES))
    p.add_argument("--labels", default="soft", choices=("soft", "hard"), help="soft: probability answers; hard: top-1 only")
    p.add_argument("--budget", type=int, default=5000, help="queries")
    p.add_argument("--pool", default="attacker", choices=("attacker", "surrogate"),
                   help="attacker: the victim dataset's attacker split; surrogate: another dataset")
    p.add_argument("--surrogate", default=None, help="surrogate dataset (default: mnist <-> fashion-mnist)")
    p.add_argument("--pirate-arch", default="lenet5", help="pirate architecture (lenet5, vgg, resnet20)")
    p.add_argument("--pirate-epochs", type=int, default=None, help="default: automatic")
    p.add_argument("--client-id", default="attacker", help="client id the attacker queries as")
    add_defense_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    p.add_argument("--url", default=None, help="attack a live `modelshield serve` (or any Open Inference Protocol v2 server) "
                                              "instead of the checkpoint, which then only scores fidelity")
    p.add_argument("--model-name", default="model", help="the model's name on the server (with --url)")
    p.add_argument("--api-key-file", default=None, help="file holding the API key (with --url)")
    p.add_argument("--api-key-env", default="MODELSHIELD_API_KEY",
                   help="environment variable holding the API key, used when --api-key-file is not given")
    add_output_args(p)
    p.set_defaults(handler=_cmd_extract)
