"""CLI commands ``modelshield serve`` and ``modelshield clients add|list|show|revoke``.

Defaults come from :class:`~modelshield.serve.ServeConfig` and :class:`~modelshield.serve.ClientSpec`. Keys
never travel on the command line: the Deep-Lock key from ``--key-file`` or ``--key-env``, the AuthNet key from
``--auth-key-file`` or ``--auth-key-env``; a new client's API key is printed once (or written to a 0600 file
with ``--key-out``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modelshield.errors import ConfigError
from modelshield.serve.config import OUTPUT_MODES, ClientSpec, ServeConfig

__all__ = ["register"]

_SERVE = ServeConfig()
_CLIENT = ClientSpec()


def _cmd_serve(args: argparse.Namespace) -> int:
    from modelshield.serve.server import ServeOptions, run_server

    config = ServeConfig(model_name=args.model_name, model_version=args.model_version, max_images=args.max_images,
                         max_body_bytes=args.max_body_bytes, host=args.host, port=args.port, workers=args.workers,
                         state=args.state)
    settings = {"rounding": {"decimals": args.decimals}, "reverse-sigmoid": {"beta": args.rs_beta, "gamma": args.rs_gamma},
                "gaussian": {"sigma": args.sigma, "seed": args.seed}}.get(args.defense.lower(), {})
    queen: dict[str, object] = {}
    if args.defense.lower() == "queen":
        by_coverage = args.queen_threshold is not None
        queen = {"novelty_radius": args.queen_radius, "coverage_threshold": args.queen_threshold if by_coverage else 0.2,
                 "threshold_queries": None if by_coverage else args.queen_threshold_queries, "beta": args.queen_beta,
                 "shadows_per_answer": args.queen_shadows, "seed": args.seed}
    options = ServeOptions(model=str(args.model), config=config, defense=args.defense, defense_settings=settings,
                           queen=None if args.queen is None else str(args.queen), queen_config=queen,
                           key_file=args.key_file, key_env=args.key_env, passphrase_env=args.passphrase_env,
                           auth_key_file=args.auth_key_file, auth_key_env=args.auth_key_env, log_level=args.log_level)
    if args.state_db is not None:
        raise ConfigError("modelshield serve keeps all state in --state (sqlite:PATH or redis://...), not --state-db")
    run_server(options)
    return 0


def _registry(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from modelshield.serve.clients import ClientRegistry
    from modelshield.serve.server import open_state_store

    return ClientRegistry(open_state_store(args.state))


def _rows(record) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    spec = record.spec
    return [("client", record.client_id), ("output", spec.output),
            ("budget", "unlimited" if spec.budget is None else f"{spec.budget} images"),
            ("rate", "unlimited" if spec.rate is None else f"{spec.rate:g} requests/s (burst {spec.bucket_size})"),
            ("status", "revoked" if record.revoked else "active")]


def _cmd_add(args: argparse.Namespace) -> int:
    from modelshield._io import atomic_write_bytes
    from modelshield.cli import emit

    if args.key_out is not None and Path(args.key_out).exists():
        raise ConfigError(f"{args.key_out} already exists; refusing to overwrite an API key file")
    spec = ClientSpec(output=args.output, budget=args.budget, rate=args.rate, burst=args.burst)
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
    from modelshield.cli import emit
    from modelshield.serve.clients import ClientRecord

    records: list[ClientRecord] = _registry(args).list()
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
    from modelshield.cli import emit

    registry = _registry(args)
    record = registry.show(args.client_id)
    blob = registry.store.get(f"queries:{record.client_id}")
    used = 0 if blob is None else int(blob)
    emit(args, {**record.public(), "queries": used}, [*_rows(record), ("queries answered", str(used))])
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    from modelshield.cli import emit

    record = _registry(args).revoke(args.client_id)
    emit(args, record.public(), _rows(record))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``serve`` and ``clients``."""
    from modelshield.cli import _Formatter, add_key_args, add_output_args
    from modelshield.defense.cli import add_defense_args, subcommand_group

    p = sub.add_parser("serve", help="serve a (defended) model over the Open Inference Protocol v2 REST API",
                       formatter_class=_Formatter,
                       epilog="examples:\n  modelshield clients add alice --state sqlite:state.db\n"
                              "  modelshield serve lenet.safetensors --defense queen --queen queen.safetensors --state sqlite:state.db\n"
                              "  modelshield serve lenet.locked --key-file master.key --state redis://127.0.0.1:6379/0 --workers 4\n"
                              "guide: docs/serving.md")
    p.add_argument("model", type=Path, help="checkpoint (.safetensors) or Deep-Lock file")
    add_defense_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the defense's random draws")
    p.add_argument("--state", default=_SERVE.state, help="sqlite:PATH or redis://HOST:PORT/DB (clients, counts, defense state)")
    p.add_argument("--model-name", default=_SERVE.model_name, help="name in /v2/models/{name}")
    p.add_argument("--model-version", default=_SERVE.model_version)
    p.add_argument("--host", default=_SERVE.host)
    p.add_argument("--port", type=int, default=_SERVE.port)
    p.add_argument("--workers", type=int, default=_SERVE.workers, help="server processes sharing the state store")
    p.add_argument("--max-images", type=int, default=_SERVE.max_images, help="most images per request")
    p.add_argument("--max-body-bytes", type=int, default=_SERVE.max_body_bytes, help="largest request body")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    add_key_args(p, required=False)
    p.add_argument("--passphrase-env", default=None, metavar="VAR", help="Deep-Lock passphrase from this environment variable")
    p.add_argument("--auth-key-file", default=None, help="AuthNet key the server applies to every input")
    p.add_argument("--auth-key-env", default=None, metavar="VAR", help="AuthNet key (base64 key file) from this environment variable")
    p.set_defaults(handler=_cmd_serve)

    group = subcommand_group(sub, "clients", "API clients of `modelshield serve` (keys, output policy, budget, rate)")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--state", default=_SERVE.state, help="the server's state store: sqlite:PATH or redis://HOST:PORT/DB")
        add_output_args(q)

    q = group.add_parser("add", help="register a client and print its API key once", formatter_class=_Formatter,
                         epilog="example:\n  modelshield clients add alice --output label --budget 10000 --rate 5 --state sqlite:state.db")
    q.add_argument("client_id", help="account name (1-64 of A-Z a-z 0-9 . _ -)")
    q.add_argument("--output", default=_CLIENT.output, choices=OUTPUT_MODES, help="what the client may receive")
    q.add_argument("--budget", type=int, default=_CLIENT.budget, help="images the client may have answered in total (default: unlimited)")
    q.add_argument("--rate", type=float, default=_CLIENT.rate, help="requests per second (default: unlimited)")
    q.add_argument("--burst", type=int, default=_CLIENT.burst, help="requests allowed at once (default: ceil(rate))")
    q.add_argument("--key-out", type=Path, default=None, help="write the API key to this new file (0600) instead of printing it")
    common(q)
    q.set_defaults(handler=_cmd_add)
    q = group.add_parser("list", help="list clients", formatter_class=_Formatter)
    common(q)
    q.set_defaults(handler=_cmd_list)
    q = group.add_parser("show", help="one client's policy and query count", formatter_class=_Formatter)
    q.add_argument("client_id")
    common(q)
    q.set_defaults(handler=_cmd_show)
    q = group.add_parser("revoke", help="refuse a client's key from now on (403)", formatter_class=_Formatter)
    q.add_argument("client_id")
    common(q)
    q.set_defaults(handler=_cmd_revoke)
