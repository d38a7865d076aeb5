"""RedisStateStore against a private redis-server (the shared store contract suite adds it on main)."""

from __future__ import annotations

import threading

import pytest

from modelshield.errors import ConfigError
from modelshield.state_redis import RedisStateStore


@pytest.fixture
def store(redis_url: str, request: pytest.FixtureRequest) -> RedisStateStore:
    s = RedisStateStore(redis_url, namespace=f"t-{request.node.name}:")
    for key in s.keys():
        s.delete(key)
    return s


def test_get_update_delete_keys(store: RedisStateStore) -> None:
    assert store.get("a") is None
    assert store.update("a", lambda old: (b"1", old)) is None
    assert store.update("a", lambda old: (old + b"2", old)) == b"1"  # type: ignore[operator]
    store.update("b*[x]", lambda old: (b"z", None))
    store.update("c", lambda old: (b"y", None))
    assert store.keys() == ["a", "b*[x]", "c"] and store.keys("b*") == ["b*[x]"] and store.keys("b") == ["b*[x]"]
    assert store.update("c", lambda old: (None, "gone")) == "gone" and store.get("c") is None
    store.delete("a")
    store.delete("never")
    assert store.keys() == ["b*[x]"] and "redis" not in repr(store).lower().replace("redisstatestore", "")


def test_concurrent_increments_lose_nothing(store: RedisStateStore, redis_url: str) -> None:
    def bump(old: bytes | None) -> tuple[bytes, None]:
        return str(int(old or 0) + 1).encode(), None

    def worker() -> None:
        own = RedisStateStore(redis_url, namespace=store.namespace)  # a separate connection pool per "replica"
        for _ in range(50):
            own.update("n", bump)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("n") == b"300"


def test_conflicting_writer_makes_fn_run_again(store: RedisStateStore, redis_url: str) -> None:
    other = RedisStateStore(redis_url, namespace=store.namespace)
    calls: list[bytes | None] = []

    def fn(old: bytes | None) -> tuple[bytes, int]:
        calls.append(old)
        if len(calls) == 1:
            other.update("k", lambda _o: (b"theirs", None))  # another replica writes between WATCH and EXEC
        return (old or b"") + b"+mine", len(calls)

    assert store.update("k", fn) == 2
    assert calls == [None, b"theirs"] and store.get("k") == b"theirs+mine"


def test_bad_url() -> None:
    with pytest.raises(ConfigError, match="redis://"):
        RedisStateStore("http://127.0.0.1:1")
