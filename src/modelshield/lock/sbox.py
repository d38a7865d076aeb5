"""The AES (Rijndael) S-box and its inverse, applied byte by byte to raw tensor bits.

The tables are computed here from their definition in FIPS-197 section 5.1.1 (multiplicative inverse in
GF(2^8) modulo x^8 + x^4 + x^3 + x + 1, followed by the affine map with constant 0x63), not pasted in; the
tests check them against the published vectors.

For speed the byte-wise S-box is also provided as a 65,536-entry table over 16-bit words
(``SBOX16[w] == SBOX[w & 0xFF] | SBOX[w >> 8] << 8``), so one numpy ``take`` substitutes two bytes. The
result is identical to the byte-wise definition (a test compares both on every 16-bit value).

Example:
    >>> hex(SBOX[0x00]), hex(SBOX[0x53]), hex(INV_SBOX[0xED])
    ('0x63', '0xed', '0x53')
    >>> import numpy as np
    >>> data = np.arange(8, dtype=np.uint8)
    >>> bool((inv_sub_bytes(sub_bytes(data)) == data).all())
    True
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["INV_SBOX", "INV_SBOX16", "SBOX", "SBOX16", "gf_mul", "inv_sub_bytes", "sub_bytes", "sub_bytes_into"]

_AES_POLY = 0x11B


def gf_mul(a: int, b: int) -> int:
    """Multiply two bytes in GF(2^8) with the AES polynomial.

    Example:
        >>> hex(gf_mul(0x57, 0x83))  # FIPS-197 section 4.2
        '0xc1'
    """
    result = 0
    while b:
        if b & 1:
            result ^= a
        a <<= 1
        if a & 0x100:
            a ^= _AES_POLY
        b >>= 1
    return result


def _gf_inverse(a: int) -> int:
    # a^254 = a^-1 for a != 0 (the multiplicative group has order 255); 0 maps to 0 by definition.
    if a == 0:
        return 0
    result, base, exp = 1, a, 254
    while exp:
        if exp & 1:
            result = gf_mul(result, base)
        base = gf_mul(base, base)
        exp >>= 1
    return result


def _affine(b: int) -> int:
    # b'_i = b_i ^ b_{i+4} ^ b_{i+5} ^ b_{i+6} ^ b_{i+7} ^ c_i  (indices mod 8), c = 0x63.
    out = 0
    for i in range(8):
        bit = (b >> i) ^ (b >> ((i + 4) % 8)) ^ (b >> ((i + 5) % 8)) ^ (b >> ((i + 6) % 8)) ^ (b >> ((i + 7) % 8))
        out |= (bit & 1) << i
    return out ^ 0x63


def _build() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    sbox = np.array([_affine(_gf_inverse(x)) for x in range(256)], dtype=np.uint8)
    inv = np.empty(256, dtype=np.uint8)
    inv[sbox] = np.arange(256, dtype=np.uint8)
    sbox.setflags(write=False)
    inv.setflags(write=False)
    return sbox, inv


def _widen(table: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint16]:
    # Little-endian 16-bit words: the low byte is the first byte in memory.
    words = np.arange(1 << 16, dtype=np.uint32)
    wide = (table[words & 0xFF].astype(np.uint16) | (table[words >> 8].astype(np.uint16) << 8)).astype(np.uint16)
    wide.setflags(write=False)
    return wide


SBOX, INV_SBOX = _build()
SBOX16 = _widen(SBOX) if np.little_endian else _widen(SBOX).byteswap()
INV_SBOX16 = _widen(INV_SBOX) if np.little_endian else _widen(INV_SBOX).byteswap()


def sub_bytes(data: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Apply the S-box to every byte of a uint8 array (reference implementation, returns a new array)."""
    return SBOX[np.asarray(data, dtype=np.uint8)]


def inv_sub_bytes(data: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Apply the inverse S-box to every byte of a uint8 array (reference implementation)."""
    return INV_SBOX[np.asarray(data, dtype=np.uint8)]


def sub_bytes_into(src: npt.NDArray[np.uint8], out: npt.NDArray[np.uint8], *, inverse: bool = False) -> None:
    """Substitute every byte of ``src`` into ``out`` (same length; may be the same array), fast path.

    Uses the 16-bit table on the even-length prefix and the byte table on a trailing odd byte.

    Example:
        >>> src = np.array([0x00, 0x53, 0x01], dtype=np.uint8)
        >>> out = np.empty_like(src)
        >>> sub_bytes_into(src, out)
        >>> [hex(b) for b in out]
        ['0x63', '0xed', '0x7c']
    """
    n = src.shape[0]
    even = n & ~1
    if even:
        table16 = INV_SBOX16 if inverse else SBOX16
        # mode="clip": every uint16 index is in range anyway, and unlike mode="raise" it does not buffer ``out``
        np.take(table16, src[:even].view(np.uint16), out=out[:even].view(np.uint16), mode="clip")
    if n & 1:
        table = INV_SBOX if inverse else SBOX
        out[n - 1] = table[src[n - 1]]
