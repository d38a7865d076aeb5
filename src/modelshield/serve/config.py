"""Server and client settings: frozen dataclasses, the single source of defaults (the CLI reads them).

Example:
    >>> ServeConfig().max_images, ClientSpec(output="label", budget=100).output
    (256, 'label')
    >>> ClientSpec(output="logits")
    Traceback (most recent call last):
    ...
    modelshield.errors.ConfigError: ClientPolicy.output must be one of probabilities, label, got 'logits'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from modelshield.defense.policy import OUTPUT_MODES, ClientPolicy
from modelshield.errors import ConfigError

__all__ = ["CLIENT_ID_PATTERN", "OUTPUT_MODES", "ClientSpec", "ServeConfig"]

CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class ClientSpec:
    """What one client may do.

    Attributes:
        output: ``probabilities`` (the defended vectors, and the label) or ``label`` (the top-1 class only).
        budget: total images the client may have answered (None = unlimited).
        rate: requests per second allowed on average (token bucket; None = unlimited).
        burst: bucket size, requests allowed at once (default: ``max(1, ceil(rate))``).
        trusted: exempt from QUEEN's per-client state (never reversed; :class:`~modelshield.defense.ClientPolicy`).
        allowance: the client's QUEEN tier: novel in-region queries per class before reversal (None: the
            server's threshold).
    """

    output: str = "probabilities"
    budget: int | None = None
    rate: float | None = None
    burst: int | None = None
    trusted: bool = False
    allowance: int | None = None

    def __post_init__(self) -> None:
        self.policy  # noqa: B018 (validates output, budget, trusted and allowance: one rule, ClientPolicy's)
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError(f"client rate must be > 0 requests per second or None, got {self.rate!r}")
        if self.burst is not None and (self.rate is None or self.burst < 1):
            raise ConfigError(f"client burst must be >= 1 and needs a rate, got burst {self.burst!r} with rate {self.rate!r}")

    @property
    def policy(self) -> ClientPolicy:
        """What :class:`~modelshield.defense.ProtectedModel` enforces for this client (output, budget, QUEEN tier)."""
        return ClientPolicy(self.output, self.budget, self.trusted, self.allowance)

    @property
    def bucket_size(self) -> int | None:
        """Requests the bucket holds when full (None without a rate)."""
        if self.rate is None:
            return None
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate))


@dataclass(frozen=True)
class ServeConfig:
    """How the server answers.

    Attributes:
        model_name: the name clients use in ``/v2/models/{name}``.
        model_version: the version reported (``/versions/{v}`` must match it when given).
        max_images: most images in one request.
        max_body_bytes: largest request body accepted (413 above it).
        max_retry_after: cap in seconds on the ``Retry-After`` advertised with a rate refusal.
        host: address to bind (loopback by default; put a TLS-terminating proxy in front for anything else).
        port: TCP port.
        workers: server processes (uvicorn workers; they share the state store).
        state: ``sqlite:PATH`` (default) or ``redis://HOST:PORT/DB``.
    """

    model_name: str = "model"
    model_version: str = "1"
    max_images: int = 256
    max_body_bytes: int = 8 << 20
    max_retry_after: int = 3600
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    state: str = "sqlite:modelshield-state.db"

    def __post_init__(self) -> None:
        if not _MODEL_NAME.fullmatch(self.model_name):
            raise ConfigError(f"model name must be 1-64 of [A-Za-z0-9._-], got {self.model_name!r}")
        if not _MODEL_NAME.fullmatch(self.model_version):
            raise ConfigError(f"model version must be 1-64 of [A-Za-z0-9._-], got {self.model_version!r}")
        for name in ("max_images", "max_body_bytes", "max_retry_after", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ServeConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
