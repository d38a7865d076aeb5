"""Client state encoding and the state stores (atomic updates, persistence, rollback, validation)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from modelshield.defense import InMemoryStateStore, QueenClientState, SQLiteStateStore
from modelshield.errors import FormatError


def test_state_round_trip() -> None:
    s = QueenClientState.empty(4)
    s.points[2] = np.arange(6, dtype=np.float32).reshape(3, 2)
    s.coverage[:] = [0.1, 0.0, 0.25, 1e-9]
    s.reversed[3] = 7
    s.queries = 123
    t = QueenClientState.from_bytes(s.to_bytes(), num_classes=4)
    assert [p.tolist() for p in t.points] == [p.tolist() for p in s.points]
    assert t.coverage.tolist() == s.coverage.tolist() and t.reversed.tolist() == [0, 0, 0, 7] and t.queries == 123


@pytest.mark.parametrize("mangle, message", [
    (lambda b: b"XXXX" + b[4:], "not a modelshield QUEEN client state \\(magic is 58585858"),
    (lambda b: b[:-4], "overruns"),
    (lambda b: b[:6], "truncated"),
    (lambda b: b.replace(b'"version":1', b'"version":9'), "QUEEN client state format version 9 is not supported"),
    (lambda b: b.replace(b'"<f4"', b'"<f8"'), "arrays.points.dtype: expected one of <f4"),
])
def test_malformed_state_is_rejected(mangle, message) -> None:  # type: ignore[no-untyped-def]
    s = QueenClientState.empty(3)
    s.points[0] = np.ones((2, 2), np.float32)
    with pytest.raises(FormatError, match=message):
        QueenClientState.from_bytes(mangle(s.to_bytes()))


def test_wrong_class_count_is_rejected() -> None:
    with pytest.raises(FormatError, match="num_classes: expected 5"):
        QueenClientState.from_bytes(QueenClientState.empty(3).to_bytes(), num_classes=5)


def _increment(old: bytes | None) -> tuple[bytes, int]:
    value = int(old or b"0") + 1
    return str(value).encode(), value


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_concurrent_updates_are_atomic(kind: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if kind == "memory":
        stores = [InMemoryStateStore()] * 4
    else:  # four connections on one file stand in for four processes
        stores = [SQLiteStateStore(tmp_path / "s.db") for _ in range(4)]
    threads = [threading.Thread(target=lambda s=s: [s.update("k", _increment) for _ in range(50)]) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].get("k") == b"200"


def test_sqlite_rolls_back_a_failed_update_and_persists(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s.db"
    store = SQLiteStateStore(path)
    store.update("a", lambda old: (b"one", None))

    def boom(old: bytes | None) -> tuple[bytes, None]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.update("a", boom)
    store.close()
    again = SQLiteStateStore(path)
    assert again.get("a") == b"one" and again.keys() == ["a"] and (path.stat().st_mode & 0o777) == 0o600
    again.update("a", lambda old: (None, None))
    assert again.get("a") is None


def test_sqlite_rejects_a_foreign_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "x.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(FormatError, match="not a usable SQLite state store"):
        SQLiteStateStore(bad)
