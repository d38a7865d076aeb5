"""Known-plaintext key recovery: breaks aes-expansion from 8 known weights, gets nothing beyond them on ctr."""

from __future__ import annotations

import pytest
import torch

from modelshield.attacks.key_recovery import recover_keystream, recover_master_key
from modelshield.errors import ConfigError
from modelshield.keys import SecretKey
from modelshield.lock import LockConfig, lock_state_dict
from modelshield.lock.schedule import make_keystreams

KEY = SecretKey(bytes(range(7, 39)))


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"a.weight": torch.randn(50, 20, generator=g), "a.bias": torch.zeros(20), "b.weight": torch.randn(30, generator=g).half(),
            "bn.weight": torch.ones(12), "z.weight": torch.randn(100, generator=g).double(), "count": torch.tensor(3)}


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("known_name", ["a.bias", "bn.weight", "z.weight", "b.weight"])
def test_aes_expansion_master_key_recovered_from_known_weights(known_name) -> None:
    state = _state()
    locked = lock_state_dict(state, KEY, LockConfig("aes-expansion"))
    known = {known_name: state[known_name].reshape(-1)[:16]}
    result = recover_master_key(locked, known)
    assert result.verified and result.key == KEY and result.candidate == KEY.to_bytes()
    assert result.state_dict is not None
    assert all(_bits(result.state_dict[n]) == _bits(t) for n, t in state.items())
    assert "MAC verified" in result.reason


def test_ctr_yields_only_the_known_key_bytes() -> None:
    state = _state()
    locked = lock_state_dict(state, KEY, LockConfig("ctr"))
    result = recover_master_key(locked, {"a.bias": state["a.bias"], "bn.weight": state["bn.weight"]})
    assert not result.verified and result.key is None and result.state_dict is None
    assert result.keystream_bytes == result.known_bytes == 4 * (20 + 12)
    assert len(result.windows_tried) == 2 and "failed the MAC" in result.reason
    # the candidate decrypts the unknown weights to noise: essentially no element comes out right
    guess = locked.unlock_with_master_key(result.candidate, verify=False)
    truth = state["a.weight"].reshape(-1)
    assert (guess["a.weight"].reshape(-1).view(torch.int32) == truth.view(torch.int32)).float().mean() < 0.01


def test_recovered_keystream_is_the_true_round_keystream() -> None:
    state = _state()
    for scheme in ("ctr", "aes-expansion"):
        locked = lock_state_dict(state, KEY, LockConfig(scheme))
        recovered = recover_keystream(locked, {"a.bias": state["a.bias"]})
        entry = next(e for e in locked.header.tensors if e.name == "a.bias")
        stream = make_keystreams(scheme, KEY.to_bytes(), locked.header.nonce, 1, locked.payload_bytes)[0]
        buf = bytearray(entry.nbytes + 16)
        stream.xor_into(memoryview(bytes(entry.nbytes)), memoryview(buf), entry.offset)
        assert recovered == {entry.offset: bytes(buf[: entry.nbytes])}


def test_too_little_known_plaintext_or_more_rounds() -> None:
    state = _state()
    locked = lock_state_dict(state, KEY, LockConfig("aes-expansion"))
    few = recover_master_key(locked, {"a.bias": state["a.bias"][:7]})
    assert not few.verified and few.keystream_bytes == 28 and "no 8 consecutive" in few.reason
    two = recover_master_key(lock_state_dict(state, KEY, LockConfig("aes-expansion", rounds=2)), {"a.bias": state["a.bias"]})
    assert not two.verified and two.reason.startswith("not applicable")


def test_bad_known_inputs_are_config_errors() -> None:
    state = _state()
    locked = lock_state_dict(state, KEY, LockConfig("aes-expansion"))
    with pytest.raises(ConfigError, match="'nope' is not a locked tensor"):
        recover_keystream(locked, {"nope": torch.zeros(8)})
    with pytest.raises(ConfigError, match="'count' is not a locked tensor"):
        recover_keystream(locked, {"count": torch.tensor(3)})
    with pytest.raises(ConfigError, match="dtype torch.float64 does not match the file's float32"):
        recover_keystream(locked, {"a.bias": torch.zeros(20, dtype=torch.float64)})
    with pytest.raises(ConfigError, match="21 elements, the file's tensor has 20"):
        recover_keystream(locked, {"a.bias": torch.zeros(21)})
