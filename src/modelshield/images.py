"""Image batches as users pass them: torch tensors or numpy arrays, float in [0, 1] or uint8 in [0, 255].

Every public function that takes images calls :func:`as_image_batch` first, so a numpy array works wherever a
tensor does, a uint8 batch is converted explicitly (divided by 255) instead of being read as values up to 255,
and a wrong input is a :class:`~modelshield.errors.ConfigError` naming what was expected and what was found,
never an AttributeError deep inside torch.

Example:
    >>> import numpy as np
    >>> x = as_image_batch(np.full((2, 1, 4, 4), 255, dtype=np.uint8))
    >>> x.dtype, x.max().item(), tuple(x.shape)
    (torch.float32, 1.0, (2, 1, 4, 4))
    >>> as_image_batch(np.zeros((4, 4)), what="queries")
    Traceback (most recent call last):
    ...
    modelshield.errors.ConfigError: queries must be a 4-D (N, C, H, W) batch, got shape (4, 4)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from modelshield.errors import ConfigError

__all__ = ["as_image_batch"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def as_image_batch(x: Any, *, what: str = "images", shape: tuple[int, int, int] | None = None,
                   finite: bool = True) -> torch.Tensor:
    """Validate and convert an image batch to float32 (N, C, H, W) in raw pixel space.

    Args:
        x: a torch tensor or numpy array, float (taken as [0, 1] pixels) or uint8 (divided by 255).
        what: how the error messages name the input (e.g. ``"queries"``).
        shape: the (C, H, W) expected, or None not to check.
        finite: refuse NaN and infinite values.

    Returns:
        A float32 tensor (a new one when a conversion was needed; the input itself otherwise).

    Raises:
        ConfigError: not an array, not 4-D, an unsupported dtype, a wrong (C, H, W), or non-finite values.
    """
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint8:
            x = torch.from_numpy(np.ascontiguousarray(x))
        elif x.dtype.kind == "f":
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        else:
            raise ConfigError(f"{what} must be float (pixels in [0, 1]) or uint8 (0-255), got numpy dtype {x.dtype}")
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"{what} must be a torch tensor or numpy array, got {type(x).__name__}")
    if x.dim() != 4:
        raise ConfigError(f"{what} must be a 4-D (N, C, H, W) batch, got shape {tuple(x.shape)}")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        expected = ", ".join(map(str, shape))
        raise ConfigError(f"{what} must have shape (N, {expected}), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    elif x.dtype in _FLOATS:
        x = x.float()
    else:
        raise ConfigError(f"{what} must be float (pixels in [0, 1]) or uint8 (0-255), got {x.dtype}")
    if finite and not torch.isfinite(x).all():
        raise ConfigError(f"{what} hold NaN or infinite values")
    return x
