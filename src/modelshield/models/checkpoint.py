"""Checkpoints: one ``.safetensors`` file holding the weights and a JSON metadata record.

The metadata lives in the safetensors header under the key ``modelshield`` and records the architecture and
its arguments, the dataset, the input normalisation, accuracy, seed and library versions. Loading never
unpickles: safetensors validates the header; we validate the JSON and the state dict against the
architecture, and every failure is a :class:`FormatError` naming the file and the problem.

Example:
    >>> import os, tempfile
    >>> from modelshield.models import build_model
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
    >>> meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits")
    >>> path = save_checkpoint(os.path.join(tempfile.mkdtemp(), "m.safetensors"), model, meta)
    >>> load_checkpoint(path).meta.architecture
    'lenet5'
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save
from torch import nn

from modelshield._io import atomic_write_bytes
from modelshield.data.types import Normalization
from modelshield.errors import ConfigError, FormatError
from modelshield.models.registry import MODEL_REGISTRY, build_model

__all__ = ["Checkpoint", "CheckpointMeta", "load_checkpoint", "save_checkpoint", "state_dict_fingerprint"]

FORMAT = "modelshield-checkpoint"
FORMAT_VERSION = 1
_MAX_META_BYTES = 1 << 20


def library_versions() -> dict[str, str]:
    """Versions of the software that produced a file or a result."""
    import numpy

    from modelshield import __version__

    return {"modelshield": __version__, "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself.

    Attributes:
        architecture: zoo name (``lenet5``, ``vgg``, ``resnet20``) or ``custom`` for a user module.
        arch_args: keyword arguments of :func:`build_model` except the normalisation.
        dataset: dataset name the model was trained on.
        normalization: input statistics the model applies (also stored as its ``normalize`` buffers).
        accuracy: test accuracy in [0, 1] when measured.
        seed: training seed.
        extra: free-form JSON-able record for protections (e.g. ``{"auth": {...}}``).
        versions: library versions at save time (filled in by :func:`save_checkpoint`).
    """

    architecture: str
    arch_args: dict[str, Any]
    dataset: str
    normalization: Normalization
    accuracy: float | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_model(cls, architecture: str, *, in_channels: int, image_size: int, num_classes: int, dataset: str,
                  normalization: Normalization | None = None, **kwargs: Any) -> CheckpointMeta:
        """Metadata for a zoo model built with these arguments."""
        return cls(architecture=architecture,
                   arch_args={"in_channels": in_channels, "image_size": image_size, "num_classes": num_classes},
                   dataset=dataset, normalization=normalization or Normalization.identity(in_channels), **kwargs)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the model expects."""
        size = int(self.arch_args["image_size"])
        return (int(self.arch_args["in_channels"]), size, size)

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return int(self.arch_args["num_classes"])

    def to_json(self) -> str:
        doc = asdict(self)
        doc["normalization"] = self.normalization.to_dict()
        return json.dumps({"format": FORMAT, "version": FORMAT_VERSION, **doc}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> CheckpointMeta:
        if len(text) > _MAX_META_BYTES:
            raise FormatError(f"{source}: metadata is {len(text)} bytes, over the {_MAX_META_BYTES}-byte cap")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{source}: metadata is not valid JSON ({exc.msg})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise FormatError(f"{source}: not a modelshield checkpoint (metadata format is {doc.get('format') if isinstance(doc, dict) else None!r})")
        if doc.get("version") != FORMAT_VERSION:
            raise FormatError(f"{source}: checkpoint format version {doc.get('version')!r} is not supported (expected {FORMAT_VERSION})")
        try:
            arch_args = doc["arch_args"]
            if not isinstance(arch_args, dict):
                raise TypeError("arch_args must be an object")
            return cls(
                architecture=str(doc["architecture"]), arch_args=arch_args, dataset=str(doc["dataset"]),
                normalization=Normalization.from_dict(doc["normalization"]),
                accuracy=None if doc.get("accuracy") is None else float(doc["accuracy"]),
                seed=None if doc.get("seed") is None else int(doc["seed"]),
                extra=dict(doc.get("extra") or {}), versions=dict(doc.get("versions") or {}),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise FormatError(f"{source}: malformed checkpoint metadata ({exc})") from None


@dataclass(frozen=True)
class Checkpoint:
    """A loaded model (in eval mode) and its metadata."""

    model: nn.Module
    meta: CheckpointMeta


def state_dict_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of a state dict, in sorted name order (hex, 32 digits).

    Example:
        >>> import torch
        >>> a = state_dict_fingerprint({"w": torch.zeros(2)})
        >>> a == state_dict_fingerprint({"w": torch.zeros(2)}), a == state_dict_fingerprint({"w": torch.ones(2)})
        (True, False)
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:32]


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write weights + metadata atomically to a ``.safetensors`` file; returns the path."""
    meta = replace(meta, versions=library_versions())
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    payload = safetensors_save(tensors, metadata={"modelshield": meta.to_json()})
    return atomic_write_bytes(path, payload)


def read_checkpoint_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Read only the metadata of a checkpoint (cheap; validates the header)."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if "modelshield" not in metadata:
        raise FormatError(f"{path}: a safetensors file without modelshield metadata; "
                          "load it into your own module with load_checkpoint(path, model=...)")
    return CheckpointMeta.from_json(metadata["modelshield"], str(path))


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist (train one with `modelshield train --out {path}`)")
    return path


def load_checkpoint(path: str | os.PathLike[str], model: nn.Module | None = None) -> Checkpoint:
    """Load a checkpoint without unpickling; the model is returned in eval mode.

    Args:
        path: the ``.safetensors`` file.
        model: a module to load into (needed for ``custom`` architectures); default: built from the metadata.

    Raises:
        ConfigError: the file does not exist.
        FormatError: corrupt or truncated file, foreign metadata, unknown architecture, or weights that do not
            match the architecture.
    """
    path = _existing(path)
    meta = read_checkpoint_meta(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise FormatError(f"{path}: corrupt checkpoint ({exc})") from None
    if model is None:
        if meta.architecture not in MODEL_REGISTRY:
            raise FormatError(f"{path}: architecture {meta.architecture!r} is not in the zoo ({', '.join(MODEL_REGISTRY)}); "
                              "pass the module to load into with load_checkpoint(path, model=...)")
        try:
            model = build_model(meta.architecture, normalization=meta.normalization, **meta.arch_args)
        except ConfigError as exc:
            raise FormatError(f"{path}: cannot rebuild the model from its metadata ({exc})") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[1:4]) or first[0]
        raise FormatError(f"{path}: weights do not match architecture {meta.architecture!r}: {detail}") from None
    return Checkpoint(model.eval(), meta)
