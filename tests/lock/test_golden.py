"""Golden bytes: a fixed key, nonce and state dict must always give exactly this file (format version 1).

If this test fails, the on-disk format changed: that needs a new format version, not a new digest.
"""

from __future__ import annotations

import hashlib

import torch

from modelshield.keys import SecretKey
from modelshield.lock import LockConfig, LockedModel, lock_state_dict

KEY = SecretKey(bytes(range(32)))
NONCE = bytes(range(100, 116))


def _state() -> dict[str, torch.Tensor]:
    return {"w": torch.tensor([1.0, -0.0, 0.5], dtype=torch.float32), "h": torch.tensor([2.0, -1.0], dtype=torch.float16),
            "n": torch.tensor(7, dtype=torch.int64)}


def test_golden_ctr() -> None:
    data = lock_state_dict(_state(), KEY, _nonce=NONCE).to_bytes()
    assert data[:16].hex() == "894d534c4f434b0a0100000099010000"
    assert len(data) == 620  # 16 + 409 header + 15 pad + 148 payload + 32 tag
    assert hashlib.sha256(data).hexdigest() == GOLDEN_CTR
    restored = LockedModel.from_bytes(data).unlock(KEY)
    assert torch.equal(restored["w"], _state()["w"])


def test_golden_aes_expansion() -> None:
    data = lock_state_dict(_state(), KEY, LockConfig("aes-expansion"), _nonce=NONCE).to_bytes()
    assert hashlib.sha256(data).hexdigest() == GOLDEN_EXPANSION


GOLDEN_CTR = "a8dd7eec4facbb405751f4bcc7d268cbd5c0b88a757c77370b445b6d2ad85e85"
GOLDEN_EXPANSION = "9353340163a8b5d2d00b3c9c3fb833823471774fdd2b33c3ad1a4768ea97f005"
