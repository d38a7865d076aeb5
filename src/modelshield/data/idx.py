"""Reader for the IDX format of MNIST and Fashion-MNIST (gzip-compressed or raw).

Format: a 4-byte magic ``0x00 0x00 <dtype> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the data.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from modelshield.errors import FormatError

__all__ = ["read_idx"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_MAX_DIMS = 4


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array, validating its header against its size.

    Raises:
        FormatError: bad magic, unknown type code, or a size that does not match the header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise FormatError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise FormatError(f"{path}: not an IDX file (bad magic bytes)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise FormatError(f"{path}: unknown IDX type code 0x{code:02x}")
    if not 1 <= ndim <= _MAX_DIMS:
        raise FormatError(f"{path}: IDX files here have 1..{_MAX_DIMS} dimensions, header says {ndim}")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise FormatError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise FormatError(f"{path}: header promises {expected} data bytes for shape {dims}, file has {len(raw) - header_end}")
    return np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(dims).astype(dtype.newbyteorder("="))
