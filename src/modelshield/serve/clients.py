"""The client registry: API keys, per-client policy and rate limits, kept in the state store.

An API key is ``ms_`` + 43 URL-safe base64 characters: 256 random bits from :mod:`secrets`, shown once when
the client is added and stored only as its SHA-256 digest. A fast unsalted hash is adequate here (unlike for
passwords) because the input is a uniformly random 256-bit string: there is no dictionary to try, and
inverting or colliding SHA-256 is out of reach. The digest is looked up by value, then compared with the
presented key's digest in constant time (:func:`hmac.compare_digest`).

Store keys (one store shared by every replica): ``client:<id>`` (the record, JSON), ``client-token:<sha256>``
(the id the key belongs to), ``rate:<id>`` (the token bucket, JSON). Clients are revoked, never deleted, so
their counts and QUEEN state stay for audit.

Example:
    >>> from modelshield.state import InMemoryStateStore
    >>> registry = ClientRegistry(InMemoryStateStore())
    >>> record, key = registry.add("alice", ClientSpec(output="label", budget=1000))
    >>> registry.authenticate(key).client_id, record.spec.output
    ('alice', 'label')
    >>> registry.authenticate("ms_" + "A" * 43) is None
    True
    >>> registry.revoke("alice").revoked
    True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from modelshield.errors import ConfigError, FormatError, did_you_mean
from modelshield.serve.config import CLIENT_ID_PATTERN, ClientSpec

__all__ = ["TOKEN_PREFIX", "ClientRecord", "ClientRegistry", "RateDecision", "hash_token", "new_token"]

TOKEN_PREFIX = "ms_"
TOKEN_BYTES = 32
_TOKEN_RE = re.compile(r"ms_[A-Za-z0-9_-]{43}")


def new_token() -> str:
    """A fresh API key: ``ms_`` + 256 random bits, URL-safe base64 without padding."""
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii").rstrip("=")


def hash_token(token: str) -> str:
    """Hex SHA-256 of a key (what the store keeps)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class ClientRecord:
    """One registered client (never holds the key itself).

    Attributes:
        client_id: the account name (the id QUEEN keeps state under).
        spec: output mode, budget, rate limit.
        token_sha256: hex SHA-256 of the API key.
        created: UNIX time of creation.
        revoked: whether the key is refused (403).
        revoked_at: UNIX time of revocation, or None.
    """

    client_id: str
    spec: ClientSpec
    token_sha256: str
    created: float
    revoked: bool = False
    revoked_at: float | None = None

    def to_json(self) -> bytes:
        """The stored form."""
        doc = {"version": 1, "client_id": self.client_id, "spec": asdict(self.spec), "token_sha256": self.token_sha256,
               "created": self.created, "revoked": self.revoked, "revoked_at": self.revoked_at}
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, blob: bytes, source: str) -> ClientRecord:
        """Parse the stored form; FormatError when it is not a client record."""
        try:
            doc = json.loads(blob)
            if doc.get("version") != 1:
                raise ValueError(f"version {doc.get('version')!r}")
            return cls(str(doc["client_id"]), ClientSpec(**doc["spec"]), str(doc["token_sha256"]), float(doc["created"]),
                       bool(doc["revoked"]), None if doc["revoked_at"] is None else float(doc["revoked_at"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FormatError(f"{source}: not a client record ({exc})") from None

    def public(self) -> dict[str, Any]:
        """JSON-able view for listings (no digest)."""
        return {"client_id": self.client_id, **asdict(self.spec), "created": self.created, "revoked": self.revoked,
                "revoked_at": self.revoked_at}


@dataclass(frozen=True)
class RateDecision:
    """Outcome of taking one request from a client's bucket.

    Attributes:
        allowed: whether the request may proceed.
        retry_after: seconds until a request would be allowed (0 when allowed).
    """

    allowed: bool
    retry_after: float = 0.0


class ClientRegistry:
    """Clients in a state store (see the module docstring for the keys).

    Args:
        store: any state store (in memory, SQLite, Redis).
        clock: time source (seconds); injectable for tests.
    """

    def __init__(self, store: Any, *, clock: Any = time.time) -> None:
        self.store = store
        self._clock = clock

    @staticmethod
    def _check_id(client_id: str) -> str:
        if not isinstance(client_id, str) or not CLIENT_ID_PATTERN.fullmatch(client_id):
            raise ConfigError(f"client id must be 1-64 characters of [A-Za-z0-9._-] starting with a letter or digit, "
                              f"got {client_id!r}")
        return client_id

    def add(self, client_id: str, spec: ClientSpec | None = None) -> tuple[ClientRecord, str]:
        """Register a client; returns its record and its API key (shown once: only the digest is kept).

        Raises:
            ConfigError: bad id, or a client of that id exists (revoked ones too: ids are never reused).
        """
        self._check_id(client_id)
        token = new_token()
        record = ClientRecord(client_id, spec or ClientSpec(), hash_token(token), self._clock())

        def create(old: bytes | None) -> tuple[bytes | None, bool]:
            return (old, False) if old is not None else (record.to_json(), True)

        if not self.store.update(f"client:{client_id}", create):
            raise ConfigError(f"client {client_id!r} already exists (ids are never reused; pick another)")
        self.store.update(f"client-token:{record.token_sha256}", lambda _old: (client_id.encode(), None))
        return record, token

    def get(self, client_id: str) -> ClientRecord | None:
        """The record of a client, or None."""
        blob = self.store.get(f"client:{client_id}")
        return None if blob is None else ClientRecord.from_json(blob, f"client {client_id!r}")

    def show(self, client_id: str) -> ClientRecord:
        """The record of a client; ConfigError (with a hint) when unknown."""
        record = self.get(client_id)
        if record is None:
            known = [k.split(":", 1)[1] for k in self.store.keys("client:")]
            raise ConfigError(f"no client {client_id!r}{did_you_mean(client_id, known)}")
        return record

    def list(self) -> list[ClientRecord]:
        """Every client, sorted by id."""
        out = []
        for key in self.store.keys("client:"):
            blob = self.store.get(key)
            if blob is not None:
                out.append(ClientRecord.from_json(blob, key))
        return out

    def revoke(self, client_id: str) -> ClientRecord:
        """Refuse the client's key from now on (every replica sees it at its next request)."""
        self.show(client_id)
        now = self._clock()

        def mark(old: bytes | None) -> tuple[bytes | None, ClientRecord | None]:
            if old is None:
                return None, None
            rec = ClientRecord.from_json(old, client_id)
            rec = rec if rec.revoked else replace(rec, revoked=True, revoked_at=now)
            return rec.to_json(), rec

        record = self.store.update(f"client:{client_id}", mark)
        if record is None:
            raise ConfigError(f"no client {client_id!r}")
        return record

    def authenticate(self, token: str) -> ClientRecord | None:
        """The record whose key this is (revoked ones included), or None for a malformed or unknown key."""
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            return None
        digest = hash_token(token)
        owner = self.store.get(f"client-token:{digest}")
        if owner is None:
            return None
        record = self.get(owner.decode("utf-8", "replace"))
        if record is None or not hmac.compare_digest(record.token_sha256.encode(), digest.encode()):
            return None
        return record

    def take(self, record: ClientRecord) -> RateDecision:
        """Take one request from the client's token bucket (always allowed without a rate limit)."""
        rate, size = record.spec.rate, record.spec.bucket_size
        if rate is None or size is None:
            return RateDecision(True)
        now = self._clock()

        def step(old: bytes | None) -> tuple[bytes, RateDecision]:
            tokens, last = float(size), now
            if old is not None:
                with_doc = json.loads(old)
                tokens, last = float(with_doc["tokens"]), float(with_doc["t"])
            tokens = min(float(size), tokens + max(0.0, now - last) * rate)
            if tokens >= 1.0:
                return json.dumps({"tokens": tokens - 1.0, "t": now}).encode(), RateDecision(True)
            return json.dumps({"tokens": tokens, "t": now}).encode(), RateDecision(False, (1.0 - tokens) / rate)

        return self.store.update(f"rate:{record.client_id}", step)
