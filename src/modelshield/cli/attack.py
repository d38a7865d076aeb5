"""``modelshield attack extract``: an extraction attack against a checkpoint behind a defense."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modelshield._io import atomic_write_bytes
from modelshield.attacks.extraction import POOL_KINDS, PirateConfig, build_attack, query_pool
from modelshield.attacks.extraction.run import ATTACK_NAMES
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
from modelshield.cli.defense import add_defense_args, defense_from_args
from modelshield.defense import ClientPolicy, ProtectedModel
from modelshield.defense.baselines import GaussianNoiseDefense
from modelshield.defense.queen import QueenConfig
from modelshield.errors import ConfigError
from modelshield.oracle import load_api_key
from modelshield.serve.config import ServeConfig

__all__ = ["register"]


def _cmd_extract(args: argparse.Namespace) -> int:
    from modelshield.attacks.extraction import run_extraction
    from modelshield.oracle import HttpOracle, ModelOracle, Oracle
    from modelshield.training import seed_everything

    if args.budget < 1:
        raise ConfigError(f"--budget must be >= 1, got {args.budget}")
    checkpoint, bundle, dataset = load_checkpoint_and_data(args)
    pool = query_pool(dataset, args.pool, args.data_root, surrogate=args.surrogate, seed=args.seed)
    oracle: Oracle
    if args.url is not None:  # the live server applies its own defense and the client's policy; the checkpoint scores fidelity
        if args.defense != "none" or args.labels != "soft":
            raise ConfigError("with --url the defense and the output mode are the server's (the client's policy): "
                              "leave out --defense and --labels")
        oracle = HttpOracle(args.url, args.model_name, api_key=load_api_key(args.api_key_file, args.api_key_env),
                            client_id=args.client_id)
        described: dict[str, object] = {"name": "remote", "url": args.url, "model_name": args.model_name}
    else:
        defense = defense_from_args(args, checkpoint.model)
        policy = ClientPolicy(output="label" if args.labels == "hard" else "probabilities", budget=args.budget)
        oracle = ModelOracle(ProtectedModel(checkpoint.model, defense), client_id=args.client_id, policy=policy)
        described = defense.describe()
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


def register(sub: Subparsers) -> None:
    """Add ``attack extract``."""
    group = subcommand_group(sub, "attack", "attacks that measure the protections", examples=[
        "modelshield attack extract lenet.safetensors --data-root ../shared/datasets --budget 5000"])
    p = add_command(group, "extract", help="model extraction (KnockoffNets, JBDA) against a checkpoint behind a defense",
                    examples=["modelshield attack extract lenet.safetensors --data-root ../shared/datasets --budget 5000",
                              "modelshield attack extract lenet.safetensors --defense queen --queen queen.safetensors "
                              "--attack jbda-tr --labels hard --pool surrogate --out result.json",
                              "modelshield attack extract lenet.safetensors --url http://127.0.0.1:8000 --api-key-file alice.key"])
    p.add_argument("checkpoint", type=Path, help="the victim's checkpoint")
    add_data_args(p, dataset_default=None)
    p.add_argument("--attack", default="knockoff", help=", ".join(ATTACK_NAMES))
    p.add_argument("--labels", default="soft", choices=("soft", "hard"), help="soft: probability answers; hard: top-1 only")
    p.add_argument("--budget", type=int, default=5000, help="queries")
    p.add_argument("--pool", default="attacker", choices=POOL_KINDS,
                   help="attacker: the victim dataset's attacker split; surrogate: another dataset; "
                        "noise: uniform random images of the victim's input shape (drawn from --seed)")
    add_config_option(p, query_pool, "surrogate", help="surrogate dataset (default: mnist <-> fashion-mnist)")
    add_config_option(p, PirateConfig, "architecture", "--pirate-arch", help="pirate architecture (lenet5, vgg, resnet20)")
    add_config_option(p, PirateConfig, "epochs", "--pirate-epochs", help="pirate training epochs (default: automatic)")
    p.add_argument("--client-id", default="attacker", help="client id the attacker queries as")
    add_defense_args(p)
    add_config_option(p, PirateConfig, "seed", also=[(build_attack, "seed"), (query_pool, "seed"), (QueenConfig, "seed"),
                                                     (GaussianNoiseDefense, "seed")],
                      help="seed of the attack, the pirate, the defense and the noise pool")
    p.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    p.add_argument("--url", default=None, help="attack a live `modelshield serve` (or any Open Inference Protocol v2 server) "
                                              "instead of the checkpoint, which then only scores fidelity")
    add_config_option(p, ServeConfig, "model_name", help="the model's name on the server (with --url)")
    p.add_argument("--api-key-file", type=Path, default=None, help="file holding the API key (with --url)")
    add_config_option(p, load_api_key, "env", "--api-key-env", metavar="VAR",
                      help="environment variable holding the API key, used when --api-key-file is not given")
    add_output_args(p)
    p.set_defaults(handler=_cmd_extract)
