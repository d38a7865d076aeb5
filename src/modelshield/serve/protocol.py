"""The Open Inference Protocol v2 REST subset (KServe, Triton, MLServer): request/response models and checks.

One input tensor per request, named freely (``input`` in the metadata), shape ``[N, C, H, W]``, datatype
``FP32`` (pixels in [0, 1]) or ``UINT8`` (0-255), ``data`` flat or nested in row-major order. Outputs:
``probabilities`` (FP32, ``[N, K]``) and ``label`` (INT64, ``[N]``), as the client's policy allows. The binary
tensor extension is not supported: clients send JSON (tritonclient: ``binary_data=False``).

Example:
    >>> req = InferenceRequest.model_validate({"id": "7", "inputs": [{"name": "input", "shape": [1, 1, 2, 2],
    ...     "datatype": "UINT8", "data": [[0, 255], [51, 102]]}]})
    >>> decode_input(req.inputs[0], (1, 2, 2), max_images=4).flatten().tolist()
    [0.0, 1.0, 0.20000000298023224, 0.4000000059604645]
    >>> decode_input(req.inputs[0], (1, 3, 3), max_images=4)
    Traceback (most recent call last):
    ...
    modelshield.serve.protocol.BadRequest: input 'input': shape must be [N, 1, 3, 3], got [1, 1, 2, 2]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BadRequest",
    "ErrorResponse",
    "InferenceRequest",
    "InferenceResponse",
    "MetadataTensor",
    "ModelMetadata",
    "RequestInput",
    "RequestOutput",
    "ResponseOutput",
    "ServerMetadata",
    "decode_input",
]

INPUT_DATATYPES = ("FP32", "UINT8")


class BadRequest(ValueError):
    """A request the protocol refuses (400 with its message)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RequestInput(_Model):
    """One input tensor."""

    name: str = Field(max_length=256)
    shape: list[int] = Field(max_length=8)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="tensor elements, flat or nested, row-major")


class RequestOutput(_Model):
    """An output the client asks for by name."""

    name: str = Field(max_length=256)
    parameters: dict[str, Any] | None = None


class InferenceRequest(_Model):
    """``POST /v2/models/{name}/infer`` body."""

    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=8)
    outputs: list[RequestOutput] | None = Field(default=None, max_length=8)


class ResponseOutput(_Model):
    """One output tensor (data flat, row-major)."""

    name: str
    shape: list[int]
    datatype: str
    data: list[float] | list[int]


class InferenceResponse(_Model):
    """Inference answer."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(_Model):
    """Name, datatype and shape (``-1`` for the batch axis) of an input or output."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(_Model):
    """``GET /v2/models/{name}``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadata(_Model):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class ErrorResponse(_Model):
    """Every error body."""

    error: str


def _shape_text(shape: Any) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def decode_input(tensor: RequestInput, input_shape: tuple[int, int, int], *, max_images: int) -> torch.Tensor:
    """Validate one input tensor and return it as a float32 (N, C, H, W) batch of [0, 1] pixels.

    Raises:
        BadRequest: unknown datatype, wrong shape, too many images, data length or type not matching,
            NaN/Inf, values out of range.
    """
    where = f"input {tensor.name!r}"
    if tensor.datatype not in INPUT_DATATYPES:
        raise BadRequest(f"{where}: datatype must be one of {', '.join(INPUT_DATATYPES)}, got {tensor.datatype!r}")
    expected = [*input_shape]
    shape = tensor.shape
    if len(shape) != 4 or list(shape[1:]) != expected:
        raise BadRequest(f"{where}: shape must be [N, {', '.join(map(str, expected))}], got {_shape_text(shape)}")
    n = shape[0]
    if not 1 <= n <= max_images:
        raise BadRequest(f"{where}: N must be between 1 and {max_images} images per request, got {n}")
    want = n * math.prod(expected)
    try:
        array = np.asarray(tensor.data)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"{where}: data must be numbers, flat or nested in equal-length rows") from None
    if array.dtype.kind not in "iuf" or (tensor.datatype == "UINT8" and array.dtype.kind == "f"):
        kind = "integers 0-255" if tensor.datatype == "UINT8" else "numbers"
        raise BadRequest(f"{where}: {tensor.datatype} data must be {kind}, got {array.dtype.kind!r}-kind values "
                         f"(e.g. {str(tensor.data[:1])[:40]})")
    if array.size != want:
        raise BadRequest(f"{where}: data holds {array.size} values, shape {_shape_text(shape)} needs {want}")
    if tensor.datatype == "UINT8":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise BadRequest(f"{where}: UINT8 values must be in 0..255, got {array.min()}..{array.max()}")
        return torch.from_numpy(array.astype(np.float32).reshape(n, *expected) / np.float32(255.0))
    values = array.astype(np.float32).reshape(n, *expected)
    if not np.isfinite(values).all():
        raise BadRequest(f"{where}: FP32 data holds NaN or infinite values")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise BadRequest(f"{where}: FP32 pixels must be in [0, 1], got {values.min():.4g}..{values.max():.4g}")
    return torch.from_numpy(values)
