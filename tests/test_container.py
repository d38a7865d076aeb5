"""The shared container rules: versioned headers, typed fields, the safetensors header, secret files."""

from __future__ import annotations

import json
import os
import stat
import struct
import warnings

import numpy as np
import pytest
from safetensors.numpy import save as np_save

from modelshield._io import atomic_write_bytes
from modelshield.container import (
    Fields,
    HeaderSpec,
    check_magic,
    check_version,
    encode_header,
    load_secret_file,
    metadata_entry,
    metadata_header,
    parse_header,
    read_safetensors_header,
    save_secret_file,
    secret_from_env,
)
from modelshield.errors import ConfigError, FormatError

SPEC = HeaderSpec("test file", "modelshield-test", 2, required={"n", "name"}, optional={"note"}, max_bytes=200)


def _raw(**doc: object) -> bytes:
    return json.dumps({"format": "modelshield-test", "version": 2, "n": 1, "name": "a", **doc}).encode()


# -- headers ------------------------------------------------------------------------------------------------
def test_encode_is_canonical_and_round_trips() -> None:
    raw = encode_header({"name": "é", "n": 3}, SPEC)
    assert raw == '{"format":"modelshield-test","n":3,"name":"é","version":2}'.encode()
    assert parse_header(raw, SPEC, "f") == {"format": "modelshield-test", "version": 2, "n": 3, "name": "é"}
    assert parse_header(raw.decode(), SPEC, "f")["n"] == 3  # text as well as bytes
    assert parse_header(_raw(note="x"), SPEC, "f")["note"] == "x"  # an optional key


@pytest.mark.parametrize(("raw", "message"), [
    (_raw(note="x" * 300), "f.bin: header is 3.. bytes, over the 200-byte cap"),
    (b"\xff{}", "f.bin: header is not UTF-8 text"),
    (b'{"format": ', "f.bin: header is not valid JSON"),
    (b'{"format":"modelshield-test","format":"modelshield-test","version":2,"n":1,"name":"a"}',
     "f.bin: header is not acceptable JSON \\(duplicate key 'format'\\)"),
    (_raw().replace(b'"n": 1', b'"n": NaN'), "non-standard JSON constant NaN"),
    (_raw().replace(b'"n": 1', b'"n": -Infinity'), "non-standard JSON constant -Infinity"),
    (b"[" * 100 + b"]" * 100, "f.bin: header field \\(top level\\): expected a JSON object, got 'list'"),
    (b'{"version": 2}', "f.bin: not a modelshield test file \\(header field format: expected 'modelshield-test', got nothing\\)"),
    (_raw(format="modelshield-lock"), "got 'modelshield-lock'"),
    (_raw(version=3), "f.bin: test file format version 3 is not supported \\(expected 2\\)"),
    (_raw(version=True), "format version True is not supported"),
    (_raw(version="2"), "format version '2' is not supported"),
    (json.dumps({"format": "modelshield-test", "version": 2, "n": 1}).encode(), "f.bin: header object: missing \\['name'\\]"),
    (_raw(extra=0, zz=1), "f.bin: header object: unexpected \\['extra', 'zz'\\]"),
])
def test_parse_refuses(raw: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_header(raw, SPEC, "f.bin")


def test_the_size_cap_comes_before_decoding() -> None:
    huge = "\udcff" * 10_000  # not encodable: refused for its size, before anything tries to encode it
    with pytest.raises(FormatError, match="over the 200-byte cap"):
        parse_header(huge, SPEC, "f")
    with pytest.raises(FormatError, match="header is 201 bytes"):
        parse_header(b" " * 201, SPEC, "f")


def test_specs_without_format_or_version_keys() -> None:
    anonymous = HeaderSpec("state", None, 1, required={"k"})
    assert parse_header(b'{"version":1,"k":0}', anonymous, "s") == {"version": 1, "k": 0}
    assert encode_header({"k": 0}, anonymous) == b'{"k":0,"version":1}'
    with pytest.raises(FormatError, match="unexpected \\['format'\\]"):
        parse_header(b'{"format":"x","version":1,"k":0}', anonymous, "s")
    prefixed = HeaderSpec("locked file", "modelshield-lock", 1, required={"k"}, version_in_header=False)
    assert encode_header({"k": 0}, prefixed) == b'{"format":"modelshield-lock","k":0}'
    with pytest.raises(FormatError, match="unexpected \\['version'\\]"):
        parse_header(b'{"format":"modelshield-lock","version":1,"k":0}', prefixed, "s")


@pytest.mark.parametrize(("doc", "message"), [
    ({"n": 1}, "test file header: missing \\['name'\\], unexpected \\[\\]"),
    ({"n": 1, "name": "a", "x": 0}, "unexpected \\['x'\\]"),
    ({"n": 1, "name": "a", "version": 2}, "\\['version'\\] are written by encode_header"),
    ({"n": float("nan"), "name": "a"}, "not JSON-encodable"),
    ({"n": object(), "name": "a"}, "not JSON-encodable"),
    ({"n": 1, "name": "a" * 300}, "over the 200-byte cap"),
])
def test_the_writer_obeys_the_readers_rules(doc: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        encode_header(doc, SPEC)


def test_spec_validation() -> None:
    with pytest.raises(ConfigError, match="implied"):
        HeaderSpec("x", "x", 1, optional={"format"})
    with pytest.raises(ConfigError, match="both required and optional"):
        HeaderSpec("x", "x", 1, required={"a"}, optional={"a"})
    with pytest.raises(ConfigError, match="version must be"):
        HeaderSpec("x", "x", True)  # type: ignore[arg-type]


def test_magic_and_version_checks() -> None:
    spec = HeaderSpec("QUEEN client state", None, 1)
    check_magic(b"MSQS\x00", b"MSQS", spec, "s")
    with pytest.raises(FormatError, match="s: not a modelshield QUEEN client state \\(2 bytes, shorter than the 4-byte magic\\)"):
        check_magic(b"MS", b"MSQS", spec, "s")
    with pytest.raises(FormatError, match="magic is 89504e47, expected 4d535153"):
        check_magic(b"\x89PNG", b"MSQS", spec, "s")
    check_version(1, spec, "s")
    with pytest.raises(FormatError, match="s: QUEEN client state format version nothing"):
        parse_header(b'{"k": 1}', spec, "s")


# -- fields -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("check", "message"), [
    (lambda f: f.integer({"a": True}, "a", 0, 5), "f: header field a: expected an integer in 0..5, got True"),
    (lambda f: f.integer({"a": 6}, "a", 0, 5, where="x."), "header field x.a: expected an integer in 0..5, got 6"),
    (lambda f: f.integer({}, "a", 0, 5), "header field a: expected an integer in 0..5, got nothing"),
    (lambda f: f.integer({"a": "1"}, "a", 0, 5, nullable=True), "expected an integer in 0..5 or null, got '1'"),
    (lambda f: f.number({"a": float("inf")}, "a"), "header field a: expected a number in \\[-inf, inf\\], got inf"),
    (lambda f: f.number({"a": 2}, "a", 0.0, 1.0), "expected a number in \\[0.0, 1.0\\], got 2"),
    (lambda f: f.string({"a": 1}, "a"), "header field a: expected a string of at most 65536 characters, got 1"),
    (lambda f: f.string({"a": "c"}, "a", choices=("x", "y")), "expected one of x, y, got 'c'"),
    (lambda f: f.boolean({"a": 0}, "a"), "expected true or false, got 0"),
    (lambda f: f.b64({"a": "!!"}, "a", 1, 4), "expected valid base64, got '!!'"),
    (lambda f: f.b64({"a": "AAAAAAAA"}, "a", 1, 4), "expected 1..4 bytes, got '6 bytes'"),
    (lambda f: f.int_list({"a": [1, 2]}, "a", 0, 9, length=3), "expected a list of 3 integers in 0..9, got \\[1, 2\\]"),
    (lambda f: f.int_list({"a": [1, -1]}, "a", 0, 9), "expected a list of at most 65536 integers in 0..9"),
    (lambda f: f.number_list({"a": [1.0, "x"]}, "a"), "expected a list of at most 65536 finite numbers"),
    (lambda f: f.obj({"a": []}, "a"), "expected a JSON object of at most 65536 entries, got \\[\\]"),
    (lambda f: f.str_map({"a": {"k": 1}}, "a"), "header field a\\['k'\\]: expected a string, got 1"),
    (lambda f: f.str_map({"a": {"k": "v", "l": "w"}}, "a", max_entries=1), "expected at most 1 entries, got '2 entries'"),
    (lambda f: f.exact_keys({"a": 1}, {"b"}, {"c"}, where="kdf"), "f: header kdf: missing \\['b'\\]; unexpected \\['a'\\]"),
])
def test_field_messages_name_file_field_expected_and_got(check, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FormatError, match=message):
        check(Fields("f"))


def test_fields_return_checked_values() -> None:
    f = Fields("f")
    doc = {"i": 3, "x": 0.5, "s": "a", "b": True, "k": "AAEC", "l": [1, 2], "m": {"a": "b"}, "z": None}
    assert (f.integer(doc, "i", 0, 3), f.number(doc, "x", 0, 1), f.string(doc, "s"), f.boolean(doc, "b")) == (3, 0.5, "a", True)
    assert f.b64(doc, "k", 3, 3) == b"\x00\x01\x02" and f.int_list(doc, "l", 0, 2) == [1, 2]
    assert f.str_map(doc, "m") == {"a": "b"} and f.integer(doc, "z", 0, 1, nullable=True) is None
    assert f.number_list({"v": [1, 2.5]}, "v", length=2) == [1.0, 2.5]


# -- safetensors headers --------------------------------------------------------------------------------------
def _st(metadata: dict[str, str] | None = None) -> bytes:
    return np_save({"a": np.arange(3, dtype=np.float32), "b": np.zeros((2, 2), np.int64)}, metadata=metadata)


def _reframe(data: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    (n,) = struct.unpack("<Q", data[:8])
    text = edit(data[8 : 8 + n].decode())
    raw = text.encode() + b" " * (-len(text.encode()) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def test_safetensors_header_of_a_valid_file(tmp_path) -> None:
    data = _st({"k": "v"})
    (tmp_path / "t.safetensors").write_bytes(data)
    for header in (read_safetensors_header(data), read_safetensors_header(tmp_path / "t.safetensors")):
        assert header.metadata == {"k": "v"}
        assert header.tensors["a"].dtype == "F32" and header.tensors["b"].shape == (2, 2)
        assert header.tensors["b"].end - header.tensors["b"].start == 32


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda d: d[:5], "x.st: not a safetensors file \\(5 bytes, shorter than the 8-byte header length\\)"),
    (lambda d: struct.pack("<Q", 2**40) + d[8:], "x.st: safetensors header length 1099511627776 is outside 2..4096"),
    (lambda d: d[:40], "x.st: truncated file: the header needs"),
    (lambda d: d[:-1], "x.st: truncated or extended file: the tensors need 44 data bytes, file has 43"),
    (lambda d: d + b"\0" * 8, "extended file"),
    (lambda d: _reframe(d, lambda t: t.replace('"F32"', '"F33"')), "header field a.dtype: expected one of BOOL"),
    (lambda d: _reframe(d, lambda t: t.replace("[3]", "[4]")), "header field a.data_offsets: expected a range of 16 bytes"),
    (lambda d: _reframe(d, lambda t: '{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},' + t[1:]), "duplicate key 'a'"),
    (lambda d: _reframe(d, lambda t: t.replace('"k":"v"', '"k":NaN')), "non-standard JSON constant NaN"),
    (lambda d: _reframe(d, lambda t: t.replace('"k":"v"', '"k":1')), "header field __metadata__\\['k'\\]: expected a string"),
    (lambda d: _reframe(d, lambda t: t.replace('"k":"v"', '"k":"v","extra":{}')), "expected a string, got {}"),
])
def test_safetensors_header_refusals(mangle, message) -> None:  # type: ignore[no-untyped-def]
    data = _st({"k": "v"})
    with pytest.raises(FormatError, match=message):
        read_safetensors_header(mangle(data), source="x.st", max_bytes=4096)


def test_overlapping_tensors_are_refused() -> None:
    data = _reframe(_st(), lambda t: json.dumps(
        {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}, "b": {"dtype": "I64", "shape": [4], "data_offsets": [8, 40]},
         "c": {"dtype": "U8", "shape": [4], "data_offsets": [40, 44]}}))
    with pytest.raises(FormatError, match="x.st: safetensors data is not tiled exactly \\(a tensor starts at 8, expected 12\\)"):
        read_safetensors_header(data, source="x.st")


def test_versioned_metadata_inside_safetensors() -> None:
    data = _st(metadata_entry({"n": 1, "name": "a"}, "modelshield-test", SPEC))
    assert metadata_header(read_safetensors_header(data), "modelshield-test", SPEC, "m")["name"] == "a"
    with pytest.raises(FormatError, match="m: not a modelshield test file \\(no 'other' metadata; found 'modelshield-test'\\)"):
        metadata_header(read_safetensors_header(data), "other", SPEC, "m")


# -- secret files -------------------------------------------------------------------------------------------
def test_secret_files_are_0600_and_never_overwritten_unless_asked(tmp_path) -> None:
    path = save_secret_file(tmp_path / "sub" / "k.key", b"one")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == b"one"
    with pytest.raises(ConfigError, match=f"{path} already exists; refusing to overwrite a key file"):
        save_secret_file(path, b"two")
    assert path.read_bytes() == b"one"
    save_secret_file(path, b"three", overwrite=True)
    assert path.read_bytes() == b"three" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["k.key"]  # no temporary file left behind


def test_secret_file_round_trip_without_warning(tmp_path) -> None:
    path = save_secret_file(tmp_path / "k.key", b"secret")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_secret_file(path, max_bytes=6) == b"secret"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o700 | 0o010])
def test_loose_permissions_give_one_line_warning(tmp_path, mode: int) -> None:
    path = save_secret_file(tmp_path / "k.key", b"secret")
    os.chmod(path, mode)
    with pytest.warns(UserWarning) as record:
        load_secret_file(path, max_bytes=100, what="auth key file")
    text = str(record[0].message)
    assert "\n" not in text and f"auth key file {path} is accessible by other users (mode {mode:#o})" in text
    assert f"chmod 600 {path}" in text


def test_secret_file_size_cap_and_missing_files(tmp_path) -> None:
    path = save_secret_file(tmp_path / "k.key", b"x" * 101)
    with pytest.raises(FormatError, match=f"{path}: 101 bytes is over the 100-byte cap for a key file"):
        load_secret_file(path, max_bytes=100)
    with pytest.raises(ConfigError, match="key file .*absent.key does not exist \\(make one\\)"):
        load_secret_file(tmp_path / "absent.key", max_bytes=100, missing_hint=" (make one)")
    with pytest.raises(ConfigError, match="is a directory, expected a key file"):
        load_secret_file(tmp_path, max_bytes=100)


def test_no_overwrite_write_is_atomic_against_an_existing_file(tmp_path) -> None:
    target = atomic_write_bytes(tmp_path / "a", b"first")
    with pytest.raises(FileExistsError):
        atomic_write_bytes(target, b"second", overwrite=False)
    assert target.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["a"]


def test_secret_from_env(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MS_TEST_SECRET", "  abc \n")
    assert secret_from_env("MS_TEST_SECRET", expected="x") == "abc"
    monkeypatch.setenv("MS_TEST_SECRET", "  ")
    with pytest.raises(ConfigError, match="environment variable MS_TEST_SECRET is not set \\(expected a key\\)"):
        secret_from_env("MS_TEST_SECRET", expected="a key")
