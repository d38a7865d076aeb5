import os
import pickle
import stat

import pytest

from modelshield.errors import ConfigError, FormatError
from modelshield.keys import ScryptParams, SecretKey, load_secret_key


def test_generate_is_random_and_32_bytes() -> None:
    a, b = SecretKey.generate(), SecretKey.generate()
    assert len(a.to_bytes()) == 32 and a != b


def test_repr_never_shows_material() -> None:
    key = SecretKey.generate()
    for text in (repr(key), str(key), f"{key}"):
        assert key.to_base64() not in text and key.to_bytes().hex() not in text


def test_save_is_0600_and_round_trips(tmp_path) -> None:
    key = SecretKey.generate()
    path = key.save(tmp_path / "k.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SecretKey.load(path) == key


def test_refuses_overwrite(tmp_path) -> None:
    path = SecretKey.generate().save(tmp_path / "k.key")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        SecretKey.generate().save(path)


def test_loose_permissions_warn(tmp_path) -> None:
    path = SecretKey.generate().save(tmp_path / "k.key")
    os.chmod(path, 0o644)
    with pytest.warns(UserWarning, match="chmod 600"):
        SecretKey.load(path)


@pytest.mark.parametrize("content, message", [
    ("not json {", "not valid base64"),
    ('{"format": "other"}', "not a modelshield secret key"),
    ('{"format": "modelshield-secret-key", "version": 1, "key": "AAAA"}', "header field key: expected 32..32 bytes, got '3 bytes'"),
    ("AAAA", "the key is 3 bytes, expected 32"),
])
def test_malformed_key_files(tmp_path, content, message) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(FormatError, match=message):
        SecretKey.load(path)


def test_missing_key_file_names_the_fix(tmp_path) -> None:
    with pytest.raises(ConfigError, match="modelshield keygen"):
        SecretKey.load(tmp_path / "absent.key")


def test_env_and_loader(monkeypatch) -> None:
    key = SecretKey.generate()
    monkeypatch.setenv("MY_KEY", key.to_base64())
    assert load_secret_key(None, env="MY_KEY") == key
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(ConfigError, match="--key-file"):
        load_secret_key(None, env="MY_KEY")


def test_passphrase_derivation_depends_on_salt() -> None:
    params = ScryptParams(n=2**10)
    a = SecretKey.from_passphrase("pw", b"s" * 16, params)
    assert a == SecretKey.from_passphrase("pw", b"s" * 16, params)
    assert a != SecretKey.from_passphrase("pw", b"t" * 16, params)
    with pytest.raises(ConfigError):
        SecretKey.from_passphrase("", b"s" * 16, params)
    with pytest.raises(ConfigError):
        SecretKey.from_passphrase("pw", b"short", params)


def test_refuses_pickle() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(SecretKey.generate())


def test_derive_is_domain_separated_and_deterministic() -> None:
    key = SecretKey(bytes(range(32)))
    assert key.derive(b"lock") == key.derive(b"lock") != key.derive(b"mac")
