"""Small file helpers shared by every writer: atomic writes with explicit permissions."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["atomic_write_bytes"]


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes | memoryview | Iterable[bytes | memoryview], *, mode: int = 0o644
) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    ``data`` is one bytes-like object or an iterable of them, written in order without being joined (so a
    large payload is never copied).

    The file is created with ``mode`` from the start (never world-readable for a moment when ``mode`` is
    0o600). A reader sees either the old file or the whole new one, never a partial write.

    Example:
        >>> import tempfile, os
        >>> p = atomic_write_bytes(os.path.join(tempfile.mkdtemp(), "x.bin"), b"abc", mode=0o600)
        >>> p.read_bytes(), oct(p.stat().st_mode & 0o777)
        (b'abc', '0o600')
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            for part in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target
