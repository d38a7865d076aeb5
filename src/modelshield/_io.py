"""Small file helpers shared by every writer: atomic writes with explicit permissions."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["atomic_write_bytes"]


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes | memoryview | Iterable[bytes | memoryview], *, mode: int = 0o644,
    overwrite: bool = True,
) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    ``data`` is one bytes-like object or an iterable of them, written in order without being joined (so a
    large payload is never copied).

    The file is created with ``mode`` from the start (never world-readable for a moment when ``mode`` is
    0o600). A reader sees either the old file or the whole new one, never a partial write.

    With ``overwrite=False`` the final step is a hard link instead of a rename, which fails atomically with
    :class:`FileExistsError` if ``path`` exists (no check-then-write race); the temporary file is removed.

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
        if overwrite:
            os.replace(tmp, target)
        else:
            _publish_new(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def _publish_new(tmp: str, target: Path) -> None:
    """Move ``tmp`` to ``target`` only if nothing is there: a hard link (atomic), then drop ``tmp``."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename (a narrow race, no better way)
        if os.path.lexists(target):
            raise FileExistsError(f"{target} already exists") from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)
