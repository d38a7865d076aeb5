"""``modelshield serve`` and ``modelshield clients add|list|show|revoke``.

Defaults come from :class:`~modelshield.serve.ServeConfig`, :class:`~modelshield.serve.ClientSpec` and
:class:`~modelshield.serve.ServeOptions`. Keys never travel on the command line: the Deep-Lock key from
``--key-file`` or ``--key-env``, the AuthNet key from ``--auth-key-file`` or ``--auth-key-env``; a new
client's API key is printed once (or written to a 0600 file with ``--key-out``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelshield.cli._common import Subparsers, add_command, add_config_option, add_output_args, emit, subcommand_group
from modelshield.cli.defense import add_defense_args, baseline_settings_from_args, canonical_defense_name, queen_config_from_args
from modelshield.cli.lock import add_lock_key_args
from modelshield.defense.baselines import GaussianNoiseDefense
from modelshield.defense.queen import QueenConfig
from modelshield.errors import ConfigError
from modelshield.serve.config import OUTPUT_MODES, ClientSpec, ServeConfig
from modelshield.serve.server import ServeOptions

__all__ = ["register"]

# the ServeConfig fields `serve` exposes (option --field-name each)
SERVE_FIELDS = ("model_name", "model_version", "host", "port", "workers", "max_images", "max_body_bytes")
# the QueenConfig fields the server is given (ServeOptions.queen_config)
_QUEEN_FIELDS = ("novelty_radius", "coverage_threshold", "threshold_queries", "beta", "shadows_per_answer", "seed",
                 "reverse_keeps_label", "out_of_region", "window_seconds", "young_client_queries", "pool_threshold_queries")


def _cmd_serve(args: argparse.Namespace) -> int:
    from modelshield.serve.server import run_server

    if args.state_db is not None:
        raise ConfigError("modelshield serve keeps all state in --state (sqlite:PATH or redis://...), not --state-db")
    config = ServeConfig(**{name: getattr(args, name) for name in SERVE_FIELDS}, state=args.state)
    queen: dict[str, object] = {}
    if canonical_defense_name(args.defense) == "queen":
        online = queen_config_from_args(args)
        queen = {name: getattr(online, name) for name in _QUEEN_FIELDS}
    options = ServeOptions(model=str(args.model), config=config, defense=args.defense,
                           defense_settings=baseline_settings_from_args(args),
                           queen=None if args.queen is None else str(args.queen), queen_config=queen,
                           key_file=None if args.key_file is None else str(args.key_file), key_env=args.key_env,
                           passphrase_env=args.passphrase_env,
                           auth_key_file=None if args.auth_key_file is None else str(args.auth_key_file),
                           auth_key_env=args.auth_key_env, log_level=args.log_level)
    run_server(options)
    return 0


def _registry(args: argparse.Namespace) -> Any:
    from modelshield.serve.clients import ClientRegistry
    from modelshield.serve.server import open_state_store

    return ClientRegistry(open_state_store(args.state))


def _rows(record: Any) -> list[tuple[str, str]]:
    spec = record.spec
    return [("client", record.client_id), ("output", spec.output),
            ("budget", "unlimited" if spec.budget is None else f"{spec.budget} images"),
            ("rate", "unlimited" if spec.rate is None else f"{spec.rate:g} requests/s (burst {spec.bucket_size})"),
            ("QUEEN", "trusted (exempt)" if spec.trusted else "default threshold" if spec.allowance is None
             else f"allowance {spec.allowance} per class"),
            ("status", "revoked" if record.revoked else "active")]


def _cmd_add(args: argparse.Namespace) -> int:
    from modelshield._io import atomic_write_bytes

    if args.key_out is not None and Path(args.key_out).exists():
        raise ConfigError(f"{args.key_out} already exists; refusing to overwrite an API key file")
    spec = ClientSpec(output=args.output, budget=args.budget, rate=args.rate, burst=args.burst, trusted=args.trusted,
                      allowance=args.allowance)
    record, key = _registry(args).add(args.client_id, spec)
    summary = record.public()
    if args.key_out is not None:
        atomic_write_bytes(args.key_out, (key + "\n").encode(), mode=0o600)
        summary["api_key_file"] = str(args.key_out)
        emit(args, summary, [*_rows(record), ("API key", f"written to {args.key_out} (mode 0600)")])
        return 0
    summary["api_key"] = key
    if args.json:
        emit(args, summary)
        return 0
    emit(args, summary, _rows(record))
    print(f"API key (shown once: only its hash is stored; keep it in a file or a secret store):\n{key}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    records = _registry(args).list()
    if args.json:
        emit(args, {"clients": [r.public() for r in records]})
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("client", "output", "budget", "rate (req/s)", "status")
    for r in records:
        table.add_row(r.client_id, r.spec.output, "-" if r.spec.budget is None else str(r.spec.budget),
                      "-" if r.spec.rate is None else f"{r.spec.rate:g}", "revoked" if r.revoked else "active")
    Console().print(table if records else "no clients")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    record = registry.show(args.client_id)
    blob = registry.store.get(f"queries:{record.client_id}")
    used = 0 if blob is None else int(blob)
    emit(args, {**record.public(), "queries": used}, [*_rows(record), ("queries answered", str(used))])
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    record = _registry(args).revoke(args.client_id)
    emit(args, record.public(), _rows(record))
    return 0


def register(sub: Subparsers) -> None:
    """Add ``serve`` and ``clients``."""
    p = add_command(sub, "serve", help="serve a (defended) model over the Open Inference Protocol v2 REST API", examples=[
        "modelshield clients add alice --state sqlite:state.db",
        "modelshield serve lenet.safetensors --defense queen --queen queen.safetensors --state sqlite:state.db",
        "modelshield serve lenet.locked --key-file master.key --state redis://127.0.0.1:6379/0 --workers 4",
        "(guide: docs/serving.md)"])
    p.add_argument("model", type=Path, help="checkpoint (.safetensors) or Deep-Lock file")
    add_defense_args(p)
    add_config_option(p, QueenConfig, "seed", also=[(GaussianNoiseDefense, "seed")], help="seed of the defense's random draws")
    add_config_option(p, ServeConfig, "state", help="sqlite:PATH or redis://HOST:PORT/DB (clients, counts, defense state)")
    helps = {"model_name": "name in /v2/models/{name}", "workers": "server processes sharing the state store",
             "max_images": "most images per request", "max_body_bytes": "largest request body"}
    for name in SERVE_FIELDS:
        add_config_option(p, ServeConfig, name, help=helps.get(name))
    add_config_option(p, ServeOptions, "log_level", choices=("critical", "error", "warning", "info", "debug"),
                      help="uvicorn log level")
    add_lock_key_args(p, required=False)
    p.add_argument("--auth-key-file", type=Path, default=None, help="AuthNet key the server applies to every input")
    add_config_option(p, ServeOptions, "auth_key_env", metavar="VAR",
                      help="AuthNet key (base64 key file) from this environment variable")
    p.set_defaults(handler=_cmd_serve)

    group = subcommand_group(sub, "clients", "API clients of `modelshield serve` (keys, output policy, budget, rate)",
                             examples=["modelshield clients add alice --output label --budget 10000 --rate 5 --state sqlite:state.db",
                                       "modelshield clients list --state sqlite:state.db"])

    def common(q: argparse.ArgumentParser) -> None:
        add_config_option(q, ServeConfig, "state", help="the server's state store: sqlite:PATH or redis://HOST:PORT/DB")
        add_output_args(q)

    q = add_command(group, "add", help="register a client and print its API key once", examples=[
        "modelshield clients add alice --output label --budget 10000 --rate 5 --state sqlite:state.db"])
    q.add_argument("client_id", help="account name (1-64 of A-Z a-z 0-9 . _ -)")
    add_config_option(q, ClientSpec, "output", choices=OUTPUT_MODES, help="what the client may receive")
    add_config_option(q, ClientSpec, "budget", help="images the client may have answered in total (default: unlimited)")
    add_config_option(q, ClientSpec, "rate", help="requests per second (default: unlimited)")
    add_config_option(q, ClientSpec, "burst", help="requests allowed at once (default: ceil(rate))")
    add_config_option(q, ClientSpec, "trusted", action="store_true", help="exempt from QUEEN's per-client state (never reversed)")
    add_config_option(q, ClientSpec, "allowance",
                      help="QUEEN tier: novel in-region queries per class before reversal (default: the server's)")
    q.add_argument("--key-out", type=Path, default=None, help="write the API key to this new file (0600) instead of printing it")
    common(q)
    q.set_defaults(handler=_cmd_add)
    for name, help_text, handler in (("list", "list clients", _cmd_list),
                                     ("show", "one client's policy and query count", _cmd_show),
                                     ("revoke", "refuse a client's key from now on (403)", _cmd_revoke)):
        q = add_command(group, name, help=help_text, examples=[
            f"modelshield clients {name}{'' if name == 'list' else ' alice'} --state sqlite:state.db"])
        if name != "list":
            q.add_argument("client_id")
        common(q)
        q.set_defaults(handler=handler)
