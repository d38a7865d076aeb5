"""``modelshield lock`` / ``unlock`` / ``evaluate`` on locked files: keys from a file or the environment only."""

from __future__ import annotations

import json

import pytest
import torch

from modelshield.cli import build_parser, main
from modelshield.keys import SecretKey
from modelshield.models import CheckpointMeta, build_model, load_checkpoint, save_checkpoint

from .conftest import bits_equal


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.delenv("MODELSHIELD_KEY", raising=False)
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
    meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits")
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    key_file = SecretKey(bytes(range(32))).save(tmp_path / "master.key")
    return tmp_path, checkpoint, key_file


def test_lock_unlock_round_trip_is_bit_exact(files, capsys) -> None:
    tmp, checkpoint, key_file = files
    code, out, _ = _run(capsys, "lock", str(checkpoint), "--key-file", str(key_file), "--out", str(tmp / "m.mslock"), "--json")
    assert code == 0 and json.loads(out)["scheme"] == "ctr"
    code, out, _ = _run(capsys, "unlock", str(tmp / "m.mslock"), "--key-file", str(key_file), "--out", str(tmp / "back.safetensors"), "--json")
    assert code == 0
    original, restored = load_checkpoint(checkpoint), load_checkpoint(tmp / "back.safetensors")
    assert restored.meta.architecture == "lenet5"
    a, b = original.model.state_dict(), restored.model.state_dict()
    assert all(bits_equal(a[k], b[k]) for k in a)


def test_key_from_environment_and_scheme_option(files, capsys, monkeypatch) -> None:
    tmp, checkpoint, _ = files
    monkeypatch.setenv("MY_KEY", SecretKey(bytes(32)).to_base64())
    code, out, _ = _run(capsys, "lock", str(checkpoint), "--key-env", "MY_KEY", "--scheme", "aes-expansion", "--rounds", "2",
                        "--out", str(tmp / "e.mslock"), "--json")
    assert code == 0 and json.loads(out)["rounds"] == 2
    code, _, _ = _run(capsys, "unlock", str(tmp / "e.mslock"), "--key-env", "MY_KEY", "--out", str(tmp / "e.safetensors"))
    assert code == 0


def test_passphrase_from_environment(files, capsys, monkeypatch) -> None:
    tmp, checkpoint, _ = files
    monkeypatch.setenv("PW", "a long passphrase")
    # scrypt at its default cost takes a moment; that is the point of it
    assert _run(capsys, "lock", str(checkpoint), "--passphrase-env", "PW", "--out", str(tmp / "p.mslock"))[0] == 0
    assert _run(capsys, "unlock", str(tmp / "p.mslock"), "--passphrase-env", "PW", "--out", str(tmp / "p.safetensors"))[0] == 0
    monkeypatch.setenv("PW", "wrong")
    code, _, err = _run(capsys, "unlock", str(tmp / "p.mslock"), "--passphrase-env", "PW", "--out", str(tmp / "q.safetensors"))
    assert code == 6 and "authentication failed" in _error_line(err)


def test_errors_are_one_line_with_exit_codes(files, capsys, monkeypatch) -> None:
    tmp, checkpoint, key_file = files
    locked = tmp / "m.mslock"
    assert _run(capsys, "lock", str(checkpoint), "--key-file", str(key_file), "--out", str(locked))[0] == 0
    wrong = SecretKey(bytes(32)).save(tmp / "wrong.key")
    code, _, err = _run(capsys, "unlock", str(locked), "--key-file", str(wrong), "--out", str(tmp / "x.safetensors"))
    assert code == 6 and _error_line(err) == f"error: {locked}: authentication failed: wrong key, or the file was modified"
    assert not (tmp / "x.safetensors").exists()
    code, _, err = _run(capsys, "unlock", str(checkpoint), "--key-file", str(key_file), "--out", str(tmp / "y.safetensors"))
    assert code == 5 and "not a modelshield locked file" in _error_line(err)
    truncated = tmp / "t.mslock"
    truncated.write_bytes(locked.read_bytes()[:-10])
    code, _, err = _run(capsys, "unlock", str(truncated), "--key-file", str(key_file), "--out", str(tmp / "z.safetensors"))
    assert code == 5 and "truncated" in _error_line(err)
    code, _, err = _run(capsys, "lock", str(checkpoint), "--out", str(tmp / "n.mslock"))
    assert code == 3 and "no key given" in _error_line(err)
    code, _, err = _run(capsys, "lock", str(checkpoint), "--key-file", str(key_file), "--out", str(locked))
    assert code == 3 and "already exists" in _error_line(err)
    code, _, err = _run(capsys, "lock", str(checkpoint), "--key-file", str(key_file), "--rounds", "99", "--out", str(tmp / "r.mslock"))
    assert code == 3 and "rounds must be an integer in 1..16" in _error_line(err)


def test_no_option_takes_a_key_on_the_command_line() -> None:
    parser = build_parser()
    for command in ("lock", "unlock"):
        sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        options = {opt for action in sub._actions for opt in action.option_strings}
        assert not options & {"--key", "--passphrase", "--password", "-k"}, options
    with pytest.raises(SystemExit):
        parser.parse_args(["lock", "m.safetensors", "--out", "x", "--key", "AAAA"])


def test_evaluate_locked_file_as_is_and_with_key(files, capsys, monkeypatch) -> None:
    tmp, checkpoint, key_file = files
    locked = tmp / "m.mslock"
    assert _run(capsys, "lock", str(checkpoint), "--key-file", str(key_file), "--out", str(locked))[0] == 0
    code, out, _ = _run(capsys, "evaluate", str(checkpoint), "--json")
    plain = json.loads(out)
    code, out, _ = _run(capsys, "evaluate", str(locked), "--key-file", str(key_file), "--json")
    with_key = json.loads(out)
    assert code == 0 and with_key["view"] == "unlocked" and with_key["correct"] == plain["correct"]
    code, out, _ = _run(capsys, "evaluate", str(locked), "--json")
    as_is = json.loads(out)
    assert code == 0 and as_is["view"] == "as-is" and as_is["total"] == plain["total"]
    monkeypatch.setenv("MODELSHIELD_KEY", SecretKey(bytes(range(32))).to_base64())
    code, out, _ = _run(capsys, "evaluate", str(locked), "--json")
    assert json.loads(out)["view"] == "unlocked"
    code, out, _ = _run(capsys, "evaluate", str(locked), "--as-is", "--json")
    assert json.loads(out)["view"] == "as-is"
    monkeypatch.setenv("MODELSHIELD_KEY", SecretKey(bytes(32)).to_base64())
    code, _, err = _run(capsys, "evaluate", str(locked))
    assert code == 6 and "authentication failed" in _error_line(err)
