"""Client state stores: one opaque ``bytes`` value per key, changed only by one atomic, retry-safe update.

Everything the service remembers about a client (QUEEN's coverage, the query count of its budget) lives in a
:class:`StateStore` under a string key and changes only through :meth:`StateStore.update`:

``update(key, fn)`` reads the current value ``old`` (None when absent), calls ``fn(old)``, which returns
``(new, result)``, atomically replaces the value by ``new`` (``None`` deletes the key) and returns ``result``.

The contract every store keeps and every caller relies on:

* **Atomic.** No other update of the same key lands between the read and the write: N concurrent increments
  give exactly N (threads of one process; processes too for the SQLite and Redis stores).
* **All or nothing.** If ``fn`` raises, the exception propagates and the stored value is unchanged.
* **``fn`` is pure and may run more than once.** ``fn`` must have no effect outside its return value (no
  writes to other objects, no I/O, no random draws from shared generators): an optimistic store (Redis with
  WATCH/MULTI) calls it again on a fresh ``old`` when another writer got in first, and only the last call's
  ``(new, result)`` counts. The in-memory and SQLite stores hold a lock instead and call it once.
* **Durable where the store is.** When ``update`` returns, the change is committed: the SQLite store runs
  ``synchronous=FULL``, so an answer acknowledged after its state change survives a crash of the process or
  the machine.

Values are bytes that their owner encodes (JSON + raw numpy buffers for QUEEN, ASCII digits for counts;
never pickle). Keys are non-empty strings; owners namespace them (``queen:<model>:<client>``,
``queries:<client>``) so several owners can share one store.

Example:
    >>> store = InMemoryStateStore()
    >>> def append_x(old):
    ...     old = old or b""
    ...     return old + b"x", len(old)
    >>> store.update("alice", append_x), store.update("alice", append_x)
    (0, 1)
    >>> store.get("alice"), store.get("bob"), store.keys()
    (b'xx', None, ['alice'])
    >>> store.update("alice", lambda old: (None, "deleted")), store.keys()
    ('deleted', [])
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

__all__ = ["InMemoryStateStore", "SQLiteStateStore", "StateStore", "Updater"]

T = TypeVar("T")
Updater = Callable[[bytes | None], tuple[bytes | None, T]]
"""``fn(old) -> (new, result)``: pure, may run more than once (see the module docstring)."""


@runtime_checkable
class StateStore(Protocol):
    """Per-key bytes with an atomic, retry-safe read-modify-write (the contract is in the module docstring)."""

    def get(self, key: str) -> bytes | None:
        """The stored value, or None."""
        ...

    def update(self, key: str, fn: Updater[T]) -> T:
        """Atomically replace the value of ``key`` by ``fn(old)[0]`` (None deletes it); return ``fn(old)[1]``.

        ``fn`` must be pure and may be called more than once; if it raises, nothing changes.
        """
        ...

    def delete(self, key: str) -> None:
        """Forget a key (no error if absent)."""
        ...

    def keys(self, prefix: str = "") -> list[str]:
        """Stored keys starting with ``prefix``, sorted."""
        ...


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise ConfigError(f"state store keys must be non-empty strings, got {key!r}")
    return key


def _split(out: object) -> tuple[bytes | None, object]:
    """Validate what an update function returned: ``(bytes | None, result)``."""
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ConfigError(f"a state update function must return (new value, result), got {type(out).__name__}")
    new, result = out
    if new is not None and not isinstance(new, (bytes, bytearray, memoryview)):
        raise ConfigError(f"a state update function must return bytes or None as the new value, got {type(new).__name__}")
    return (None if new is None else bytes(new)), result


class InMemoryStateStore:
    """A dict guarded by a lock: atomic within one process, lost when it exits.

    ``fn`` runs once per update, inside the lock (so it must not use the same store: that would deadlock).
    """

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        """The stored value, or None."""
        _check_key(key)
        with self._lock:
            return self._data.get(key)

    def update(self, key: str, fn: Updater[T]) -> T:
        """See :meth:`StateStore.update`."""
        _check_key(key)
        with self._lock:
            new, result = _split(fn(self._data.get(key)))
            if new is None:
                self._data.pop(key, None)
            else:
                self._data[key] = new
            return result  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        """Forget a key (no error if absent)."""
        _check_key(key)
        with self._lock:
            self._data.pop(key, None)

    def keys(self, prefix: str = "") -> list[str]:
        """Stored keys starting with ``prefix``, sorted."""
        with self._lock:
            return sorted(k for k in self._data if k.startswith(prefix))


class SQLiteStateStore:
    """Client state in an SQLite file: WAL journal, ``synchronous=FULL``, one ``BEGIN IMMEDIATE`` per update.

    Safe for several threads of one process (one connection behind a lock) and for several processes on one
    machine (SQLite's file locks serialise the writers, each waiting up to ``timeout`` seconds). Every update
    is committed and synced before it returns, so a change the caller acknowledged survives ``kill -9`` and
    power loss. ``fn`` runs once per update, inside the transaction.

    Args:
        path: database file (created with mode 0600 if absent); ``":memory:"`` for a private in-memory database.
        timeout: seconds to wait for another writer before raising ``sqlite3.OperationalError``.

    Raises:
        ConfigError: ``timeout`` is not positive.
        FormatError: the file is not an SQLite database or has a foreign ``client_state`` table.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.db"
        >>> store = SQLiteStateStore(path)
        >>> store.update("queries:alice", lambda old: (b"3", None))
        >>> store.close()
        >>> SQLiteStateStore(path).get("queries:alice")
        b'3'
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
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(self._SCHEMA)
            columns = [row[1] for row in self._conn.execute("PRAGMA table_info(client_state)")]
        except sqlite3.DatabaseError as exc:
            raise FormatError(f"{self.path}: not a usable SQLite state store ({exc})") from None
        if columns != ["key", "value", "updated"]:
            raise FormatError(f"{self.path}: table client_state has columns {columns}, expected ['key', 'value', 'updated']")

    def get(self, key: str) -> bytes | None:
        """The stored value, or None."""
        _check_key(key)
        with self._lock:
            row = self._conn.execute("SELECT value FROM client_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def update(self, key: str, fn: Updater[T]) -> T:
        """See :meth:`StateStore.update`: one ``BEGIN IMMEDIATE`` transaction, committed (and synced) on return."""
        _check_key(key)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT value FROM client_state WHERE key = ?", (key,)).fetchone()
                new, result = _split(fn(None if row is None else bytes(row[0])))
                if new is None:
                    self._conn.execute("DELETE FROM client_state WHERE key = ?", (key,))
                else:
                    self._conn.execute("INSERT OR REPLACE INTO client_state (key, value, updated) VALUES (?, ?, ?)",
                                       (key, sqlite3.Binary(new), time.time()))
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            return result  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        """Forget a key (no error if absent)."""
        _check_key(key)
        with self._lock:
            self._conn.execute("DELETE FROM client_state WHERE key = ?", (key,))

    def keys(self, prefix: str = "") -> list[str]:
        """Stored keys starting with ``prefix``, sorted."""
        with self._lock:
            rows = self._conn.execute("SELECT key FROM client_state WHERE substr(key, 1, ?) = ? ORDER BY key",
                                      (len(prefix), prefix)).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
