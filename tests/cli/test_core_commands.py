"""The CLI as a new user meets it: each mistake gives one line naming the problem and the fix, no traceback."""

import json
import os
import stat
import subprocess
import sys

import pytest

from modelshield.cli import main
from modelshield.errors import ConfigError, DatasetNotFound, FormatError


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def digits_checkpoint(tmp_path, capsys):
    path = tmp_path / "d.safetensors"
    code, out, _ = _run(capsys, "train", "--dataset", "digits", "--epochs", "2", "--out", str(path), "--quiet", "--json")
    assert code == 0
    return path, json.loads(out)


def test_train_and_evaluate_round_trip(digits_checkpoint, capsys) -> None:
    path, summary = digits_checkpoint
    code, out, _ = _run(capsys, "evaluate", str(path), "--json")
    assert code == 0
    assert json.loads(out)["accuracy"] == pytest.approx(summary["test_accuracy"])


def test_missing_data_root(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("MODELSHIELD_DATA", raising=False)
    code, _, err = _run(capsys, "train", "--dataset", "mnist", "--out", str(tmp_path / "m.safetensors"))
    assert code == DatasetNotFound.exit_code
    assert "--data-root" in _one_line_error(err) and "MODELSHIELD_DATA" in err


def test_data_root_without_the_dataset(tmp_path, capsys) -> None:
    code, _, err = _run(capsys, "train", "--dataset", "fashion-mnist", "--data-root", str(tmp_path), "--out", str(tmp_path / "m"))
    assert code == DatasetNotFound.exit_code
    assert str(tmp_path / "fashion-mnist") in _one_line_error(err)


def test_wrong_dataset_name(tmp_path, capsys) -> None:
    code, _, err = _run(capsys, "train", "--dataset", "fasion-mnist", "--out", str(tmp_path / "m"))
    assert code == ConfigError.exit_code
    assert "did you mean 'fashion-mnist'" in _one_line_error(err)


def test_unknown_model_name(tmp_path, capsys) -> None:
    code, _, err = _run(capsys, "train", "--model", "lenet6", "--out", str(tmp_path / "m"))
    assert code == ConfigError.exit_code
    assert "did you mean 'lenet5'" in _one_line_error(err)


def test_corrupt_checkpoint(digits_checkpoint, tmp_path, capsys) -> None:
    path, _ = digits_checkpoint
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:200])
    code, _, err = _run(capsys, "evaluate", str(bad))
    assert code == FormatError.exit_code
    assert "bad.safetensors" in _one_line_error(err)


def test_missing_checkpoint(tmp_path, capsys) -> None:
    code, _, err = _run(capsys, "evaluate", str(tmp_path / "nope.safetensors"))
    assert code == ConfigError.exit_code
    assert "modelshield train" in _one_line_error(err)


def test_wrong_image_size_for_model(digits_checkpoint, tmp_path, capsys) -> None:
    path, _ = digits_checkpoint
    code, _, err = _run(capsys, "evaluate", str(path), "--dataset", "synthetic")
    assert code == ConfigError.exit_code
    line = _one_line_error(err)
    assert "expects 1x8x8" in line and "1x12x12" in line and "--dataset synthetic" in line


def test_keygen_writes_0600_and_never_prints_the_key(tmp_path, capsys) -> None:
    path = tmp_path / "master.key"
    code, out, err = _run(capsys, "keygen", "--out", str(path))
    assert code == 0 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    secret = json.loads(path.read_text())["key"]
    assert secret not in out + err
    code, _, err = _run(capsys, "keygen", "--out", str(path))
    assert code == ConfigError.exit_code and "--force" in _one_line_error(err)


def test_bad_option_value(tmp_path, capsys) -> None:
    code, _, err = _run(capsys, "train", "--epochs", "0", "--out", str(tmp_path / "m"))
    assert code == ConfigError.exit_code and "epochs" in _one_line_error(err)


def test_unknown_bench_suite(capsys) -> None:
    code, _, err = _run(capsys, "bench", "trian")
    assert code == ConfigError.exit_code and "did you mean 'train'" in _one_line_error(err)


def test_python_dash_m_lists_every_command() -> None:
    top = subprocess.run([sys.executable, "-m", "modelshield", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("train", "evaluate", "keygen", "demo", "bench", "lock", "unlock", "defense", "attack", "auth", "serve",
                    "clients"):
        assert f"    {command} " in top, command
    assert "examples:" in top


@pytest.mark.parametrize("argv, words", [
    (["train", "--epochs", "ten", "--out", "m"], ["--epochs", "invalid int value: 'ten'"]),
    (["lock", "m.safetensors", "--out", "x", "--rounds"], ["--rounds", "expected one argument"]),
    (["evaluate", "m.safetensors", "--split", "tset"], ["invalid choice: 'tset'"]),
    (["trian"], ["invalid choice: 'trian'"]),
    (["auth", "embed", "m.safetensors", "--key-out", "k"], ["required", "--out"]),
])
def test_usage_errors_are_one_line_with_exit_code_2(capsys, argv, words) -> None:
    code, out, err = _run(capsys, *argv)
    line = _one_line_error(err)
    assert code == 2 and out == "" and all(word in line for word in words), line
    assert "--help" in line


def test_every_command_and_group_has_examples_in_its_help() -> None:
    import argparse

    from modelshield.cli import build_parser

    def walk(parser, path):  # type: ignore[no-untyped-def]
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, f"{path} {name}")

    helps = dict(walk(build_parser(), "modelshield"))
    assert len(helps) >= 15  # 9 feature modules: 12 commands and 3 groups, and the top level
    missing = [path for path, parser in helps.items() if "example" not in parser.format_help()]
    assert missing == []
