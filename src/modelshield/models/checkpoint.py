"""Checkpoints: one ``.safetensors`` file holding the weights and a JSON metadata record.

The metadata lives in the safetensors header under the key ``modelshield`` and records the architecture and
its arguments, the dataset, the input normalisation, accuracy, seed and library versions (format
``modelshield-checkpoint``, version 1; keys ``architecture``, ``arch_args``, ``dataset``, ``normalization``,
optional ``accuracy``, ``seed``, ``extra``, ``versions``). Loading never unpickles: the safetensors header and
the metadata are checked with the shared rules of :mod:`modelshield.container` before any tensor is read,
then the state dict against the architecture; every failure is a :class:`FormatError` naming the file.

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
from modelshield.container import Fields, HeaderSpec, encode_header, metadata_header, parse_header, read_safetensors_header
from modelshield.data.types import Normalization
from modelshield.errors import ConfigError, FormatError
from modelshield.models.registry import MODEL_REGISTRY, build_model

__all__ = ["Checkpoint", "CheckpointMeta", "load_checkpoint", "read_normalization", "save_checkpoint", "state_dict_fingerprint"]

FORMAT = "modelshield-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "modelshield"
SPEC = HeaderSpec("checkpoint", FORMAT, FORMAT_VERSION, required={"architecture", "arch_args", "dataset", "normalization"},
                  optional={"accuracy", "seed", "extra", "versions"}, max_bytes=1 << 20)


def read_normalization(fields: Fields, doc: dict[str, Any], key: str = "normalization") -> Normalization:
    """The header field ``key`` as :class:`Normalization` (``{"mean": [...], "std": [...]}``); FormatError otherwise.

    Example:
        >>> read_normalization(Fields("m.safetensors"), {"normalization": {"mean": [0.5], "std": [0.0]}})
        Traceback (most recent call last):
        ...
        modelshield.errors.FormatError: m.safetensors: header field normalization: expected one mean and one positive finite std per channel, got {'mean': [0.5], 'std': [0.0]}
    """
    value = fields.exact_keys(fields.obj(doc, key), {"mean", "std"}, where=key)
    mean = fields.number_list(value, "mean", where=f"{key}.", max_items=4096)
    std = fields.number_list(value, "std", where=f"{key}.", max_items=4096)
    try:
        return Normalization(tuple(mean), tuple(std))
    except ConfigError:
        raise fields.fail(key, "one mean and one positive finite std per channel", value) from None


def library_versions() -> dict[str, str]:
    """Versions of the software that produced a file or a result."""
    import numpy

    from modelshield._version import __version__

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
        """The metadata as a version-1 header (canonical JSON text).

        Raises:
            ConfigError: a value JSON cannot hold (NaN accuracy, a non-JSON ``extra``).
        """
        doc = asdict(self)
        doc["normalization"] = self.normalization.to_dict()
        return encode_header(doc, SPEC).decode("utf-8")

    @classmethod
    def from_json(cls, text: str, source: str) -> CheckpointMeta:
        """Parse and check a metadata header (see the module docstring); FormatError naming ``source``."""
        return cls._from_header(parse_header(text, SPEC, source), source)

    @classmethod
    def _from_header(cls, doc: dict[str, Any], source: str) -> CheckpointMeta:
        fields = Fields(source)
        return cls(
            architecture=str(fields.string(doc, "architecture", max_chars=256)), arch_args=fields.obj(doc, "arch_args"),
            dataset=str(fields.string(doc, "dataset", max_chars=1024)), normalization=read_normalization(fields, doc),
            accuracy=fields.number(doc, "accuracy", 0.0, 1.0, nullable=True) if "accuracy" in doc else None,
            seed=fields.integer(doc, "seed", -(2**63), 2**64 - 1, nullable=True) if "seed" in doc else None,
            extra=fields.obj(doc, "extra") if "extra" in doc else {},
            versions=fields.str_map(doc, "versions", max_entries=64) if "versions" in doc else {},
        )


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
    payload = safetensors_save(tensors, metadata={METADATA_KEY: meta.to_json()})
    return atomic_write_bytes(path, payload)


def read_checkpoint_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Read only the metadata of a checkpoint (cheap; validates the header)."""
    path = _existing(path)
    header = read_safetensors_header(path)
    return CheckpointMeta._from_header(metadata_header(header, METADATA_KEY, SPEC, str(path)), str(path))


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
