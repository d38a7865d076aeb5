"""QUEEN's client state encoding (the stores have their own contract suite in tests/state)."""

from __future__ import annotations

import numpy as np
import pytest

from modelshield.defense import QueenClientState
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
    (lambda b: b.replace(b'"<f4"', b'"<f8"'), "arrays.points.dtype: expected one of <f4"),
])  # versions, duplicate keys, NaN, oversized headers and foreign bytes: tests/formats/test_malformed.py
def test_malformed_state_is_rejected(mangle, message) -> None:  # type: ignore[no-untyped-def]
    s = QueenClientState.empty(3)
    s.points[0] = np.ones((2, 2), np.float32)
    with pytest.raises(FormatError, match=message):
        QueenClientState.from_bytes(mangle(s.to_bytes()))


def test_wrong_class_count_is_rejected() -> None:
    with pytest.raises(FormatError, match="num_classes: expected 5"):
        QueenClientState.from_bytes(QueenClientState.empty(3).to_bytes(), num_classes=5)
