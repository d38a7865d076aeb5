"""A client state store on Redis, for several server replicas sharing one view of every client.

:class:`RedisStateStore` implements the state-store protocol (``get`` / ``update`` / ``delete`` / ``keys``)
with Redis's optimistic transactions: ``update`` WATCHes the key, reads it, runs the caller's pure function,
and writes the result in a MULTI/EXEC block; when another writer changed the key in between, EXEC fails and
the function runs again on the new value (so ``fn`` must be pure, as the contract in :mod:`modelshield.state`
says); if ``fn`` raises, nothing is written. Every key lives
under a namespace prefix (default ``modelshield:``), so one Redis database can hold other data too.

Durability is the server's: run Redis with ``appendonly yes`` and ``appendfsync always`` so that EXEC
returns only after the write is on disk (``docs/serving.md``). :class:`RedisServer` starts a private
``redis-server`` on a free loopback port in a temporary directory, configured that way (tests, benchmarks).

redis-py is imported when a store is made (the ``serve`` extra).

Example (with a running Redis):
    >>> with RedisServer() as server:  # doctest: +SKIP
    ...     store = RedisStateStore(server.url)
    ...     store.update("alice", lambda old: ((old or b"") + b"x", len(old or b"")))
    0
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from modelshield.errors import ConfigError, ModelShieldError
from modelshield.state import _check_key, _split

__all__ = ["RedisServer", "RedisStateStore"]

T = TypeVar("T")
Updater = Callable[[bytes | None], tuple[bytes | None, T]]
_GLOB_SPECIALS = "*?[]\\"


def _escape_glob(text: str) -> str:
    return "".join("\\" + c if c in _GLOB_SPECIALS else c for c in text)


class RedisStateStore:
    """Per-key bytes in Redis with an atomic, retry-safe read-modify-write (WATCH/MULTI/EXEC).

    Args:
        url: ``redis://[:password@]HOST:PORT/DB`` (``rediss://`` for TLS); a password belongs in the URL held
            by an environment variable or a file, never on a command line.
        namespace: prefix of every key this store writes.
        max_retries: optimistic retries of one update before giving up (a :class:`ModelShieldError`).
        timeout: socket timeout in seconds.

    Raises:
        ConfigError: the URL is not a ``redis://`` or ``rediss://`` URL, or redis-py is not installed.
    """

    def __init__(self, url: str, *, namespace: str = "modelshield:", max_retries: int = 1000,
                 timeout: float = 30.0) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss"):
            raise ConfigError(f"a Redis state URL starts with redis:// or rediss://, got scheme {scheme!r}")
        if max_retries < 1:
            raise ConfigError(f"max_retries must be >= 1, got {max_retries}")
        try:
            import redis
        except ImportError:
            raise ConfigError("the Redis state store needs redis-py: pip install 'modelshield[serve]'") from None
        self._redis_errors = (redis.RedisError,)
        self._watch_error = redis.WatchError
        self.namespace = namespace
        self.max_retries = max_retries
        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._location = f"{urlsplit(url).hostname}:{urlsplit(url).port or 6379}"

    def __repr__(self) -> str:  # never shows a password from the URL
        return f"RedisStateStore({self._location}, namespace={self.namespace!r})"

    def _key(self, key: str) -> str:
        return self.namespace + key

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._redis_errors as exc:
            raise ModelShieldError(f"Redis state store at {self._location}: {what} failed ({type(exc).__name__}: {exc})") from None

    def get(self, key: str) -> bytes | None:
        """The stored value, or None."""
        _check_key(key)
        value = self._call("GET", lambda: self._client.get(self._key(key)))
        return None if value is None else bytes(value)

    def update(self, key: str, fn: Updater[T]) -> T:
        """Atomically replace the value of ``key`` by ``fn(old)[0]`` (None deletes it); return ``fn(old)[1]``.

        ``fn`` may run more than once (when another writer got in first); only the last run's result counts.
        """
        name = self._key(_check_key(key))

        def attempt() -> tuple[bool, Any]:
            with self._client.pipeline(transaction=True) as pipe:
                for _ in range(self.max_retries):
                    try:
                        pipe.watch(name)
                        old = pipe.get(name)
                        new, result = _split(fn(None if old is None else bytes(old)))
                        pipe.multi()
                        if new is None:
                            pipe.delete(name)
                        else:
                            pipe.set(name, bytes(new))
                        pipe.execute()
                        return True, result
                    except self._watch_error:
                        continue
                    finally:
                        pipe.reset()
            return False, None

        done, result = self._call("update", attempt)
        if not done:
            raise ModelShieldError(f"Redis state store: key {key!r} kept changing under {self.max_retries} update attempts")
        return result

    def delete(self, key: str) -> None:
        """Forget a key (no error if absent)."""
        _check_key(key)
        self._call("DEL", lambda: self._client.delete(self._key(key)))

    def keys(self, prefix: str = "") -> list[str]:
        """Stored keys starting with ``prefix``, sorted."""
        pattern = _escape_glob(self.namespace + prefix) + "*"
        found = self._call("SCAN", lambda: list(self._client.scan_iter(match=pattern, count=1000)))
        n = len(self.namespace)
        return sorted(k.decode("utf-8", "replace")[n:] for k in found)

    def ping(self) -> bool:
        """Whether the server answers."""
        try:
            return bool(self._client.ping())
        except self._redis_errors:
            return False

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` on a free loopback port, data in a temporary directory (deleted on stop).

    Configured as the documented replica setup: append-only file with ``appendfsync always`` (a write is
    acknowledged after it reached the disk), no RDB snapshots, bound to 127.0.0.1 only.

    Args:
        executable: the redis-server binary (default: found on PATH).
        startup_timeout: seconds to wait for it to answer.

    Raises:
        ConfigError: redis-server is not installed, or did not start.
    """

    def __init__(self, executable: str | None = None, *, startup_timeout: float = 20.0) -> None:
        self.executable = executable or shutil.which("redis-server")
        if self.executable is None:
            raise ConfigError("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
        self.startup_timeout = startup_timeout
        self.port = 0
        self.directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self.directory = Path(tempfile.mkdtemp(prefix="modelshield-redis-"))
        self.port = _free_port()
        args = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
                "--protected-mode", "yes", "--logfile", str(self.directory / "redis.log")]
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        log = (self.directory / "redis.log").read_text(errors="replace")[-500:] if (self.directory / "redis.log").exists() else ""
        self.stop()
        raise ConfigError(f"redis-server did not start on 127.0.0.1:{self.port}: {log.strip() or 'no log'}")

    def stop(self) -> None:
        """Stop the server and delete its directory."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self.directory is not None and os.path.isdir(self.directory):
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
