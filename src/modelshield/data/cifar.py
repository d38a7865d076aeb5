"""Reader for the CIFAR-10/100 "python version" batches, without unpickling arbitrary objects.

The official batches are Python pickles of a dict holding bytes, lists, ints and one numpy array. We parse
them with a restricted unpickler whose ``find_class`` admits only the three numpy callables needed to rebuild
an ndarray; anything else (a crafted file that would run code) raises :class:`FormatError`. This is the same
allow-list idea as ``torch.load(weights_only=True)``; the standard library has no safer reader for this format.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from modelshield.errors import FormatError

__all__ = ["read_cifar_batch"]

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell bytes; returns bytes only
}
_MAX_BATCH_BYTES = 512 * 1024 * 1024


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def read_cifar_batch(path: str | Path, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch into (images uint8 NCHW 3x32x32, labels int64).

    Args:
        path: a batch file such as ``data_batch_1`` or ``test``.
        label_key: ``"labels"`` (CIFAR-10) or ``"fine_labels"`` (CIFAR-100).

    Raises:
        FormatError: the file is not a well-formed CIFAR batch or holds forbidden objects.
    """
    path = Path(path)
    if path.stat().st_size > _MAX_BATCH_BYTES:
        raise FormatError(f"{path}: {path.stat().st_size} bytes is too large for a CIFAR batch")
    try:
        doc = _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as exc:  # any parse failure of an untrusted file is a format error
        raise FormatError(f"{path}: not a CIFAR python batch ({exc})") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: expected a dict, found {type(doc).__name__}")
    doc = {k.decode() if isinstance(k, bytes) else k: v for k, v in doc.items()}
    data, labels = doc.get("data"), doc.get(label_key)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise FormatError(f"{path}: 'data' must be an (N, 3072) array")
    if labels is None or len(labels) != data.shape[0]:
        raise FormatError(f"{path}: {label_key!r} must hold one label per image")
    images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(labels, dtype=np.int64)
