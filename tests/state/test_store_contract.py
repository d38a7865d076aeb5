"""The state store contract (see :mod:`modelshield.state`), run against every store in ``STORE_FACTORIES``.

A new store joins by appending a :class:`StoreFactory` (skip inside ``open`` when its server is missing).
``open(tmp_path)`` returns an *opener*: each call gives a handle on the same shared data (the same object for the
in-memory store, a new connection for the SQLite and Redis stores), so the tests can act as several clients.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelshield.errors import ConfigError, FormatError
from modelshield.state import InMemoryStateStore, SQLiteStateStore, StateStore

Opener = Callable[[], StateStore]


@dataclass(frozen=True)
class StoreFactory:
    """How to open a store under test.

    Attributes:
        name: test id.
        open: ``open(tmp_path)`` -> an opener of handles on one shared store.
        processes: the store is shared by several processes (then the two-process test runs).
    """

    name: str
    open: Callable[[Path], Opener]
    processes: bool


def _memory(tmp_path: Path) -> Opener:
    store = InMemoryStateStore()
    return lambda: store


def _sqlite(tmp_path: Path) -> Opener:
    return lambda: SQLiteStateStore(tmp_path / "state.db", timeout=60.0)


_REDIS: list[object] = []


def _redis(tmp_path: Path) -> Opener:
    """A private redis-server (started once per test process, on loopback); each test its own key namespace."""
    import atexit
    import uuid

    from modelshield.state_redis import RedisServer, RedisStateStore

    if not _REDIS:
        try:
            server = RedisServer().start()
        except ConfigError as exc:
            _REDIS.append(exc)
        else:
            atexit.register(server.stop)
            _REDIS.append(server)
    if isinstance(_REDIS[0], Exception):
        pytest.skip(f"redis-server unavailable ({_REDIS[0]}); install it: apt-get install redis-server")
    url, namespace = _REDIS[0].url, f"contract-{uuid.uuid4().hex}:"  # type: ignore[attr-defined]
    return lambda: RedisStateStore(url, namespace=namespace)


STORE_FACTORIES: list[StoreFactory] = [
    StoreFactory("memory", _memory, processes=False),
    StoreFactory("sqlite", _sqlite, processes=True),
    StoreFactory("redis", _redis, processes=True),
]


@pytest.fixture(params=STORE_FACTORIES, ids=lambda f: f.name)
def factory(request: pytest.FixtureRequest) -> StoreFactory:
    return request.param


@pytest.fixture
def opener(factory: StoreFactory, tmp_path: Path) -> Opener:
    return factory.open(tmp_path)


def _increment(old: bytes | None) -> tuple[bytes, int]:
    value = int(old or b"0") + 1
    return str(value).encode(), value


def test_get_update_delete_keys(opener: Opener) -> None:
    store = opener()
    assert isinstance(store, StateStore)
    assert store.get("a") is None and store.keys() == []
    assert store.update("b:1", lambda old: (b"one", old)) is None
    assert store.update("b:1", lambda old: (bytearray(b"uno"), old)) == b"one"
    store.update("a", lambda old: (b"", "empty values are values"))
    store.update("b:2", lambda old: (b"two", None))
    assert store.get("b:1") == b"uno" and store.get("a") == b""
    assert store.keys() == ["a", "b:1", "b:2"] and store.keys("b:") == ["b:1", "b:2"] and store.keys("c") == []
    store.delete("b:1")
    store.delete("never-there")
    assert store.keys() == ["a", "b:2"] and store.get("b:1") is None


def test_none_deletes(opener: Opener) -> None:
    store = opener()
    store.update("k", lambda old: (b"v", None))
    assert store.update("k", lambda old: (None, old)) == b"v"
    assert store.get("k") is None and store.keys() == []
    assert store.update("absent", lambda old: (None, "nothing to delete")) == "nothing to delete"
    assert store.keys() == []


def test_an_exception_in_fn_leaves_the_state_unchanged(opener: Opener) -> None:
    store = opener()
    store.update("k", lambda old: (b"before", None))

    def boom(old: bytes | None) -> tuple[bytes, None]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.update("k", boom)
    with pytest.raises(RuntimeError, match="boom"):
        store.update("new", boom)
    assert store.get("k") == b"before" and store.get("new") is None and store.keys() == ["k"]
    store.update("k", lambda old: ((old or b"") + b"!", None))  # the store still works
    assert store.get("k") == b"before!"


def test_bad_keys_and_bad_update_results_are_refused(opener: Opener) -> None:
    store = opener()
    with pytest.raises(ConfigError, match="non-empty strings"):
        store.get("")
    with pytest.raises(ConfigError, match="non-empty strings"):
        store.update(3, _increment)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must return bytes or None"):
        store.update("k", lambda old: ("text", None))  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match=r"must return \(new value, result\)"):
        store.update("k", lambda old: b"x")  # type: ignore[arg-type,return-value]
    assert store.keys() == []


def test_fn_running_again_has_no_double_effect(opener: Opener) -> None:
    """While ``fn`` runs, another client increments the same key. A locking store makes that writer wait; an
    optimistic store lets it in and calls ``fn`` again on the new value. Either way both increments count once."""
    store, other = opener(), opener()
    store.update("k", lambda old: (b"10", None))
    calls: list[bytes | None] = []
    done = threading.Event()

    def concurrent_increment() -> None:
        other.update("k", lambda old: (str(int(old or b"0") + 1000).encode(), None))
        done.set()

    writer = threading.Thread(target=concurrent_increment)

    def fn(old: bytes | None) -> tuple[bytes, int]:
        calls.append(old)
        if len(calls) == 1:
            writer.start()
            done.wait(0.5)  # an optimistic store's writer finishes here; a locking store's writer is blocked
        return _increment(old)

    result = store.update("k", fn)
    writer.join()
    assert int(store.get("k") or b"") == 10 + 1 + 1000
    assert result == int(calls[-1] or b"0") + 1  # the result of the call that was committed
    assert 1 <= len(calls) <= 2 and calls[0] == b"10"


def test_threads_lose_no_update(opener: Opener) -> None:
    n_threads, per_thread = 6, 40
    handles = [opener() for _ in range(n_threads // 2)]  # two threads per handle: shared and separate handles
    results: list[int] = []
    lock = threading.Lock()

    def work(store: StateStore) -> None:
        mine = [store.update("count", _increment) for _ in range(per_thread)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=work, args=(handles[i // 2],)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert handles[0].get("count") == str(n_threads * per_thread).encode()
    assert sorted(results) == list(range(1, n_threads * per_thread + 1))  # every update saw its own predecessor


def _process_worker(open_store: Opener, per_process: int, errors: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        store = open_store()
        for _ in range(per_process):
            store.update("count", _increment)
    except BaseException as exc:  # reported to the parent, which fails the test
        errors.put(repr(exc))


def test_processes_lose_no_update(factory: StoreFactory, opener: Opener) -> None:
    if not factory.processes:
        pytest.skip(f"the {factory.name} store lives in one process")
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    per_process = 60
    procs = [ctx.Process(target=_process_worker, args=(opener, per_process, errors)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    assert errors.empty(), errors.get()
    assert opener().get("count") == str(2 * per_process).encode()


# SQLite specifics: durability settings, persistence, file mode, foreign files


def test_sqlite_is_wal_with_full_sync_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStateStore(path)
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.update("a", lambda old: (b"one", None))
    store.close()
    again = SQLiteStateStore(path)
    assert again.get("a") == b"one" and again.keys() == ["a"] and (path.stat().st_mode & 0o777) == 0o600


def test_sqlite_rejects_a_foreign_file_and_a_bad_timeout(tmp_path: Path) -> None:
    bad = tmp_path / "x.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(FormatError, match=r"x\.db: not a usable SQLite state store"):
        SQLiteStateStore(bad)
    with pytest.raises(ConfigError, match="timeout must be > 0 seconds, got 0"):
        SQLiteStateStore(tmp_path / "y.db", timeout=0)
