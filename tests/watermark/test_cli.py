"""``modelshield watermark embed`` / ``verify``: files, modes, JSON output, one-line user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modelshield.cli import main
from modelshield.data import load_dataset
from modelshield.models import CheckpointMeta, build_model, save_checkpoint


def _run(capsys, *argv):  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("wm-cli")
    info = load_dataset("digits").info
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10, normalization=info.normalization)
    meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits",
                                    normalization=info.normalization)
    return {"clean": save_checkpoint(tmp / "clean.safetensors", model, meta), "out": tmp / "wm.safetensors",
            "key": tmp / "wm.key", "tmp": tmp}


def test_embed_then_verify(files: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = _run(capsys, "watermark", "embed", str(files["clean"]), "--out", str(files["out"]), "--key-out",
                        str(files["key"]), "--from-scratch", "--epochs", "20", "--lr", "3e-3", "--json", "--quiet")
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["mode"] == "from scratch" and summary["val_wsr"] > 0.5
    assert files["key"].stat().st_mode & 0o777 == 0o600
    code, out, _ = _run(capsys, "watermark", "verify", str(files["out"]), "--key-file", str(files["key"]),
                        "--samples", "400", "--evasion-samples", "100", "--wfpr-margin", "0.15", "--json")  # 8x8: see test_embed_verify
    report = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and report["verdict"] is True and report["samples"] == 400
    code, out, _ = _run(capsys, "watermark", "verify", str(files["clean"]), "--key-file", str(files["key"]),
                        "--samples", "400", "--evasion-samples", "100", "--json")
    assert json.loads(out.strip().splitlines()[-1])["verdict"] is False


@pytest.mark.parametrize("argv, message", [
    (["--url", "http://localhost:1"], "no API key"),
    ([], "name a suspect"),
])
def test_user_errors_are_one_line(files: dict[str, Path], capsys, argv, message) -> None:  # type: ignore[no-untyped-def]
    key = files["tmp"] / "k.key"
    if not key.exists():
        from modelshield.watermark import WatermarkKey

        WatermarkKey.for_dataset("digits", seed=1).save(key)
    code, _, err = _run(capsys, "watermark", "verify", *argv, "--key-file", str(key))
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 3 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_malformed_key_file_is_a_format_error(files: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    bad = files["tmp"] / "bad.key"
    bad.write_text("{}")
    bad.chmod(0o600)
    code, _, err = _run(capsys, "watermark", "verify", str(files["clean"]), "--key-file", str(bad))
    assert code == 5 and str(bad) in err
