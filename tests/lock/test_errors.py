"""Every failure path of reading and unlocking a locked file, with its message."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from modelshield.errors import ConfigError, FormatError, IntegrityError
from modelshield.keys import ScryptParams
from modelshield.lock import LockConfig, LockedModel, Passphrase, lock_state_dict, unlock_state_dict
from modelshield.lock.format import MAGIC, PREFIX, encode_prefix, payload_start
from modelshield.models import CheckpointMeta, build_model, save_checkpoint

INTEGRITY = "authentication failed: wrong key, or the file was modified"


@pytest.fixture
def image(key) -> bytes:
    state = {"a.weight": torch.randn(40), "b.bias": torch.randn(3).half(), "n": torch.tensor(5)}
    return lock_state_dict(state, key).to_bytes()


def _header_span(data: bytes) -> tuple[int, int]:
    header_len = struct.unpack_from("<I", data, 12)[0]
    return PREFIX.size, PREFIX.size + header_len


def _rewrite_header(data: bytes, edit) -> bytes:
    """Re-encode the header after ``edit(doc)``; keeps the payload and the (now stale) tag."""
    start, end = _header_span(data)
    doc = json.loads(data[start:end])
    edit(doc)
    header = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    old_payload_start = payload_start(end - start)
    rest = data[old_payload_start:]
    pad = bytes(payload_start(len(header)) - PREFIX.size - len(header))
    return encode_prefix(len(header)) + header + pad + rest


def test_wrong_key_raises_integrity_error_before_returning_anything(image, other_key) -> None:
    locked = LockedModel.from_bytes(image, "m.mslock")
    with pytest.raises(IntegrityError) as exc:
        unlock_state_dict(locked, other_key)
    assert str(exc.value) == f"m.mslock: {INTEGRITY}"


@pytest.mark.parametrize("where", ["payload-first", "payload-last", "tag", "header-nonce"])
def test_tampered_byte_raises_integrity_error(image, key, where) -> None:
    data = bytearray(image)
    start, end = _header_span(image)
    if where == "payload-first":
        data[payload_start(end - start)] ^= 0x01
    elif where == "payload-last":
        data[-33] ^= 0x80
    elif where == "tag":
        data[-1] ^= 0x01
    else:
        doc = json.loads(image[start:end])
        nonce = doc["nonce"]
        swapped = ("B" if nonce[0] != "B" else "C") + nonce[1:]
        data = bytearray(image.replace(nonce.encode(), swapped.encode()))
    locked = LockedModel.from_bytes(bytes(data), "m.mslock")
    with pytest.raises(IntegrityError, match=INTEGRITY):
        locked.unlock(key)


def test_a_valid_looking_header_edit_is_caught_by_the_tag(image, key) -> None:
    edited = _rewrite_header(image, lambda doc: doc["metadata"].update({"owner": "mallory"}))
    locked = LockedModel.from_bytes(edited)
    assert locked.metadata == {"owner": "mallory"}
    with pytest.raises(IntegrityError):
        locked.unlock(key)


@pytest.mark.parametrize("cut", [0, 4, 15, 16, 40, -100, -33, -1])
def test_truncated_file_is_a_format_error(image, cut, tmp_path) -> None:
    data = image[:cut] if cut >= 0 else image[:cut]
    path = tmp_path / "t.mslock"
    path.write_bytes(data)
    with pytest.raises(FormatError) as exc:
        LockedModel.load(path)
    assert str(path) in str(exc.value)
    assert any(word in str(exc.value) for word in ("truncated", "shorter", "not valid JSON", "header length"))
    with pytest.raises(FormatError):
        LockedModel.from_bytes(data)


def test_truncated_message_says_expected_and_got(image) -> None:
    with pytest.raises(FormatError, match=rf"x: truncated or extended file: header says {len(image)} bytes, file has {len(image) - 1}"):
        LockedModel.from_bytes(image[:-1], "x")
    with pytest.raises(FormatError, match="extended"):
        LockedModel.from_bytes(image + b"\0", "x")


def test_foreign_files_are_format_errors(tmp_path) -> None:
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
    meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits")
    checkpoint = save_checkpoint(tmp_path / "c.safetensors", model, meta)
    png = tmp_path / "p.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    empty = tmp_path / "e.bin"
    empty.write_bytes(b"")
    for path in (checkpoint, png):
        with pytest.raises(FormatError, match=rf"{path.name}: not a modelshield locked file \(magic is [0-9a-f]{{16}}, expected {MAGIC.hex()}\)"):
            LockedModel.load(path)
    with pytest.raises(FormatError, match="shorter than the 16-byte prefix"):
        LockedModel.load(empty)


def test_missing_file_and_directory_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        LockedModel.load(tmp_path / "nope.mslock")
    with pytest.raises(ConfigError, match="is a directory"):
        LockedModel.load(tmp_path)


def test_unsupported_version_flags_and_header_length(image) -> None:
    v2 = bytearray(image)
    struct.pack_into("<H", v2, 8, 2)
    with pytest.raises(FormatError, match="locked file format version 2 is not supported \\(expected 1\\)"):
        LockedModel.from_bytes(bytes(v2))
    flags = bytearray(image)
    struct.pack_into("<H", flags, 10, 1)
    with pytest.raises(FormatError, match="flags: expected 0"):
        LockedModel.from_bytes(bytes(flags))
    huge = bytearray(image)
    struct.pack_into("<I", huge, 12, 0xFFFFFFFF)
    with pytest.raises(FormatError, match="header length 4294967295 is outside"):
        LockedModel.from_bytes(bytes(huge))


def test_nonzero_header_padding_is_rejected(image) -> None:
    start, end = _header_span(image)
    if payload_start(end - start) == end:
        pytest.skip("no padding in this image")
    data = bytearray(image)
    data[end] = 1
    with pytest.raises(FormatError, match="header padding is not zero"):
        LockedModel.from_bytes(bytes(data))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(format="other"), "header field format: expected 'modelshield-lock'"),
    (lambda d: d.update(scheme="rot13"), "header field scheme: expected one of ctr, aes-expansion, got 'rot13'"),
    (lambda d: d.update(rounds=0), "header field rounds: expected an integer in 1..16, got 0"),
    (lambda d: d.update(rounds=True), "header field rounds: expected an integer"),
    (lambda d: d.update(sbox="des"), "header field sbox"),
    (lambda d: d.update(nonce="AAAA"), "header field nonce: expected 16..16 bytes, got '3 bytes'"),
    (lambda d: d.update(nonce="!!"), "header field nonce: expected valid base64"),
    (lambda d: d.update(extra=1), "unexpected \\['extra'\\]"),
    (lambda d: d.pop("kdf"), "missing \\['kdf'\\]"),
    (lambda d: d.update(kdf={"name": "scrypt", "salt": "AAAAAAAAAAAAAAAAAAAAAA==", "n": 2**30, "r": 8, "p": 1}),
     "header field kdf.n: expected an integer in 1024..1048576"),
    (lambda d: d.update(kdf={"name": "scrypt", "salt": "AAAAAAAAAAAAAAAAAAAAAA==", "n": 3000, "r": 8, "p": 1}),
     "header field kdf.n: expected a power of two"),
    (lambda d: d["tensors"][1].update(offset=8), "header field tensors\\[1\\].offset: expected 192 \\(canonical layout\\), got 8"),
    (lambda d: d["tensors"][0].update(nbytes=4), "header field tensors\\[0\\].nbytes: expected 160"),
    (lambda d: d["tensors"][0].update(shape=[-1]), "tensors\\[0\\].shape: expected a list of at most 16 integers in 0\\.\\."),
    (lambda d: d["tensors"][0].update(dtype="complex64"), "tensors\\[0\\].dtype"),
    (lambda d: d["tensors"][0].update(locked=False), "tensors\\[0\\].locked: expected true for dtype float32"),
    (lambda d: d["tensors"][2].update(name="a.weight"), "tensors\\[2\\].name: expected names sorted and unique"),
    (lambda d: d["tensors"][0].update(name=""), "tensors\\[0\\].name: expected a non-empty string"),
    (lambda d: d["tensors"][1].update(name="0"), "tensors\\[1\\].name: expected names sorted and unique \\(after .a.weight.\\)"),
    (lambda d: d.update(payload_bytes=d["payload_bytes"] + 64), "header field payload_bytes: expected"),
    (lambda d: d.update(payload_bytes=2**41), "header field payload_bytes: expected an integer in 0..1099511627776"),
    (lambda d: d.update(metadata={"a": 1}), "header field metadata\\['a'\\]: expected a string"),
    (lambda d: d.update(tensors={}), "header field tensors: expected a JSON array"),
])
def test_malformed_headers_name_the_field(image, edit, message) -> None:
    with pytest.raises(FormatError, match=message):
        LockedModel.from_bytes(_rewrite_header(image, edit), "m.mslock")


@pytest.mark.parametrize(("header", "message"), [
    (b"\xff\xfe{}", "header is not UTF-8 text"),
    (b"{not json", "header is not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, "header"),
    (b"[]", "header field \\(top level\\): expected a JSON object"),
])
def test_hostile_header_text(header, message) -> None:
    data = encode_prefix(len(header)) + header + bytes(payload_start(len(header)) - PREFIX.size - len(header)) + bytes(32)
    with pytest.raises(FormatError, match=message):
        LockedModel.from_bytes(data)


def test_nonzero_gap_between_tensors_with_a_valid_tag_is_a_format_error(key) -> None:
    # Craft a file whose payload gap is non-zero but whose tag is right (only a key holder can do this).
    import hmac

    from modelshield.lock.schedule import mac_key

    locked = lock_state_dict({"a": torch.randn(3), "b": torch.randn(3)}, key)
    data = bytearray(locked.to_bytes())
    start = len(data) - 32 - locked.payload_bytes
    data[start + 20] = 7  # inside the gap after tensor a (12 bytes, next tensor at 64)
    tag = hmac.new(mac_key(key.to_bytes(), locked.header.nonce), bytes(data[:-32]), "sha256").digest()
    data[-32:] = tag
    with pytest.raises(FormatError, match="payload padding between tensors is not zero"):
        LockedModel.from_bytes(bytes(data)).unlock(key)


def test_key_kind_mismatch_and_bad_inputs(key) -> None:
    state = {"w": torch.randn(4)}
    with pytest.raises(ConfigError, match="locked with a key file, not a passphrase"):
        lock_state_dict(state, key).unlock(Passphrase("x"))
    phrase_locked = lock_state_dict(state, Passphrase("pw", ScryptParams(n=2**10)))
    with pytest.raises(ConfigError, match="locked with a passphrase, not a key file"):
        phrase_locked.unlock(key)
    with pytest.raises(IntegrityError):
        phrase_locked.unlock(Passphrase("wrong"))
    with pytest.raises(ConfigError, match="dtype torch.complex64 cannot be locked"):
        lock_state_dict({"c": torch.zeros(2, dtype=torch.complex64)}, key)
    with pytest.raises(ConfigError, match="expected a tensor, got list"):
        lock_state_dict({"c": [1.0]}, key)  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="metadata must map strings to strings"):
        lock_state_dict(state, key, metadata={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="the passphrase is empty"):
        Passphrase("")
    with pytest.raises(ConfigError, match="rounds must be an integer in 1..16, got 0"):
        LockConfig(rounds=0)
    with pytest.raises(ConfigError, match="did you mean 'aes-expansion'"):
        LockConfig(scheme="aes-expanson")


def test_secrets_never_show_in_reprs(key) -> None:
    phrase = Passphrase("hunter2")
    locked = lock_state_dict({"w": torch.randn(2)}, key)
    for text in (repr(phrase), str(phrase), repr(locked)):
        assert "hunter2" not in text and key.to_base64() not in text
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(phrase)
