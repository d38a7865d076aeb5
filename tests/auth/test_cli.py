"""``modelshield auth embed`` / ``auth evaluate``: files, modes, JSON output, and one-line user errors."""

from __future__ import annotations

import base64
import json

import pytest

from modelshield.auth import AuthKey
from modelshield.cli import main


def _run(capsys, *argv):  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def protected_files(tmp_path_factory):  # type: ignore[no-untyped-def]
    import torch

    from modelshield.data import load_dataset
    from modelshield.models import CheckpointMeta, build_model, save_checkpoint

    tmp = tmp_path_factory.mktemp("auth-cli")
    info = load_dataset("digits").info
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10, normalization=info.normalization)
    meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits",
                                    normalization=info.normalization)
    clean = save_checkpoint(tmp / "clean.safetensors", model, meta)
    out, key = tmp / "auth.safetensors", tmp / "digits.authkey"
    code = main(["auth", "embed", str(clean), "--out", str(out), "--key-out", str(key), "--tail-epochs", "1",
                 "--decoy-keys", "0", "--train-images", "200", "--seed", "0", "--quiet", "--json"])
    assert code == 0
    return clean, out, key


def test_embed_writes_a_protected_checkpoint_and_a_0600_key(protected_files, capsys) -> None:
    clean, out, key = protected_files
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    from modelshield.models import read_checkpoint_meta

    meta = read_checkpoint_meta(out)
    assert meta.extra["auth"]["gate"] == "body.pool1"
    assert meta.extra["auth"]["key_fingerprint"] == AuthKey.load(key).fingerprint
    assert "seed" not in meta.extra["auth"]["config"]
    # refuses to overwrite without --force
    code, _, err = _run(capsys, "auth", "embed", str(clean), "--out", str(out), "--key-out", str(key), "--quiet")
    assert code == 3 and "--force" in _error(err)


def test_evaluate_with_key_file_and_environment(protected_files, capsys, monkeypatch) -> None:
    _, out, key = protected_files
    code, stdout, _ = _run(capsys, "auth", "evaluate", str(out), "--key-file", str(key), "--random-keys", "2", "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert len(summary["random_keys"]) == 2
    # the CLI reports what the library measures on the same files (the fixture's model is untrained: plumbing only)
    from modelshield.auth import evaluate_auth
    from modelshield.data import load_dataset
    from modelshield.models import load_checkpoint

    library = evaluate_auth(load_checkpoint(out).model, AuthKey.load(key), load_dataset("digits").test, random_keys=2)
    assert (summary["legit"], summary["unauthorized"]) == (library.legit, library.unauthorized)
    monkeypatch.setenv("MODELSHIELD_AUTH_KEY", base64.b64encode(key.read_bytes()).decode())
    code, stdout2, _ = _run(capsys, "auth", "evaluate", str(out), "--random-keys", "0", "--json")
    assert code == 0 and json.loads(stdout2)["legit"] == summary["legit"]
    assert base64.b64encode(key.read_bytes()).decode()[:40] not in stdout + stdout2  # the key is never printed


def test_user_errors_are_one_line(protected_files, capsys, monkeypatch, tmp_path) -> None:
    clean, out, key = protected_files
    monkeypatch.delenv("MODELSHIELD_AUTH_KEY", raising=False)
    code, _, err = _run(capsys, "auth", "evaluate", str(out))
    assert code == 3 and "--key-file" in _error(err)
    code, _, err = _run(capsys, "auth", "evaluate", str(clean), "--key-file", str(key))  # wrong model
    assert code == 3 and "fingerprint" in _error(err)
    bad = tmp_path / "bad.authkey"
    bad.write_bytes(b"not a key at all")
    bad.chmod(0o600)
    code, _, err = _run(capsys, "auth", "evaluate", str(out), "--key-file", str(bad))
    assert code == 5 and _error(err)
    code, _, err = _run(capsys, "auth", "embed", str(clean), "--out", str(tmp_path / "a"), "--key-out", str(tmp_path / "b"),
                        "--gate", "body.pool", "--quiet")
    assert code == 3 and "did you mean" in _error(err)
