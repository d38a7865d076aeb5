"""AuthKey: the transformation, raw vs normalised space, the versioned 0600 file, and its validation."""

from __future__ import annotations

import base64
import json
import pickle
import struct

import pytest
import torch

from modelshield.auth import AuthKey
from modelshield.auth.key import mask_from_raw, raw_from_mask
from modelshield.data import Normalization
from modelshield.errors import ConfigError, FormatError

NORM = Normalization((0.2, 0.4, 0.6), (0.3, 0.2, 0.25))


def _key(seed: int = 0) -> AuthKey:
    return AuthKey.random((3, 5, 6), NORM, "body.pool1", generator=torch.Generator().manual_seed(seed))


def test_apply_normalized_matches_the_formula() -> None:
    key = _key()
    z = torch.randn(4, 3, 5, 6)
    m = 0.5 + 0.5 * torch.tanh(8 * (key.mask_raw.clamp(0, 0.5) - 0.5))
    assert torch.allclose(key.apply_normalized(z), (1 - m) * z + m * key.offset)
    assert float(key.mask.max()) <= 0.5 + 1e-6 and float(key.mask.min()) >= 0.0
    assert float(key.offset.abs().max()) <= 0.5


def test_apply_on_raw_images_is_the_normalised_key_seen_through_the_normalisation() -> None:
    key = _key()
    r = torch.rand(4, 3, 5, 6)
    assert torch.allclose(NORM.apply(key.apply(r)), key.apply_normalized(NORM.apply(r)), atol=1e-5)


def test_mask_parametrisation_round_trips() -> None:
    m = torch.linspace(0.01, 0.5, 20)
    assert torch.allclose(mask_from_raw(raw_from_mask(m)), m, atol=1e-4)


def test_random_keys_cover_the_key_space() -> None:
    key = AuthKey.random((1, 64, 64), Normalization.identity(1), generator=torch.Generator().manual_seed(1))
    assert 0.22 < float(key.mask.mean()) < 0.28  # m ~ U[0, 0.5]
    assert float(key.offset.min()) < -0.45 and float(key.offset.max()) > 0.45


def test_file_round_trip_mode_and_refusal_to_overwrite(tmp_path) -> None:
    key = _key()
    path = key.save(tmp_path / "k.authkey")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    loaded = AuthKey.load(path)
    assert loaded == key and loaded.normalization == NORM and loaded.gate == "body.pool1"
    assert loaded.input_shape == (3, 5, 6)
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        key.save(path)
    assert path.stat().st_size < 4096  # small


def test_environment_variable(monkeypatch) -> None:
    key = _key(3)
    monkeypatch.setenv("MS_TEST_AUTH_KEY", key.to_base64())
    assert AuthKey.from_env("MS_TEST_AUTH_KEY") == key
    monkeypatch.setenv("MS_TEST_AUTH_KEY", "***")
    with pytest.raises(FormatError, match="base64"):
        AuthKey.from_env("MS_TEST_AUTH_KEY")


def test_key_never_shows_itself_and_refuses_pickle() -> None:
    key = _key()
    text = repr(key)
    assert "redacted" in text and str(float(key.offset[0, 0, 0])) not in text
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(key)


def test_input_shape_is_checked() -> None:
    key = _key()
    with pytest.raises(ConfigError, match="images must have shape \\(N, 3, 5, 6\\), got \\(2, 1, 5, 6\\)"):
        key.apply(torch.rand(2, 1, 5, 6))
    with pytest.raises(ConfigError):
        key.apply_normalized(torch.rand(3, 5, 6))


def _with_header(data: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    meta = json.loads(header["__metadata__"]["modelshield-auth-key"])
    edit(header, meta)
    header["__metadata__"]["modelshield-auth-key"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + size :]


def test_malformed_files_are_format_errors(tmp_path) -> None:
    data = _key().to_bytes()
    # truncation, versions, duplicate keys, NaN and foreign files: tests/formats/test_malformed.py
    cases = {
        "shape": (_with_header(data, lambda h, m: m.update(input_shape=[3, 5, 7])), "tensor 'mask': expected float32 of shape"),
        "dtype": (_with_header(data, lambda h, m: h["mask"].update(dtype="F64")), "header field mask.data_offsets"),
        "tensors": (_with_header(data, lambda h, m: h.update(extra=h["mask"])), "safetensors data is not tiled exactly"),
        "gate": (_with_header(data, lambda h, m: m.update(gate=3)), "header field gate: expected a string"),
        "theta": (_with_header(data, lambda h, m: m.update(theta=0)), "header field theta: expected a number"),
    }
    for name, (blob, message) in cases.items():
        with pytest.raises(FormatError, match=message):
            AuthKey.from_bytes(blob, source=name)
    with pytest.raises(ConfigError, match="does not exist"):
        AuthKey.load(tmp_path / "missing.authkey")
    (tmp_path / "bad").write_bytes(b"x" * 20)
    (tmp_path / "bad").chmod(0o600)
    with pytest.raises(FormatError):
        AuthKey.load(tmp_path / "bad")
    assert base64.b64decode(_key().to_base64()) == data


def test_gate_choice_round_trips_and_is_checked() -> None:
    from modelshield.auth import GateChoice, GateTrial

    trial = GateTrial("body.pool1", (6, 14, 14), 0.72, 0.98, 0.05, 0.06, 0.04, 0.07, 0.91, 12.5)
    choice = GateChoice("body.pool1", "auto", (trial, GateTrial("body.pool2", (16, 5, 5), 0.14, 0.97, 0.2, 0.2, 0.1, 0.3,
                                                                0.67, 8.0)), ("body.pool1", "body.pool2"))
    key = AuthKey(_key().mask_raw, _key().offset, NORM, "body.pool1", gate_choice=choice)
    loaded = AuthKey.from_bytes(key.to_bytes())
    assert loaded.gate_choice == choice and loaded == key and loaded != _key()
    assert key.bound_to(torch.nn.Linear(2, 2)).gate_choice == choice
    with pytest.raises(ConfigError, match="names gate 'body.pool2'"):
        AuthKey(_key().mask_raw, _key().offset, NORM, "body.pool1", gate_choice=GateChoice("body.pool2", "given"))
    data = key.to_bytes()
    cases = {
        "method": (lambda h, m: m["gate_choice"].update(method="guess"), "gate_choice.method: expected one of"),
        "extra": (lambda h, m: m["gate_choice"].update(note="x"), "unexpected \\['note'\\]"),
        "trial": (lambda h, m: m["gate_choice"]["trials"][0].update(score="high"), "trials\\[0\\].score: expected a number"),
        "missing": (lambda h, m: m["gate_choice"]["trials"][1].pop("legit"), "missing \\['legit'\\]"),
        "candidates": (lambda h, m: m["gate_choice"].update(candidates=[1]), "gate_choice.candidates"),
    }
    for name, (edit, message) in cases.items():
        with pytest.raises(FormatError, match=message):
            AuthKey.from_bytes(_with_header(data, edit), source=name)


def test_constructor_validates() -> None:
    with pytest.raises(ConfigError, match="shapes disagree"):
        AuthKey(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5), Normalization.identity(1), "g")
    with pytest.raises(ConfigError, match="finite"):
        AuthKey(torch.full((1, 4, 4), float("nan")), torch.zeros(1, 4, 4), Normalization.identity(1), "g")
    with pytest.raises(ConfigError, match="channels"):
        AuthKey(torch.zeros(1, 4, 4), torch.zeros(2, 4, 4), Normalization.identity(1), "g")


def test_apply_takes_numpy_and_converts_uint8_explicitly() -> None:
    key = _key()
    pixels = torch.randint(0, 256, (4, 3, 5, 6), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    raw = pixels.float() / 255
    expected = key.apply(raw)
    for given in (pixels, pixels.numpy(), raw.numpy(), raw.double().numpy()):
        assert torch.allclose(key.apply(given), expected, atol=1e-6)
    # the old behaviour read 0-255 as raw values: keyed pixels up to ~255 instead of within about theta of [0, 1]
    assert float(key.apply(pixels).abs().max()) < 3.0
    z = NORM.apply(raw)
    assert torch.allclose(key.apply_normalized(z.numpy()), key.apply_normalized(z))
    with pytest.raises(ConfigError, match="got uint8 pixels: pass raw images to AuthKey.apply"):
        key.apply_normalized(pixels)
    with pytest.raises(ConfigError, match="must be a torch tensor or numpy array, got list"):
        key.apply([[0.0]])
