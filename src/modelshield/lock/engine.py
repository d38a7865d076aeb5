"""The lock transform over a whole payload, chunk by chunk (``docs/lock-format.md`` sections 3 to 5).

Locking round ``r`` of a chunk is one AES-CTR pass (``cryptography`` XORs the keystream into the data at
AES-NI speed) and one table lookup (:func:`~modelshield.lock.sbox.sub_bytes_into`, two bytes per lookup);
unlocking is the reverse. Chunks are small (256 KiB) so the working set stays in cache, and the HMAC is
updated with each chunk while it is still hot. Extra memory is the output (one copy of the weights) plus a
few chunk buffers.

:func:`reference_lock_bytes` is a deliberately naive implementation of the same transform, used by the
tests to check the fast path.
"""

from __future__ import annotations

import hmac
import queue
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from modelshield.lock.format import TensorEntry
from modelshield.lock.sbox import INV_SBOX, SBOX, sub_bytes_into
from modelshield.lock.schedule import Keystream

__all__ = ["CHUNK_BYTES", "lock_payload", "reference_lock_bytes", "reference_unlock_bytes", "unlock_payload"]

CHUNK_BYTES = 256 << 10
MAC_BATCH_BYTES = 4 << 20
THREAD_MIN_BYTES = 1 << 20

U8 = npt.NDArray[np.uint8]


def _cipher_accepts_exact_output() -> bool:
    """Whether ``update_into`` takes an output buffer exactly as long as the input (cryptography >= 43)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(bytes(32)), modes.CTR(bytes(16))).encryptor()
    try:
        encryptor.update_into(bytes(5), bytearray(5))
    except ValueError:
        return False
    return True


_EXACT_OUTPUT = _cipher_accepts_exact_output()


class _Scratch:
    def __init__(self) -> None:
        # +16: room for a cipher that wants len(data) + block_size - 1 bytes of output.
        self.xor = np.empty(CHUNK_BYTES + 16, dtype=np.uint8)
        self.xor_view = memoryview(self.xor)
        self.sub = np.empty(CHUNK_BYTES, dtype=np.uint8)


class PayloadMac:
    """Feeds ``payload[0 : upto]`` to an HMAC in order, on one background thread for large payloads.

    ``hashlib``/``hmac`` release the GIL while hashing, so the MAC runs beside the S-box work on a second
    core when there is one; the result is the same as hashing in line (the order of bytes is kept).
    """

    def __init__(self, mac: hmac.HMAC, payload: U8) -> None:
        self._mac = mac
        self._payload = payload
        self._handed = 0
        self._error: BaseException | None = None
        self._queue: queue.SimpleQueue[U8 | None] | None = None
        self._thread: threading.Thread | None = None
        if payload.shape[0] >= THREAD_MIN_BYTES:
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._work, name="modelshield-lock-mac", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        assert self._queue is not None
        while (piece := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._mac.update(piece)
                except BaseException as exc:  # pragma: no cover - re-raised in digest()
                    self._error = exc

    def advance(self, upto: int, *, force: bool = False) -> None:
        """Bytes below ``upto`` are final: hash them (batched unless ``force``)."""
        if upto - self._handed < (1 if force else MAC_BATCH_BYTES):
            return
        piece = self._payload[self._handed : upto]
        self._handed = upto
        if self._queue is not None:
            self._queue.put(piece)
        else:
            self._mac.update(piece)

    def digest(self) -> bytes:
        """Hash the rest of the payload, wait for the worker, return the tag."""
        self.advance(self._payload.shape[0], force=True)
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:  # pragma: no cover
            raise self._error
        return self._mac.digest()


def lock_payload(entries: Sequence[TensorEntry], sources: Sequence[U8], payload: U8, keystreams: Sequence[Keystream],
                 mac: hmac.HMAC) -> bytes:
    """Write every tensor's locked (or clear) bytes to its offset in ``payload``; return the MAC tag.

    Args:
        entries: the manifest, in payload order.
        sources: one flat uint8 view of each tensor's raw bytes.
        payload: zero-filled output of ``payload_bytes`` bytes.
        keystreams: round keystreams, round 0 first.
        mac: HMAC already fed with the prefix, header and padding; the payload is fed here, in order.
    """
    scratch = _Scratch()
    feeder = PayloadMac(mac, payload)
    for entry, source in zip(entries, sources):
        for start in range(0, entry.nbytes, CHUNK_BYTES):
            n = min(CHUNK_BYTES, entry.nbytes - start)
            at = entry.offset + start
            dst = payload[at : at + n]
            if entry.locked:
                current = source[start : start + n]
                for keystream in keystreams:
                    keystream.xor_into(memoryview(current), scratch.xor_view, at)
                    sub_bytes_into(scratch.xor[:n], dst)
                    current = dst
            else:
                dst[:] = source[start : start + n]
            feeder.advance(at + n)
    return feeder.digest()


def unlock_payload(entries: Sequence[TensorEntry], payload: U8, outputs: Sequence[U8], keystreams: Sequence[Keystream],
                   mac: hmac.HMAC | None) -> tuple[bytes | None, bool]:
    """Write every tensor's unlocked bytes into ``outputs``; hash the payload (if ``mac``) meanwhile.

    Returns:
        The MAC tag (None without ``mac``), and whether every gap between tensors is zero as the format requires.
    """
    scratch = _Scratch()
    feeder = PayloadMac(mac, payload) if mac is not None else None
    if feeder is not None:
        feeder.advance(payload.shape[0])  # the whole payload is known: hash it beside the transform
    cursor, gaps_zero = 0, True
    for entry, output in zip(entries, outputs):
        if entry.offset > cursor:
            gaps_zero = gaps_zero and not payload[cursor : entry.offset].any()
        for start in range(0, entry.nbytes, CHUNK_BYTES):
            n = min(CHUNK_BYTES, entry.nbytes - start)
            at = entry.offset + start
            src = payload[at : at + n]
            if not entry.locked:
                output[start : start + n] = src
                continue
            current = src
            for r in range(len(keystreams) - 1, -1, -1):
                sub_bytes_into(current, scratch.sub[:n], inverse=True)
                if r == 0 and _EXACT_OUTPUT:  # the last XOR writes straight into the tensor
                    keystreams[0].xor_into(memoryview(scratch.sub[:n]), memoryview(output[start : start + n]), at)
                    break
                keystreams[r].xor_into(memoryview(scratch.sub[:n]), scratch.xor_view, at)
                current = scratch.xor[:n]
            else:
                output[start : start + n] = current
        cursor = entry.offset + entry.nbytes
    return (feeder.digest() if feeder is not None else None), gaps_zero


def reference_lock_bytes(data: bytes, keys: Sequence[bytes]) -> bytes:
    """Naive reference: ``for k in keys: data = S(data XOR k)``, one byte at a time in numpy.

    Example:
        >>> reference_lock_bytes(bytes([0x00]), [bytes([0x53])]).hex()  # S(0x53) = 0xed
        'ed'
        >>> reference_unlock_bytes(bytes.fromhex("ed"), [bytes([0x53])])
        b'\\x00'
    """
    x = np.frombuffer(data, dtype=np.uint8).copy()
    for key in keys:
        x = SBOX[x ^ np.frombuffer(key, dtype=np.uint8)]
    return x.tobytes()


def reference_unlock_bytes(data: bytes, keys: Sequence[bytes]) -> bytes:
    """Naive reference inverse: ``for k in reversed(keys): data = InvS(data) XOR k``."""
    x = np.frombuffer(data, dtype=np.uint8).copy()
    for key in reversed(keys):
        x = INV_SBOX[x] ^ np.frombuffer(key, dtype=np.uint8)
    return x.tobytes()
