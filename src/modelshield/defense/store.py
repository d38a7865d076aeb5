"""Pluggable per-client state stores: one opaque ``bytes`` value per key, updated atomically.

A stateful defense (QUEEN) keeps each client's state under a key and changes it only through
:meth:`ClientStateStore.update`, a read-modify-write that runs the caller's function inside the store's
critical section. The in-memory store is for one process; the SQLite store (WAL journal, one
``BEGIN IMMEDIATE`` transaction per update) also serialises writers across processes on one machine; a Redis
store for replicated services implements the same protocol elsewhere. Values are bytes the defense encodes
itself (JSON + raw numpy buffers, never pickle).

Example:
    >>> store = InMemoryStateStore()
    >>> store.update("alice", lambda old: ((old or b"") + b"x", len(old or b"")))
    0
    >>> store.update("alice", lambda old: ((old or b"") + b"x", len(old or b"")))
    1
    >>> store.get("alice"), store.get("bob"), store.keys()
    (b'xx', None, ['alice'])
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from modelshield.errors import ConfigError, FormatError

__all__ = ["ClientStateStore", "InMemoryStateStore", "SQLiteStateStore"]

T = TypeVar("T")
Updater = Callable[[bytes | None], tuple[bytes | None, T]]


@runtime_checkable
class ClientStateStore(Protocol):
    """Per-key bytes with an atomic read-modify-write."""

    def get(self, key: str) -> bytes | None:
        """The stored value, or None."""
        ...

    def update(self, key: str, fn: Updater[T]) -> T:
        """Atomically replace the value of ``key`` by ``fn(old)[0]`` (None deletes it); return ``fn(old)[1]``."""
        ...

    def delete(self, key: str) -> None:
        """Forget a key (no error if absent)."""
        ...

    def keys(self, prefix: str = "") -> list[str]:
        """Stored keys starting with ``prefix``, sorted."""
        ...


class InMemoryStateStore:
    """A dict guarded by a lock: atomic within one process, lost when it exits."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def update(self, key: str, fn: Updater[T]) -> T:
        with self._lock:
            new, result = fn(self._data.get(key))
            if new is None:
                self._data.pop(key, None)
            else:
                self._data[key] = bytes(new)
            return result

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(k for k in self._data if k.startswith(prefix))


class SQLiteStateStore:
    """Client state in an SQLite file (WAL journal; each update is one ``BEGIN IMMEDIATE`` transaction).

    Safe for several threads of one process (one connection behind a lock) and for several processes on one
    machine (SQLite's file locks serialise the writers; ``timeout`` seconds of waiting before an error).

    Args:
        path: database file (created with mode 0600 if absent); ``":memory:"`` for a private in-memory database.
        timeout: seconds to wait for another writer.

    Raises:
        FormatError: the file is not an SQLite database or has a foreign ``client_state`` table.
    """

    _SCHEMA = "CREATE TABLE IF NOT EXISTS client_state (key TEXT PRIMARY KEY, value BLOB NOT NULL, updated REAL NOT NULL)"

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        if not timeout > 0:
            raise ConfigError(f"SQLite store timeout must be > 0 seconds, got {timeout}")
        self.path = str(path)
        if self.path != ":memory:":
            target = Path(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(self._SCHEMA)
            columns = [row[1] for row in self._conn.execute("PRAGMA table_info(client_state)")]
        except sqlite3.DatabaseError as exc:
            raise FormatError(f"{self.path}: not a usable SQLite state store ({exc})") from None
        if columns != ["key", "value", "updated"]:
            raise FormatError(f"{self.path}: table client_state has columns {columns}, expected ['key', 'value', 'updated']")

    def get(self, key: str) -> bytes | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM client_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def update(self, key: str, fn: Updater[T]) -> T:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT value FROM client_state WHERE key = ?", (key,)).fetchone()
                new, result = fn(None if row is None else bytes(row[0]))
                if new is None:
                    self._conn.execute("DELETE FROM client_state WHERE key = ?", (key,))
                else:
                    self._conn.execute("INSERT OR REPLACE INTO client_state (key, value, updated) VALUES (?, ?, ?)",
                                       (key, sqlite3.Binary(bytes(new)), time.time()))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    def delete(self, key: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM client_state WHERE key = ?", (key,))

    def keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            rows = self._conn.execute("SELECT key FROM client_state ORDER BY key").fetchall()
        return [r[0] for r in rows if r[0].startswith(prefix)]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
