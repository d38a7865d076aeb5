"""Fuzzing the locked-file parser: hostile bytes give FormatError (or IntegrityError on unlock), nothing else."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelshield.errors import FormatError, IntegrityError
from modelshield.keys import SecretKey
from modelshield.lock import LockedModel, lock_state_dict
from modelshield.lock.format import PREFIX, encode_prefix, payload_start

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
KEY = SecretKey(bytes(range(32)))
IMAGE = lock_state_dict({"a": torch.arange(10, dtype=torch.float32), "b": torch.ones(3).half(), "n": torch.tensor(1)},
                        KEY).to_bytes()
HEADER_LEN = int.from_bytes(IMAGE[12:16], "little")
HEADER_DOC = json.loads(IMAGE[16 : 16 + HEADER_LEN])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _file(header: bytes, payload_and_tag: bytes) -> bytes:
    return encode_prefix(len(header)) + header + bytes(payload_start(len(header)) - PREFIX.size - len(header)) + payload_and_tag


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    with pytest.raises(FormatError):
        LockedModel.from_bytes(data)


@FUZZ
@given(st.binary(max_size=200), st.binary(max_size=100))
def test_valid_prefix_random_header(header: bytes, rest: bytes) -> None:
    if len(header) < 2:
        header = header + b"  "
    with pytest.raises(FormatError):
        LockedModel.from_bytes(_file(header, rest))


@FUZZ
@given(st.sampled_from(sorted(HEADER_DOC)), json_values)
def test_header_field_replaced_by_random_json(field: str, value: object) -> None:
    doc = dict(HEADER_DOC, **{field: value})
    if doc == HEADER_DOC:
        return
    header = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    data = _file(header, IMAGE[payload_start(HEADER_LEN) :])
    try:
        locked = LockedModel.from_bytes(data)
    except FormatError:
        return
    # a header that still parses was changed, so the tag must fail
    with pytest.raises((IntegrityError, FormatError)):
        locked.unlock(KEY)


@FUZZ
@given(st.sampled_from(range(len(HEADER_DOC["tensors"]))), st.sampled_from(["name", "dtype", "shape", "offset", "nbytes", "locked"]),
       json_values)
def test_manifest_entry_field_replaced_by_random_json(index: int, field: str, value: object) -> None:
    doc = json.loads(json.dumps(HEADER_DOC))
    doc["tensors"][index][field] = value
    if doc == HEADER_DOC:
        return
    header = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    try:
        locked = LockedModel.from_bytes(_file(header, IMAGE[payload_start(HEADER_LEN) :]))
    except FormatError:
        return
    with pytest.raises((IntegrityError, FormatError)):
        locked.unlock(KEY)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(IMAGE) - 1), st.integers(1, 255)), min_size=1, max_size=4))
def test_any_byte_change_is_detected(flips: list[tuple[int, int]]) -> None:
    data = bytearray(IMAGE)
    for position, mask in flips:
        data[position] ^= mask
    if bytes(data) == IMAGE:
        return
    try:
        locked = LockedModel.from_bytes(bytes(data))
    except FormatError:
        return
    with pytest.raises((IntegrityError, FormatError)):
        locked.unlock(KEY)


@FUZZ
@given(st.integers(0, len(IMAGE) - 1), st.binary(max_size=8))
def test_truncation_or_extension(cut: int, tail: bytes) -> None:
    data = IMAGE[:cut] + tail
    if data == IMAGE:
        return
    with pytest.raises(FormatError):
        LockedModel.from_bytes(data)
