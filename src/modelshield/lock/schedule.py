"""Key schedules: where each weight's key bytes come from (``docs/lock-format.md`` section 4).

Both schedules expose the same small interface, a :class:`Keystream` per round that XORs its key bytes for
payload offsets ``[offset, offset + n)`` into a buffer:

* :class:`CtrKeystream` (``ctr``, default): AES-256-CTR under an HKDF subkey bound to the file's nonce.
  Any offset can be reached directly (counter block = offset / 16), at AES-NI speed via ``cryptography``.
* :class:`ExpansionKeystream` (``aes-expansion``, paper-faithful): the AES-256 key-expansion recurrence run
  past its usual 60 words, one 32-bit word per 4 payload bytes. Sequential, and invertible, which is
  exactly what the known-plaintext attack exploits (:func:`expansion_rewind`).

Example:
    >>> words = expansion_words(bytes(32), 0, 12)
    >>> [f"{w:08x}" for w in words[8:12]]  # FIPS-197 appendix A.3 style check for the all-zero key
    ['62636363', '62636363', '62636363', '62636363']
    >>> expansion_rewind(words[4:12], 4) == bytes(32)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelshield.lock.sbox import SBOX, gf_mul

__all__ = [
    "CtrKeystream",
    "ExpansionKeystream",
    "Keystream",
    "ctr_round_key",
    "expansion_rewind",
    "expansion_words",
    "mac_key",
    "make_keystreams",
]

_CTR_INFO = b"modelshield-lock v1 ctr round "
_MAC_INFO = b"modelshield-lock v1 mac"


def _hkdf(master: bytes, nonce: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=nonce, info=info).derive(master)


def ctr_round_key(master: bytes, nonce: bytes, round_index: int) -> bytes:
    """The AES-256 key of round ``round_index`` of the ``ctr`` schedule (HKDF-SHA256, salt = nonce)."""
    return _hkdf(master, nonce, _CTR_INFO + str(round_index).encode("ascii"))


def mac_key(master: bytes, nonce: bytes) -> bytes:
    """The HMAC-SHA256 key of a locked file (HKDF-SHA256, salt = nonce)."""
    return _hkdf(master, nonce, _MAC_INFO)


class Keystream(Protocol):
    """Round key material, addressed by payload offset."""

    def xor_into(self, src: memoryview, dst: memoryview, offset: int) -> None:
        """Write ``src XOR K[offset : offset + len(src)]`` into ``dst``.

        ``dst`` needs ``len(src) + 15`` bytes with a ``cryptography`` older than 43, ``len(src)`` otherwise.
        """


class CtrKeystream:
    """``K[16j : 16j + 16] = AES-256_k(j)``: AES-CTR from counter block 0, reachable at any offset.

    Args:
        key: the 32-byte round key (:func:`ctr_round_key`).

    Example:
        >>> ks = CtrKeystream(bytes(32))
        >>> out = bytearray(16 + 15)
        >>> ks.xor_into(memoryview(bytes(16)), memoryview(out), 0)
        >>> out[:16].hex()  # AES-256 of the zero block under the zero key
        'dc95c078a2408989ad48a21492842087'
    """

    def __init__(self, key: bytes) -> None:
        self._algorithm = algorithms.AES(key)
        self._next_offset = -1
        self._encryptor = None

    def xor_into(self, src: memoryview, dst: memoryview, offset: int) -> None:
        if offset % 16:
            raise ValueError(f"ctr keystream offsets must be multiples of 16, got {offset}")
        if offset != self._next_offset or self._encryptor is None:
            counter = (offset // 16).to_bytes(16, "big")
            self._encryptor = Cipher(self._algorithm, modes.CTR(counter)).encryptor()
        self._encryptor.update_into(src, dst)
        # A partial block leaves the encryptor mid-block: only a 16-aligned continuation can reuse it.
        self._next_offset = offset + len(src) if len(src) % 16 == 0 else -1


# -- aes-expansion --------------------------------------------------------------------------------------

def _rcon_table() -> list[int]:
    # Rcon(j) = x^(j-1) in GF(2^8), j >= 1; the powers of x have period 51.
    values, v = [], 1
    for _ in range(51):
        values.append(v << 24)
        v = gf_mul(v, 2)
    return values


_RCON = _rcon_table()
_S = [int(v) for v in SBOX]
_T3 = [v << 24 for v in _S]
_T2 = [v << 16 for v in _S]
_T1 = [v << 8 for v in _S]


def _sub_word(w: int) -> int:
    return _T3[w >> 24] | _T2[(w >> 16) & 255] | _T1[(w >> 8) & 255] | _S[w & 255]


def _sub_rot_word(w: int) -> int:
    # SubWord(RotWord(w)): bytes [b0 b1 b2 b3] -> [S(b1) S(b2) S(b3) S(b0)].
    return _T3[(w >> 16) & 255] | _T2[(w >> 8) & 255] | _T1[w & 255] | _S[w >> 24]


def _temp(prev: int, index: int) -> int:
    if index % 8 == 0:
        return _sub_rot_word(prev) ^ _RCON[(index // 8 - 1) % 51]
    if index % 8 == 4:
        return _sub_word(prev)
    return prev


def expansion_words(master: bytes, start: int, count: int) -> list[int]:
    """Words ``w[start : start + count]`` of the AES-256 key expansion of ``master``, continued indefinitely.

    Sequential: costs ``start + count`` recurrence steps.
    """
    if len(master) != 32:
        raise ValueError(f"the aes-expansion master key is 32 bytes, got {len(master)}")
    window = [int.from_bytes(master[4 * i : 4 * i + 4], "big") for i in range(8)]
    out: list[int] = []
    i = 0
    while i < start + count:
        if i >= 8:
            window[i % 8] ^= _temp(window[(i - 1) % 8], i)
        if i >= start:
            out.append(window[i % 8])
        i += 1
    return out


class _ExpansionState:
    """The last eight words and the index of the next one: the recurrence's whole state."""

    __slots__ = ("index", "words")

    def __init__(self, master: bytes) -> None:
        self.words = [int.from_bytes(master[4 * i : 4 * i + 4], "big") for i in range(8)]
        self.index = 8  # next word to produce

    def skip_to(self, index: int) -> None:
        self.take(index - self.index)

    def take(self, count: int) -> list[int]:
        words, i, out = self.words, self.index, []
        append = out.append
        sub_rot, sub, rcon = _sub_rot_word, _sub_word, _RCON
        stop = i + count
        # Unaligned head, then whole groups of eight unrolled (the hot loop), then the tail.
        while i < stop and i % 8:
            words[i % 8] ^= _temp(words[(i - 1) % 8], i)
            append(words[i % 8])
            i += 1
        w0, w1, w2, w3, w4, w5, w6, w7 = words
        while i + 8 <= stop:
            w0 ^= sub_rot(w7) ^ rcon[(i // 8 - 1) % 51]
            w1 ^= w0
            w2 ^= w1
            w3 ^= w2
            w4 ^= sub(w3)
            w5 ^= w4
            w6 ^= w5
            w7 ^= w6
            out += (w0, w1, w2, w3, w4, w5, w6, w7)
            i += 8
        words[:] = [w0, w1, w2, w3, w4, w5, w6, w7]
        while i < stop:
            words[i % 8] ^= _temp(words[(i - 1) % 8], i)
            append(words[i % 8])
            i += 1
        self.index = i
        return out


class ExpansionKeystream:
    """Round ``r`` of ``aes-expansion``: ``K_r = bytes(w[8 + r*M]) || bytes(w[9 + r*M]) || ...`` (big-endian).

    Offsets must be non-decreasing between calls (the recurrence is sequential); going back restarts it.

    Args:
        master: the 32-byte master key (used directly as the first eight expansion words).
        first_word: index of the first word of this round, ``8 + r * ceil(L / 4)``.
    """

    def __init__(self, master: bytes, first_word: int) -> None:
        self._master = master
        self._first = first_word
        self._state = _ExpansionState(master)

    def keystream(self, offset: int, length: int) -> bytes:
        """Key bytes ``K[offset : offset + length]``."""
        lo = self._first + offset // 4
        hi = self._first + -(-(offset + length) // 4)
        if lo < self._state.index:
            self._state = _ExpansionState(self._master)
        self._state.skip_to(lo)
        words = np.array(self._state.take(hi - lo), dtype=">u4").tobytes()
        head = offset % 4
        return words[head : head + length]

    def xor_into(self, src: memoryview, dst: memoryview, offset: int) -> None:
        n = len(src)
        key = np.frombuffer(self.keystream(offset, n), dtype=np.uint8)
        out = np.frombuffer(dst, dtype=np.uint8, count=n)
        np.bitwise_xor(np.frombuffer(src, dtype=np.uint8, count=n), key, out=out)


def expansion_rewind(window: Sequence[int], start: int) -> bytes:
    """Run the key expansion backwards from eight consecutive words ``w[start : start + 8]`` to the master key.

    ``w[i - 8] = w[i] XOR temp(w[i - 1], i)``, applied ``start`` times, leaves ``w[0 : 8]``: the 32 key bytes.

    Example:
        >>> key = bytes(range(32))
        >>> expansion_rewind(expansion_words(key, 1000, 8), 1000) == key
        True
    """
    if len(window) != 8:
        raise ValueError(f"expansion_rewind needs 8 consecutive words, got {len(window)}")
    w = [int(v) & 0xFFFFFFFF for v in window]  # w[k] holds word start + k
    for s in range(start, 0, -1):
        # The window holds words s .. s+7; compute word s-1 from word s+7 and word s+6.
        previous = w[7] ^ _temp(w[6], s + 7)
        w = [previous, *w[:7]]
    return b"".join(v.to_bytes(4, "big") for v in w)


def make_keystreams(scheme: str, master: bytes, nonce: bytes, rounds: int, payload_bytes: int) -> list[Keystream]:
    """The ``rounds`` keystreams of a file, round 0 first."""
    if scheme == "ctr":
        return [CtrKeystream(ctr_round_key(master, nonce, r)) for r in range(rounds)]
    words_per_round = -(-payload_bytes // 4)
    return [ExpansionKeystream(master, 8 + r * words_per_round) for r in range(rounds)]

