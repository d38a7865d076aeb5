"""Known-plaintext key recovery against Deep-Lock (one S-box round).

Threat model: the attacker holds the locked file and knows the plaintext of some weights: zero biases,
BatchNorm's initial gamma = 1 / beta = 0, the input-normalisation constants of a public dataset, or a layer
copied from a public checkpoint. With one round, every known weight ``w`` with locked bits ``w'`` gives its
key bytes ``k = InvS(w') XOR w`` (the paper's unlocking equation solved for ``k``).

* ``aes-expansion``: the key bytes are consecutive words of the AES-256 key expansion, which runs backwards:
  eight consecutive known words (32 bytes, e.g. eight float32 weights) rewind to ``w[0..7]``, the master
  key, which then unlocks the whole file with its MAC verified.
* ``ctr``: the key bytes are AES-CTR keystream under an HKDF subkey; the same attempt yields only the key
  bytes of the known weights themselves. The candidate "master key" the rewind produces fails the MAC, and
  using it to decrypt the other weights gives noise.

What is attacked (a locked file + known weights), what counts as success (a master key that passes the
file's MAC) and how (the rewind) are kept apart, as in foolbox.

Example:
    >>> import torch
    >>> from modelshield.keys import SecretKey
    >>> from modelshield.lock import LockConfig, lock_state_dict
    >>> weights = {"bias": torch.zeros(8), "weight": torch.randn(16)}
    >>> locked = lock_state_dict(weights, SecretKey.generate(), LockConfig("aes-expansion"))
    >>> recover_master_key(locked, {"bias": torch.zeros(8)}).verified
    True
    >>> locked = lock_state_dict(weights, SecretKey.generate(), LockConfig("ctr"))
    >>> recover_master_key(locked, {"bias": torch.zeros(8)}).verified
    False
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from modelshield.errors import ConfigError, IntegrityError
from modelshield.keys import SecretKey
from modelshield.lock.format import TensorEntry
from modelshield.lock.locked import LockedModel
from modelshield.lock.sbox import INV_SBOX
from modelshield.lock.schedule import expansion_rewind

__all__ = ["KeyRecoveryResult", "recover_keystream", "recover_master_key"]

WORD = 4
WINDOW_BYTES = 8 * WORD
MAX_WINDOWS_TRIED = 4


@dataclass(frozen=True)
class KeyRecoveryResult:
    """Outcome of the known-plaintext attack.

    Attributes:
        scheme: the file's key schedule.
        rounds: the file's S-box rounds (the attack needs 1).
        known_tensors: names of the tensors with known plaintext.
        known_bytes: plaintext bytes the attacker knew.
        keystream_bytes: key bytes recovered from them (equal to ``known_bytes`` with one round).
        windows_tried: payload offsets of the 32-byte key windows that were rewound.
        candidate: the master key the last rewind produced (right for ``aes-expansion``, noise for ``ctr``).
        verified: a candidate unlocked the file with its MAC checked: full recovery.
        key: the recovered master key when ``verified``.
        state_dict: every original weight when ``verified``.
        reason: one line saying what happened.
    """

    scheme: str
    rounds: int
    known_tensors: tuple[str, ...]
    known_bytes: int
    keystream_bytes: int
    windows_tried: tuple[int, ...]
    candidate: bytes | None
    verified: bool
    key: SecretKey | None = field(default=None, repr=False)
    state_dict: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    reason: str = ""


def _known_bytes(entry: TensorEntry, value: torch.Tensor) -> np.ndarray:
    if value.dtype != entry.torch_dtype:
        raise ConfigError(f"known tensor {entry.name!r}: dtype {value.dtype} does not match the file's {entry.dtype}")
    flat = value.detach().cpu().contiguous().reshape(-1)
    numel = entry.nbytes // max(1, flat.element_size())
    if flat.numel() > numel:
        raise ConfigError(f"known tensor {entry.name!r}: {flat.numel()} elements, the file's tensor has {numel}")
    return flat.view(torch.uint8).numpy() if flat.numel() else np.empty(0, dtype=np.uint8)


def recover_keystream(locked: LockedModel, known: Mapping[str, torch.Tensor]) -> dict[int, bytes]:
    """Round-0 key bytes at the known weights: payload offset -> ``InvS(locked) XOR known`` (one round only).

    Args:
        locked: the locked file.
        known: name -> the tensor's plaintext, or a prefix of its flattened elements.

    Raises:
        ConfigError: an unknown or unlocked tensor name, a dtype mismatch, too many elements, or rounds > 1.
    """
    if locked.header.rounds != 1:
        raise ConfigError(f"the known-plaintext equation needs one round; {locked.source} has {locked.header.rounds}")
    entries = {e.name: e for e in locked.header.tensors}
    view = locked.attacker_state_dict()
    recovered: dict[int, bytes] = {}
    for name, value in known.items():
        entry = entries.get(name)
        if entry is None or not entry.locked:
            raise ConfigError(f"known tensor {name!r} is not a locked tensor of {locked.source}")
        plain = _known_bytes(entry, value)
        cipher = view[name].reshape(-1).view(torch.uint8).numpy()[: plain.shape[0]]
        recovered[entry.offset] = (INV_SBOX[cipher] ^ plain).tobytes()
    return recovered


def _windows(keystream: dict[int, bytes]) -> list[tuple[int, bytes]]:
    """Word-aligned 32-byte runs of recovered key bytes (one per known tensor, earliest first)."""
    out = []
    for offset in sorted(keystream):
        data = keystream[offset]
        skip = -offset % WORD
        if len(data) - skip >= WINDOW_BYTES:
            out.append((offset + skip, data[skip : skip + WINDOW_BYTES]))
    return out


def recover_master_key(locked: LockedModel, known: Mapping[str, torch.Tensor]) -> KeyRecoveryResult:
    """Try to recover the master key from known weights by rewinding the AES-256 key expansion.

    The attempt is the same whatever the scheme; success is judged only by the file's own MAC.
    """
    h = locked.header
    names = tuple(sorted(known))
    entries = {e.name: e for e in h.tensors}
    known_bytes = sum(_known_bytes(entries[n], known[n]).shape[0] for n in names if n in entries)
    if h.rounds != 1:
        return KeyRecoveryResult(h.scheme, h.rounds, names, known_bytes, 0, (), None, False,
                                 reason=f"not applicable: {h.rounds} rounds hide the per-weight key bytes")
    keystream = recover_keystream(locked, known)
    total = sum(len(v) for v in keystream.values())
    windows = _windows(keystream)
    if not windows:
        return KeyRecoveryResult(h.scheme, h.rounds, names, known_bytes, total, (), None, False,
                                 reason="no 8 consecutive known key words (32 bytes) to rewind")
    tried: list[int] = []
    candidate = None
    for offset, data in windows[:MAX_WINDOWS_TRIED]:
        tried.append(offset)
        words = [int.from_bytes(data[i : i + WORD], "big") for i in range(0, WINDOW_BYTES, WORD)]
        candidate = expansion_rewind(words, 8 + offset // WORD)  # round 0 starts at expansion word 8
        try:
            state = locked.unlock_with_master_key(candidate, verify=True)
        except IntegrityError:
            continue
        return KeyRecoveryResult(h.scheme, h.rounds, names, known_bytes, total, tuple(tried), candidate, True,
                                 SecretKey(candidate), state,
                                 reason=f"master key recovered from the 32 key bytes at payload offset {offset}; MAC verified")
    return KeyRecoveryResult(h.scheme, h.rounds, names, known_bytes, total, tuple(tried), candidate, False,
                             reason=f"{len(tried)} rewound candidate(s) failed the MAC: only the {total} known key bytes are recovered")
