"""The watermark key file: round trip, 0600, strict parsing."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from modelshield.errors import ConfigError, FormatError
from modelshield.watermark import WatermarkKey


def test_round_trip_and_mode(tmp_path: Path) -> None:
    key = WatermarkKey.for_dataset("mnist", seed=123, orientation="left-right")
    path = key.save(tmp_path / "wm.key")
    assert path.stat().st_mode & 0o777 == 0o600
    assert WatermarkKey.load(path) == key
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        key.save(path)
    assert "123" not in repr(key)


def test_defaults() -> None:
    assert WatermarkKey.for_dataset("fashion-mnist").source_a == 0
    k = WatermarkKey.for_dataset("digits", seed=0)
    assert (k.input_shape, k.jitter, k.offset) == ((1, 8, 8), 1, 0)
    with pytest.raises(ConfigError, match="no default watermark key"):
        WatermarkKey.for_dataset("svhn")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="modelshield-secret-key"), "not a modelshield watermark key file"),
    (lambda d: d.update(version=2), "format version 2 is not supported"),
    (lambda d: d.update(extra=1), r"unexpected \['extra'\]"),
    (lambda d: d.update(target=True), "header field target: expected an integer"),
    (lambda d: d.update(target=0), "three distinct classes"),
    (lambda d: d.update(source_classes=[0]), "header field source_classes"),
    (lambda d: d["combiner"].update(orientation="diagonal"), "header field combiner.orientation"),
    (lambda d: d["combiner"].update(name="blend"), "header field combiner.name"),
    (lambda d: d.update(input_shape=[1, 28]), "header field input_shape"),
])
def test_malformed_files_are_refused_naming_the_file(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    doc = WatermarkKey.for_dataset("fashion-mnist", seed=1).to_dict()
    mutate(doc)
    path = tmp_path / "bad.key"
    path.write_text(json.dumps(doc))
    os.chmod(path, 0o600)
    with pytest.raises(FormatError, match=message) as info:
        WatermarkKey.load(path)
    assert str(path) in str(info.value)


def test_garbage_and_oversized(tmp_path: Path) -> None:
    path = tmp_path / "g.key"
    path.write_bytes(b"\xff\x00 not json")
    os.chmod(path, 0o600)
    with pytest.raises(FormatError, match=f"{path}: header is not UTF-8"):
        WatermarkKey.load(path)
    path.write_bytes(b" " * (1 << 17))
    with pytest.raises(FormatError, match="over the 65536-byte cap"):
        WatermarkKey.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        WatermarkKey.load(tmp_path / "missing.key")


def test_never_pickled() -> None:
    with pytest.raises(TypeError, match="refuses to be pickled"):
        pickle.dumps(WatermarkKey.for_dataset("mnist", seed=1))


def test_lax_permissions_warn(tmp_path: Path) -> None:
    path = WatermarkKey.for_dataset("mnist", seed=1).save(tmp_path / "k.key")
    os.chmod(path, 0o644)
    with pytest.warns(UserWarning, match="chmod 600"):
        WatermarkKey.load(path)
