"""The AuthNet key: a mask and an offset applied to inputs in normalised space, and its file format.

The key acts on *normalised* images ``z = (r - mean) / std``::

    m = 0.5 + 0.5 * tanh(8 * (M - 0.5))      raw mask M (1 x H x W, shared over channels) clipped to [0, 0.5]
    key(z) = (1 - m) * z + m * P             offset P (C x H x W) clipped to [-theta, theta], theta = 0.5

so ``m`` lies in [0.0003, 0.5] and no pixel is more than half key. Two entry points, do not mix them up:

* :meth:`AuthKey.apply_normalized` takes and returns *normalised* batches: ``key(z)``.
* :meth:`AuthKey.apply` takes *raw* [0, 1] batches ``r`` (what zoo models take) and returns raw-space images
  ``r'`` with ``normalize(r') = key(normalize(r))``, so the unchanged protected model can be called on them:
  ``model(key.apply(r))``. ``r'`` may leave [0, 1]; do not clip it.

Both take a torch tensor or a numpy array; :meth:`AuthKey.apply` converts a uint8 (0-255) batch explicitly
with :func:`~modelshield.images.as_image_batch`, and :meth:`AuthKey.apply_normalized` refuses uint8 (a
normalised batch is never uint8 pixels).

Key file (version 1): a safetensors file holding float32 tensors ``mask`` (raw M, 1xHxW) and ``offset``
(P, CxHxW), with JSON metadata under ``modelshield-auth-key``::

    {"format": "modelshield-auth-key", "version": 1, "input_shape": [C, H, W],
     "normalization": {"mean": [...], "std": [...]}, "gate": "body.pool2",
     "model_fingerprint": "<32 hex>" | null, "bits": [...], "theta": 0.5,
     "gate_choice": {"gate": ..., "method": "auto" | "default" | "given", "candidates": [...],
                     "trials": [{"gate": ..., "gate_shape": [...], "tail_share": ..., "legit": ..., ...}, ...]}}

(``gate_choice`` is optional: how the gate was chosen, with the ``"auto"`` trial table; see
:class:`~modelshield.auth.autogate.GateChoice`).

written atomically with mode 0600 and never unpickled. The safetensors header and this metadata are checked
with the shared rules of :mod:`modelshield.container` (caps, strict JSON, exact keys, the tensors' names,
dtypes and shapes) before any tensor is read.

Example:
    >>> import os, tempfile, torch
    >>> from modelshield.data import Normalization
    >>> key = AuthKey.random((1, 4, 4), Normalization((0.5,), (0.25,)), gate="body.pool2",
    ...                      generator=torch.Generator().manual_seed(0))
    >>> r = torch.rand(2, 1, 4, 4)
    >>> z = key.normalization.apply(r)
    >>> torch.allclose(key.normalization.apply(key.apply(r)), key.apply_normalized(z), atol=1e-5)
    True
    >>> path = key.save(os.path.join(tempfile.mkdtemp(), "model.authkey"))
    >>> oct(path.stat().st_mode & 0o777), AuthKey.load(path) == key
    ('0o600', True)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn

from modelshield.auth.autogate import METHODS, TRIAL_FIELDS, GateChoice
from modelshield.container import (
    Fields,
    HeaderSpec,
    load_secret_file,
    metadata_entry,
    metadata_header,
    read_safetensors_header,
    save_secret_file,
    secret_from_env,
)
from modelshield.data.types import Normalization
from modelshield.errors import ConfigError, FormatError
from modelshield.images import as_image_batch
from modelshield.models.checkpoint import read_normalization, state_dict_fingerprint

__all__ = ["AUTH_KEY_ENV", "AuthKey", "KeyedModel", "mask_from_raw", "model_fingerprint"]

KEY_FORMAT = "modelshield-auth-key"
KEY_VERSION = 1
AUTH_KEY_ENV = "MODELSHIELD_AUTH_KEY"
MASK_MAX = 0.5
SHARPNESS = 8.0
DEFAULT_THETA = 0.5
_MAX_FILE_BYTES = 64 << 20
_MAX_HEADER_BYTES = 1 << 16
SPEC = HeaderSpec("AuthNet key file", KEY_FORMAT, KEY_VERSION, required={"input_shape", "normalization", "gate"},
                  optional={"model_fingerprint", "bits", "theta", "gate_choice"}, max_bytes=_MAX_HEADER_BYTES)


def mask_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """``m = 0.5 + 0.5 * tanh(8 * (M - 0.5))`` with ``M`` clipped to [0, 0.5].

    Example:
        >>> [round(v, 4) for v in mask_from_raw(torch.tensor([0.0, 0.5, 9.0])).tolist()]
        [0.0003, 0.5, 0.5]
    """
    return 0.5 + 0.5 * torch.tanh(SHARPNESS * (raw.clamp(0.0, MASK_MAX) - 0.5))


def raw_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`mask_from_raw` for ``m`` in its range (values outside are clipped)."""
    lo = float(mask_from_raw(torch.tensor(0.0)))
    m = mask.clamp(lo, MASK_MAX)
    return (0.5 + torch.atanh((2.0 * m - 1.0).clamp(-1 + 1e-7, 0.0)) / SHARPNESS).clamp(0.0, MASK_MAX)


def model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of a model's weights (SHA-256 of its state dict, 32 hex digits)."""
    return state_dict_fingerprint(model.state_dict())


class AuthKey:
    """A secret input transformation (mask + offset) bound to one protected model.

    Args:
        mask_raw: raw mask ``M``, shape (1, H, W) (or (H, W)), clipped to [0, 0.5].
        offset: ``P``, shape (C, H, W), clipped to [-theta, theta].
        normalization: the input statistics the key assumes (the model's own).
        gate: name of the gate module the key was made for.
        model_fingerprint: fingerprint of the protected model (None: not bound yet).
        bits: the gate channels the key switches on (informational).
        theta: bound on the offset.
        gate_choice: how the gate was chosen (informational; with ``gate="auto"`` the trial table).

    Raises:
        ConfigError: shapes that do not agree, non-finite values, or normalisation of the wrong channel count.
    """

    __slots__ = ("bits", "gate", "gate_choice", "mask_raw", "model_fingerprint", "normalization", "offset", "theta")

    def __init__(self, mask_raw: torch.Tensor, offset: torch.Tensor, normalization: Normalization, gate: str, *,
                 model_fingerprint: str | None = None, bits: tuple[int, ...] = (), theta: float = DEFAULT_THETA,
                 gate_choice: GateChoice | None = None) -> None:
        mask_raw = mask_raw.detach().float().cpu()
        if mask_raw.dim() == 2:
            mask_raw = mask_raw.unsqueeze(0)
        offset = offset.detach().float().cpu()
        if offset.dim() != 3 or mask_raw.dim() != 3 or mask_raw.shape != (1, *offset.shape[1:]):
            raise ConfigError(f"key shapes disagree: mask {tuple(mask_raw.shape)} must be (1, H, W) for offset (C, H, W) "
                              f"{tuple(offset.shape)}")
        if not (torch.isfinite(mask_raw).all() and torch.isfinite(offset).all()):
            raise ConfigError("key mask and offset must be finite")
        if not (0 < theta <= 10 and math.isfinite(theta)):
            raise ConfigError(f"theta must be in (0, 10], got {theta}")
        if normalization.channels != offset.shape[0]:
            raise ConfigError(f"normalization has {normalization.channels} channels, the key has {offset.shape[0]}")
        self.mask_raw = mask_raw.clamp(0.0, MASK_MAX).contiguous()
        self.offset = offset.clamp(-theta, theta).contiguous()
        self.normalization = normalization
        self.gate = str(gate)
        self.model_fingerprint = model_fingerprint
        self.bits = tuple(int(b) for b in bits)
        self.theta = float(theta)
        if gate_choice is not None and gate_choice.gate != self.gate:
            raise ConfigError(f"the gate choice names gate {gate_choice.gate!r}, the key is for {self.gate!r}")
        self.gate_choice = gate_choice

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def random(cls, input_shape: tuple[int, int, int], normalization: Normalization, gate: str = "", *,
               generator: torch.Generator | None = None, theta: float = DEFAULT_THETA) -> AuthKey:
        """A key drawn uniformly in the key space: ``m`` ~ U[0, 0.5] per pixel, ``P`` ~ U[-theta, theta]."""
        c, h, w = input_shape
        m = torch.rand(1, h, w, generator=generator) * MASK_MAX
        offset = (torch.rand(c, h, w, generator=generator) * 2 - 1) * theta
        return cls(raw_from_mask(m), offset, normalization, gate, theta=theta)

    def bound_to(self, model: nn.Module, *, gate_choice: GateChoice | None = None) -> AuthKey:
        """A copy of this key carrying ``model``'s fingerprint (and ``gate_choice`` if given, else its own)."""
        return AuthKey(self.mask_raw, self.offset, self.normalization, self.gate,
                       model_fingerprint=model_fingerprint(model), bits=self.bits, theta=self.theta,
                       gate_choice=gate_choice or self.gate_choice)

    # -- use ----------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the key applies to."""
        return tuple(int(v) for v in self.offset.shape)  # type: ignore[return-value]

    @property
    def mask(self) -> torch.Tensor:
        """The effective mask ``m`` in [0.0003, 0.5], shape (1, H, W)."""
        return mask_from_raw(self.mask_raw)

    def check_input(self, x: Any, *, what: str = "images") -> torch.Tensor:
        """``x`` as a float32 NCHW batch of the key's input shape (tensor or numpy; uint8 divided by 255).

        Raises:
            ConfigError: not an image batch of the key's (C, H, W), or non-finite values.
        """
        return as_image_batch(x, what=what, shape=self.input_shape)

    def check_model(self, model: nn.Module) -> None:
        """Raise ConfigError unless ``model``'s weights have the fingerprint the key was made for."""
        if self.model_fingerprint is None:
            raise ConfigError("this key is not bound to a model (no model fingerprint)")
        got = model_fingerprint(model)
        if got != self.model_fingerprint:
            raise ConfigError(f"this key belongs to the model with fingerprint {self.model_fingerprint}, "
                              f"got a model with fingerprint {got}: use the protected model the key was made with")

    def apply_normalized(self, z: Any) -> torch.Tensor:
        """``key(z) = (1 - m) * z + m * P`` on a *normalised* float NCHW batch (tensor or numpy).

        Raises:
            ConfigError: a uint8 batch (pixels are raw, not normalised: use :meth:`apply`), or a wrong shape.
        """
        if getattr(z, "dtype", None) in (torch.uint8, np.uint8):
            raise ConfigError("apply_normalized takes normalised float batches, got uint8 pixels: pass raw images to "
                              "AuthKey.apply, which converts 0-255 explicitly")
        z = self.check_input(z, what="normalised inputs")
        m = self.mask.to(z.device, z.dtype)
        return (1 - m) * z + m * self.offset.to(z.device, z.dtype)

    def apply(self, x: Any) -> torch.Tensor:
        """Keyed images in *raw* space: ``normalize(apply(x)) = key(normalize(x))`` for a raw NCHW batch.

        ``x`` is a torch tensor or numpy array of [0, 1] floats, or uint8 0-255 (divided by 255 first).

        Example:
            >>> import numpy as np
            >>> key = AuthKey.random((1, 2, 2), Normalization.identity(1), generator=torch.Generator().manual_seed(0))
            >>> white = np.full((1, 1, 2, 2), 255, dtype=np.uint8)
            >>> torch.equal(key.apply(white), key.apply(torch.ones(1, 1, 2, 2)))
            True
        """
        x = self.check_input(x)
        return self.normalization.invert(self.apply_normalized(self.normalization.apply(x)))

    def bind(self, model: nn.Module, *, verify: bool = True) -> KeyedModel:
        """``model`` wrapped so that it applies this key to raw inputs first (the legitimate user's view).

        Args:
            model: the protected model.
            verify: check the model's fingerprint (turn off to measure a modified copy, e.g. after pruning).
        """
        if verify:
            self.check_model(model)
        return KeyedModel(model, self)

    @property
    def fingerprint(self) -> str:
        """A public identifier of the key (16 hex digits of a domain-separated hash)."""
        digest = hashlib.sha256(b"modelshield-auth-key\x00")
        digest.update(self.mask_raw.numpy().tobytes())
        digest.update(self.offset.numpy().tobytes())
        return digest.hexdigest()[:16]

    # -- files --------------------------------------------------------------------------------
    def _metadata(self) -> dict[str, Any]:
        doc = {"input_shape": list(self.input_shape), "normalization": self.normalization.to_dict(), "gate": self.gate,
               "model_fingerprint": self.model_fingerprint, "bits": list(self.bits), "theta": self.theta}
        if self.gate_choice is not None:
            doc["gate_choice"] = self.gate_choice.to_dict()
        return doc

    def to_bytes(self) -> bytes:
        """The key file's bytes. Handle with care: never log them."""
        return safetensors_save({"mask": self.mask_raw, "offset": self.offset},
                                metadata=metadata_entry(self._metadata(), KEY_FORMAT, SPEC))

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the key file atomically with mode 0600; refuses to overwrite unless asked."""
        return save_secret_file(path, self.to_bytes(), what="key", overwrite=overwrite)

    def to_base64(self) -> str:
        """The key file as base64 text, for an environment variable. Never log it."""
        return base64.b64encode(self.to_bytes()).decode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "auth key") -> AuthKey:
        """Parse a key file's bytes, validating the header before reading any tensor.

        Raises:
            FormatError: not a version-1 AuthNet key file, or inconsistent contents.
        """
        meta = _read_header(data, source)
        try:
            tensors = safetensors_load(bytes(data))
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise FormatError(f"{source}: corrupt key file ({exc})") from None
        try:
            return cls(tensors["mask"], tensors["offset"], meta["normalization"], meta["gate"],
                       model_fingerprint=meta.get("model_fingerprint"), bits=tuple(meta.get("bits", ())),
                       theta=meta.get("theta", DEFAULT_THETA), gate_choice=meta.get("gate_choice"))
        except ConfigError as exc:
            raise FormatError(f"{source}: malformed auth key ({exc})") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AuthKey:
        """Read a key file; warns if it is readable by group or others.

        Raises:
            ConfigError: the file does not exist.
            FormatError: not an AuthNet key file.
        """
        data = load_secret_file(path, max_bytes=_MAX_FILE_BYTES, what="auth key file",
                                missing_hint=" (make one with `modelshield auth embed`)")
        return cls.from_bytes(data, source=str(path))

    @classmethod
    def from_env(cls, variable: str = AUTH_KEY_ENV) -> AuthKey:
        """Read a key from an environment variable holding the key file as base64."""
        value = secret_from_env(variable, expected="a base64 auth key file")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise FormatError(f"${variable}: not valid base64") from None
        return cls.from_bytes(data, source=f"${variable}")

    # -- hygiene ------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AuthKey):
            return NotImplemented
        return (self._metadata() == other._metadata() and torch.equal(self.mask_raw, other.mask_raw)
                and torch.equal(self.offset, other.offset))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        return f"AuthKey(<redacted>, input={shape}, gate={self.gate!r}, fingerprint={self.fingerprint})"

    __str__ = __repr__

    def __reduce__(self) -> object:
        raise TypeError("AuthKey refuses to be pickled; save it with AuthKey.save()")


def _read_header(data: bytes, source: str) -> dict[str, Any]:
    """The checked metadata, with ``normalization`` parsed; the tensors' names, dtypes and shapes checked too."""
    header = read_safetensors_header(data, source=source, max_bytes=_MAX_HEADER_BYTES)
    meta = metadata_header(header, KEY_FORMAT, SPEC, source)
    fields = Fields(source)
    c, h, w = fields.int_list(meta, "input_shape", 1, 1 << 12, length=3)
    meta["normalization"] = read_normalization(fields, meta)
    fields.string(meta, "gate", max_chars=1024)
    if "model_fingerprint" in meta:
        fields.string(meta, "model_fingerprint", max_chars=64, nullable=True)
    if "bits" in meta:
        fields.int_list(meta, "bits", 0, 1 << 20, max_items=1 << 16)
    if "theta" in meta:
        fields.number(meta, "theta", 1e-12, 10.0)
    if "gate_choice" in meta:
        meta["gate_choice"] = _read_gate_choice(fields, meta)
    expected = {"mask": (1, h, w), "offset": (c, h, w)}
    if set(header.tensors) != set(expected):
        raise FormatError(f"{source}: expected tensors mask and offset, found {', '.join(sorted(header.tensors)) or 'none'}")
    for name, shape in expected.items():
        info = header.tensors[name]
        if info.dtype != "F32" or info.shape != shape:
            raise FormatError(f"{source}: tensor {name!r}: expected float32 of shape {shape} (input_shape {[c, h, w]}), "
                              f"got {info.dtype} of shape {info.shape}")
    return meta


def _read_gate_choice(fields: Fields, meta: dict[str, Any]) -> GateChoice:
    """The ``gate_choice`` entry, every field checked."""
    doc = fields.exact_keys(fields.obj(meta, "gate_choice"), {"gate", "method", "candidates", "trials"}, where="gate_choice")
    fields.string(doc, "gate", where="gate_choice.", max_chars=1024)
    fields.string(doc, "method", where="gate_choice.", choices=METHODS)
    candidates, trials = doc["candidates"], doc["trials"]
    if not isinstance(candidates, list) or len(candidates) > 256 or not all(isinstance(c, str) and len(c) <= 1024 for c in candidates):
        raise fields.fail("gate_choice.candidates", "a list of at most 256 module names", candidates)
    if not isinstance(trials, list) or len(trials) > 256:
        raise fields.fail("gate_choice.trials", "a list of at most 256 trials", trials)
    for i, trial in enumerate(trials):
        where = f"gate_choice.trials[{i}]"
        trial = fields.exact_keys(trial, set(TRIAL_FIELDS), where=where)
        fields.string(trial, "gate", where=where + ".", max_chars=1024)
        fields.int_list(trial, "gate_shape", 1, 1 << 20, where=where + ".", max_items=8)
        for name in TRIAL_FIELDS:
            if name not in ("gate", "gate_shape"):
                fields.number(trial, name, -1e9, 1e9, where=where + ".")
    return GateChoice.from_dict(doc)


class KeyedModel(nn.Module):
    """A protected model that applies an :class:`AuthKey` to its raw inputs first (what a legitimate user runs).

    The key is a plain attribute, not a buffer, so the wrapper's ``state_dict`` is the model's and never
    contains the key.
    """

    def __init__(self, model: nn.Module, key: AuthKey) -> None:
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.key.apply(x))
