"""Build and run the server: state store from a URL, the model (plain, Deep-Lock or AuthNet), uvicorn.

:class:`ServeOptions` says everything a server process needs, as plain JSON-able values (paths and the
*names* of environment variables, never a secret), so ``--workers N`` can hand it to each uvicorn worker
through the environment variable ``MODELSHIELD_SERVE_OPTIONS``.

Example:
    >>> open_state_store("memory")
    <modelshield.state.InMemoryStateStore object at ...>
    >>> open_state_store("postgres://db")
    Traceback (most recent call last):
    ...
    modelshield.errors.ConfigError: state must be sqlite:PATH, redis://HOST:PORT/DB or memory, got 'postgres://db'
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from modelshield.errors import ConfigError
from modelshield.serve.config import ServeConfig
from modelshield.state import InMemoryStateStore, SQLiteStateStore

__all__ = ["OPTIONS_ENV", "ServeOptions", "build_app", "load_served_model", "open_state_store", "run_server"]

OPTIONS_ENV = "MODELSHIELD_SERVE_OPTIONS"


def open_state_store(spec: str) -> Any:
    """The state store named by ``spec``: ``sqlite:PATH``, ``redis://HOST:PORT/DB`` (or ``rediss://``), ``memory``.

    Raises:
        ConfigError: any other form.
    """
    if spec.startswith("sqlite:"):
        path = spec[len("sqlite:"):]
        if not path:
            raise ConfigError("state sqlite:PATH needs a path, e.g. sqlite:state.db")
        return SQLiteStateStore(path)
    if spec.startswith(("redis://", "rediss://")):
        from modelshield.state_redis import RedisStateStore

        return RedisStateStore(spec)
    if spec == "memory":
        return InMemoryStateStore()
    shown = spec if "@" not in spec else spec.split("@", 1)[-1]
    raise ConfigError(f"state must be sqlite:PATH, redis://HOST:PORT/DB or memory, got {shown!r}")


@dataclass(frozen=True)
class ServeOptions:
    """What a server process loads.

    Attributes:
        model: checkpoint (.safetensors) or Deep-Lock file.
        config: names, limits, address, workers, state URL.
        defense: defense name (``none``, ``top1``, ``rounding``, ``reverse-sigmoid``, ``gaussian``, ``queen``).
        defense_settings: the baseline's settings (e.g. ``{"decimals": 1}``).
        queen: QUEEN artefact file (``queen`` only).
        queen_config: :class:`~modelshield.defense.QueenConfig` fields (``queen`` only; defaults when empty).
        key_file: Deep-Lock key file (else the environment variable ``key_env``).
        key_env: environment variable holding the Deep-Lock key (base64).
        passphrase_env: environment variable holding a Deep-Lock passphrase instead of a key.
        auth_key_file: AuthNet key file: the server applies it to every input (the key never leaves it).
        auth_key_env: environment variable holding the AuthNet key file as base64 (used when set and no file).
        max_batch: largest batch given to the defense at once.
        log_level: uvicorn log level.
    """

    model: str
    config: ServeConfig = field(default_factory=ServeConfig)
    defense: str = "none"
    defense_settings: dict[str, Any] = field(default_factory=dict)
    queen: str | None = None
    queen_config: dict[str, Any] = field(default_factory=dict)
    key_file: str | None = None
    key_env: str = "MODELSHIELD_KEY"
    passphrase_env: str | None = None
    auth_key_file: str | None = None
    auth_key_env: str | None = None
    max_batch: int = 256
    log_level: str = "info"

    def to_json(self) -> str:
        """JSON form (no secrets: paths and variable names only)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        """Inverse of :meth:`to_json`."""
        doc = json.loads(text)
        return cls(**{**doc, "config": ServeConfig(**doc["config"])})


def load_served_model(options: ServeOptions) -> tuple[nn.Module, tuple[int, int, int]]:
    """The model to serve (unlocked in memory when it is a Deep-Lock file; wrapped with its AuthNet key when one
    is given) and its input shape (C, H, W).

    Raises:
        ConfigError: missing key, or a key that does not belong to the model.
        IntegrityError: wrong Deep-Lock key or tampered file.
        FormatError: not a model file.
    """
    from modelshield.lock import is_locked_file

    if is_locked_file(options.model):
        from modelshield.keys import load_secret_key
        from modelshield.lock.locked import LockedModel, Passphrase, checkpoint_meta, unlock_model

        locked = LockedModel.load(options.model)
        meta = checkpoint_meta(locked)
        if meta is None:
            raise ConfigError(f"{options.model} holds no checkpoint metadata: lock it with `modelshield lock` from a checkpoint")
        if options.passphrase_env:
            value = os.environ.get(options.passphrase_env)
            if not value:
                raise ConfigError(f"environment variable {options.passphrase_env} (the Deep-Lock passphrase) is not set")
            key: Any = Passphrase(value)
        else:
            key = load_secret_key(options.key_file, options.key_env)
        model = unlock_model(locked, key)
        input_shape = meta.input_shape
    else:
        from modelshield.models import load_checkpoint

        checkpoint = load_checkpoint(options.model)
        model, input_shape = checkpoint.model, checkpoint.meta.input_shape
    auth = None
    if options.auth_key_file:
        from modelshield.auth.key import AuthKey

        auth = AuthKey.load(options.auth_key_file)
    elif options.auth_key_env and os.environ.get(options.auth_key_env):
        from modelshield.auth.key import AuthKey

        auth = AuthKey.from_env(options.auth_key_env)
    if auth is not None:
        model = auth.bind(model)
    return model.eval(), tuple(input_shape)  # type: ignore[return-value]


def build_app(options: ServeOptions) -> Any:
    """Load everything ``options`` names and return the FastAPI app."""
    from modelshield.defense import ProtectedModel
    from modelshield.defense.registry import build_defense
    from modelshield.serve.app import create_app
    from modelshield.serve.metrics import ActionRecorder
    from modelshield.serve.clients import ClientRegistry

    store = open_state_store(options.config.state)
    model, input_shape = load_served_model(options)
    if options.defense.lower() == "queen":
        from modelshield.defense.queen import QueenConfig
        from modelshield.defense.queen_artifacts import load_queen_artifacts

        if options.queen is None:
            raise ConfigError("--defense queen needs --queen FILE (write it with `modelshield defense fit`)")
        defense = build_defense("queen", model=model, artifacts=load_queen_artifacts(options.queen),
                                queen=QueenConfig(**options.queen_config), store=store)
    else:
        defense = build_defense(options.defense, **options.defense_settings)
    protected = ProtectedModel(model, ActionRecorder(defense), store=store, input_shape=input_shape, max_batch=options.max_batch)
    return create_app(protected, ClientRegistry(store), options.config)


def app_from_env() -> Any:
    """uvicorn factory for worker processes: the app for the options in ``MODELSHIELD_SERVE_OPTIONS``."""
    text = os.environ.get(OPTIONS_ENV)
    if not text:
        raise ConfigError(f"environment variable {OPTIONS_ENV} is not set (it is set by `modelshield serve`)")
    return build_app(ServeOptions.from_json(text))


def run_server(options: ServeOptions) -> None:
    """Serve until interrupted (one process, or ``config.workers`` uvicorn workers sharing the state store)."""
    import uvicorn

    cfg = options.config
    common = {"host": cfg.host, "port": cfg.port, "log_level": options.log_level, "timeout_graceful_shutdown": 10}
    if cfg.workers == 1:
        app = build_app(options)  # load errors surface here, before the port is bound
        uvicorn.run(app, **common)  # type: ignore[arg-type]
        return
    build_app(options)  # fail fast in the parent (bad key, bad file) instead of in every worker
    metrics_dir = tempfile.mkdtemp(prefix="modelshield-metrics-")
    os.environ[OPTIONS_ENV] = options.to_json()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("modelshield.serve.server:app_from_env", factory=True, workers=cfg.workers, **common)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
