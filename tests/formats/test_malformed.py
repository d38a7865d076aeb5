"""One malformed-input suite for every file format modelshield reads.

Each format registers a writer of a valid file, its loader, and how to re-frame an edited header; every case
below runs against every format and must give a FormatError whose message names the file. A new format (the
watermark key, the server's client registry) adds one entry to ``FORMATS``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from modelshield.auth import AuthKey
from modelshield.data import Normalization
from modelshield.defense import QueenArtifacts, QueenClientState, load_queen_artifacts
from modelshield.defense.mapping import MappingNetwork
from modelshield.defense.shadow import build_shadow
from modelshield.errors import FormatError
from modelshield.keys import SecretKey
from modelshield.lock import LockedModel, lock_state_dict
from modelshield.lock.format import MAX_HEADER_BYTES, PREFIX, encode_prefix, payload_start
from modelshield.models import CheckpointMeta, build_model, load_checkpoint, save_checkpoint
from modelshield.watermark import WatermarkKey

Edit = Callable[[str], str]


@dataclass(frozen=True)
class Format:
    """One file format: write a valid file, load one, and rewrite the versioned header of a file's bytes."""

    name: str
    write: Callable[[Path], object]
    load: Callable[[Path], object]
    edit_header: Callable[[bytes, Edit], bytes]
    oversize: Callable[[bytes], bytes]
    set_version: Callable[[bytes, int], bytes] | None = None  # default: edit the header's "version" key


# -- framings ---------------------------------------------------------------------------------------------------
def _lock_edit(data: bytes, edit: Edit) -> bytes:
    (length,) = struct.unpack_from("<I", data, 12)
    header = edit(data[PREFIX.size : PREFIX.size + length].decode()).encode()
    pad = bytes(payload_start(len(header)) - PREFIX.size - len(header))
    return encode_prefix(len(header)) + header + pad + data[payload_start(length) :]


def _lock_version(data: bytes, version: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<H", out, 8, version)
    return bytes(out)


def _state_edit(data: bytes, edit: Edit) -> bytes:
    (length,) = struct.unpack_from("<I", data, 4)
    header = edit(data[8 : 8 + length].decode()).encode()
    return data[:4] + struct.pack("<I", len(header)) + header + data[8 + length :]


def _safetensors_edit(key: str) -> Callable[[bytes, Edit], bytes]:
    def edit_file(data: bytes, edit: Edit) -> bytes:
        (length,) = struct.unpack_from("<Q", data, 0)
        outer = json.loads(data[8 : 8 + length])
        outer["__metadata__"][key] = edit(outer["__metadata__"][key])
        raw = json.dumps(outer).encode()
        raw += b" " * (-len(raw) % 8)
        return struct.pack("<Q", len(raw)) + raw + data[8 + length :]
    return edit_file


def _safetensors_oversize(data: bytes) -> bytes:
    return struct.pack("<Q", 1 << 40) + data[8:]


# -- valid files ------------------------------------------------------------------------------------------------
NORM = Normalization((0.5,), (0.25,))


def _write_lock(path: Path) -> None:
    state = {"w": torch.arange(6, dtype=torch.float32), "h": torch.ones(2).half(), "n": torch.tensor(3)}
    lock_state_dict(state, SecretKey(bytes(range(32))), _nonce=bytes(16)).save(path)


def _write_state(path: Path) -> None:
    state = QueenClientState.empty(3)
    state.points[1] = np.ones((2, 2), np.float32)
    state.reversed[2], state.queries = 4, 9
    path.write_bytes(state.to_bytes())


def _write_checkpoint(path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    save_checkpoint(path, model, CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=4,
                                                          dataset="synthetic", normalization=NORM))


def _write_auth_key(path: Path) -> None:
    AuthKey.random((1, 8, 8), NORM, "body.pool2", generator=torch.Generator().manual_seed(0)).save(path)


def _write_queen(path: Path) -> None:
    torch.manual_seed(0)
    k, d = 4, 32
    shadows = [build_shadow("softmax", in_channels=1, image_size=8, num_classes=k, normalization=NORM) for _ in range(2)]
    QueenArtifacts(MappingNetwork([d, 8, 2]), torch.randn(k, d), torch.randn(k, 2), torch.rand(k) + 0.1, shadows,
                   "softmax", (1, 8, 8), NORM, "0" * 32, {"note": "test"}).save(path)


FORMATS = [
    Format("deep-lock", _write_lock, LockedModel.load, _lock_edit,
           lambda d: d[:12] + struct.pack("<I", MAX_HEADER_BYTES + 1) + d[16:], _lock_version),
    Format("secret-key", lambda p: SecretKey(bytes(range(32))).save(p), SecretKey.load,
           lambda d, edit: edit(d.decode()).encode(), lambda d: d + b" " * 5000),
    Format("queen-client-state", _write_state, lambda p: QueenClientState.from_bytes(p.read_bytes(), source=str(p)),
           _state_edit, lambda d: d[:4] + struct.pack("<I", (1 << 16) + 1) + d[8:]),
    Format("checkpoint", _write_checkpoint, load_checkpoint, _safetensors_edit("modelshield"), _safetensors_oversize),
    Format("auth-key", _write_auth_key, AuthKey.load, _safetensors_edit("modelshield-auth-key"), _safetensors_oversize),
    Format("queen-artifacts", _write_queen, load_queen_artifacts, _safetensors_edit("modelshield-queen"),
           _safetensors_oversize),
    Format("watermark-key", lambda p: WatermarkKey.for_dataset("mnist", seed=5).save(p), WatermarkKey.load,
           lambda d, edit: edit(d.decode()).encode(), lambda d: d + b" " * (1 << 16)),
]
IDS = [f.name for f in FORMATS]


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The bytes of one valid file of each format."""
    folder = tmp_path_factory.mktemp("valid")
    out = {}
    for fmt in FORMATS:
        path = folder / fmt.name
        fmt.write(path)
        out[fmt.name] = path.read_bytes()
    return out


def _refused(fmt: Format, data: bytes, tmp_path: Path, *fragments: str) -> str:
    path = tmp_path / f"bad-{fmt.name}.bin"
    path.write_bytes(data)
    path.chmod(0o600)
    with pytest.raises(FormatError) as exc:
        fmt.load(path)
    message = str(exc.value)
    assert str(path) in message, message
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- the cases --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_a_valid_file_loads_and_the_framing_is_understood(fmt: Format, valid: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / fmt.name
    path.write_bytes(fmt.edit_header(valid[fmt.name], lambda text: text))  # a no-op edit keeps the file valid
    path.chmod(0o600)
    assert fmt.load(path) is not None


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_truncated(fmt: Format, valid: dict[str, bytes], tmp_path: Path) -> None:
    data = valid[fmt.name]
    for cut in (0, 7, len(data) // 2, len(data) - 2):
        _refused(fmt, data[:cut], tmp_path)


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_oversized_header(fmt: Format, valid: dict[str, bytes], tmp_path: Path) -> None:
    message = _refused(fmt, fmt.oversize(valid[fmt.name]), tmp_path)
    assert "cap" in message or "outside" in message, message


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_wrong_version(fmt: Format, valid: dict[str, bytes], tmp_path: Path) -> None:
    data = valid[fmt.name]
    if fmt.set_version is not None:
        bad = fmt.set_version(data, 99)
    else:
        bad = fmt.edit_header(data, lambda text: json.dumps({**json.loads(text), "version": 99}))
    _refused(fmt, bad, tmp_path, "format version 99 is not supported (expected 1)")


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_duplicate_keys(fmt: Format, valid: dict[str, bytes], tmp_path: Path) -> None:
    def duplicate_first_key(text: str) -> str:  # the same key twice, with the same value: only the rule refuses it
        key, value = next(iter(json.loads(text).items()))
        return "{" + json.dumps(key) + ":" + json.dumps(value) + "," + text.lstrip()[1:]

    _refused(fmt, fmt.edit_header(valid[fmt.name], duplicate_first_key), tmp_path, "duplicate key")


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_constant(fmt: Format, constant: str, valid: dict[str, bytes], tmp_path: Path) -> None:
    bad = fmt.edit_header(valid[fmt.name], lambda text: '{"nan_field":' + constant + "," + text.lstrip()[1:])
    _refused(fmt, bad, tmp_path, f"non-standard JSON constant {constant}")


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_foreign_files(fmt: Format, valid: dict[str, bytes], tmp_path: Path) -> None:
    _refused(fmt, b"\x89PNG\r\n\x1a\n" + bytes(56), tmp_path)
    _refused(fmt, b'{"format": "something-else", "version": 1}', tmp_path)
    for other in FORMATS:
        if other is not fmt:
            _refused(fmt, valid[other.name], tmp_path)
