"""QUEEN's state for one client, and its byte encoding (JSON header + raw little-endian arrays, never pickle).

Layout: ``b"MSQS"``, a 4-byte little-endian header length (at most 64 KiB), a UTF-8 JSON header
``{"version": 1, "num_classes": K, "queries": n, "arrays": {name: {"dtype", "shape", "offset"}}}`` (the header
rules of :mod:`modelshield.container`: strict JSON, exact keys; the magic names the format), then the arrays'
bytes. Arrays: ``coverage`` (K,) float64, ``counts`` (K,) int64 (recorded points per class),
``points`` (sum(counts), 2) float32 (the recorded 2-D points, class by class), ``reversed`` (K,) int64
(answers reversed so far). Decoding validates every field against the expected dtypes, shapes and sizes.

Example:
    >>> import numpy as np
    >>> s = QueenClientState.empty(3)
    >>> s.points[1] = np.array([[0.5, 0.25]], dtype=np.float32); s.coverage[1] = 0.01
    >>> t = QueenClientState.from_bytes(s.to_bytes())
    >>> t.points[1].tolist(), t.coverage.tolist(), [len(p) for p in t.points]
    ([[0.5, 0.25]], [0.0, 0.01, 0.0], [0, 1, 0])
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from modelshield.container import Fields, HeaderSpec, check_magic, encode_header, parse_header
from modelshield.errors import FormatError

__all__ = ["QueenClientState"]

_MAGIC = b"MSQS"
_VERSION = 1
_MAX_HEADER = 1 << 16
_DTYPES = {"coverage": "<f8", "counts": "<i8", "points": "<f4", "reversed": "<i8"}
SPEC = HeaderSpec("QUEEN client state", None, _VERSION, required={"num_classes", "queries", "arrays"},
                  optional={"window"}, max_bytes=_MAX_HEADER)


@dataclass
class QueenClientState:
    """Coverage, recorded points and counters of one client.

    Attributes:
        coverage: CQS per class (fraction of the sensitive region covered).
        points: per class, the recorded 2-D points (n_c, 2) float32.
        reversed: per class, how many answers were reversed.
        queries: total queries answered (over the client's life: a new window does not reset it).
        window: the time window the coverage and points belong to (``QueenConfig.window_seconds``; 0 without
            windows). Written to the header only when non-zero, so states without windows keep their bytes.
    """

    coverage: np.ndarray
    points: list[np.ndarray]
    reversed: np.ndarray
    queries: int = 0
    window: int = 0

    @classmethod
    def empty(cls, num_classes: int) -> QueenClientState:
        """The state of a client never seen."""
        return cls(np.zeros(num_classes), [np.zeros((0, 2), np.float32) for _ in range(num_classes)],
                   np.zeros(num_classes, np.int64))

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return int(self.coverage.shape[0])

    @property
    def counts(self) -> np.ndarray:
        """Recorded points per class."""
        return np.array([len(p) for p in self.points], dtype=np.int64)

    def to_bytes(self) -> bytes:
        """Encode (see the module docstring)."""
        arrays = {
            "coverage": np.ascontiguousarray(self.coverage, dtype=_DTYPES["coverage"]),
            "counts": np.ascontiguousarray(self.counts, dtype=_DTYPES["counts"]),
            "points": np.ascontiguousarray(np.concatenate(self.points).reshape(-1, 2), dtype=_DTYPES["points"]),
            "reversed": np.ascontiguousarray(self.reversed, dtype=_DTYPES["reversed"]),
        }
        meta, blobs, offset = {}, [], 0
        for name, arr in arrays.items():
            meta[name] = {"dtype": _DTYPES[name], "shape": list(arr.shape), "offset": offset}
            blobs.append(arr.tobytes())
            offset += arr.nbytes
        doc = {"num_classes": self.num_classes, "queries": int(self.queries), "arrays": meta}
        if self.window:
            doc["window"] = int(self.window)
        header = encode_header(doc, SPEC)
        return _MAGIC + struct.pack("<I", len(header)) + header + b"".join(blobs)

    @classmethod
    def from_bytes(cls, data: bytes, num_classes: int | None = None, *, source: str = "<client state>") -> QueenClientState:
        """Decode and validate; ``num_classes`` (if given) must match.

        Args:
            data: the encoded state.
            num_classes: the class count the caller expects, or None.
            source: where the bytes come from (a file, a store key), named in error messages.

        Raises:
            FormatError: wrong magic or version, malformed header, or arrays that do not fit.
        """
        check_magic(data[:4], _MAGIC, SPEC, source)
        if len(data) < 8:
            raise FormatError(f"{source}: truncated QUEEN client state ({len(data)} bytes, shorter than the 8-byte prefix)")
        (hlen,) = struct.unpack("<I", data[4:8])
        if not 2 <= hlen <= _MAX_HEADER:
            raise FormatError(f"{source}: header length {hlen} is outside 2..{_MAX_HEADER}")
        if 8 + hlen > len(data):
            raise FormatError(f"{source}: truncated QUEEN client state: the header needs {8 + hlen} bytes, got {len(data)}")
        header = parse_header(data[8 : 8 + hlen], SPEC, source)
        fields = Fields(source)
        k = int(fields.integer(header, "num_classes", 1, 1 << 20))  # type: ignore[arg-type]
        queries = int(fields.integer(header, "queries", 0, 2**63 - 1))  # type: ignore[arg-type]
        window = int(fields.integer(header, "window", 1, 2**63 - 1)) if "window" in header else 0  # type: ignore[arg-type]
        arrays = fields.exact_keys(fields.obj(header, "arrays"), set(_DTYPES), where="arrays")
        if num_classes is not None and k != num_classes:
            raise fields.fail("num_classes", f"{num_classes} (the protected model's classes)", k)
        body = memoryview(data)[8 + hlen :]
        out: dict[str, np.ndarray] = {}
        for name, dtype in _DTYPES.items():
            where = f"arrays.{name}."
            spec = fields.exact_keys(arrays[name], {"dtype", "shape", "offset"}, where=f"arrays.{name}")
            fields.string(spec, "dtype", where=where, choices=(dtype,))
            shape = fields.int_list(spec, "shape", 0, 1 << 40, where=where, max_items=2)
            offset = int(fields.integer(spec, "offset", 0, len(body), where=where))  # type: ignore[arg-type]
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if offset + nbytes > len(body):
                raise FormatError(f"{source}: array {name!r} ({nbytes} bytes at {offset}) overruns the {len(body)} data bytes")
            out[name] = np.frombuffer(body[offset : offset + nbytes], dtype=dtype).reshape(shape).copy()
        counts = out["counts"]
        if out["coverage"].shape != (k,) or counts.shape != (k,) or out["reversed"].shape != (k,):
            raise FormatError(f"{source}: per-class arrays must have shape ({k},)")
        if (counts < 0).any() or out["points"].shape != (int(counts.sum()), 2):
            raise FormatError(f"{source}: points {out['points'].shape} do not match counts {counts.tolist()}")
        bounds = np.concatenate([[0], np.cumsum(counts)])
        points = [out["points"][bounds[i] : bounds[i + 1]] for i in range(k)]
        return cls(out["coverage"].astype(np.float64), points, out["reversed"].astype(np.int64), queries, window)
