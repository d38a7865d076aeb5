"""QUEEN's fitted artefacts (mapping network, class centres, sensitive regions, shadow models) and their file.

File format: one ``.safetensors`` file. Tensors: ``mapping.<param>``, ``class_centres`` (K, D),
``region_centres`` (K, 2), ``region_spread`` (K,) (rho_c, the mean distance to the centre),
``shadow.<i>.<param>``. The header's ``modelshield-queen`` entry is JSON: format name and version, the
mapping widths, shadow architecture and count, input shape, normalisation, the protected model's
fingerprint, and the fitting record (optional). Loading never unpickles; the safetensors header and this JSON
are checked with the shared rules of :mod:`modelshield.container` before any tensor is read, every shape is
validated, and the modules are rebuilt with strict state-dict loading; every failure is a :class:`FormatError`
naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save
from torch import nn

from modelshield._io import atomic_write_bytes
from modelshield.container import Fields, HeaderSpec, metadata_entry, metadata_header, read_safetensors_header
from modelshield.data.types import Normalization
from modelshield.defense.mapping import MappingNetwork
from modelshield.defense.shadow import build_shadow
from modelshield.errors import ConfigError, FormatError
from modelshield.models.checkpoint import read_normalization

__all__ = ["QueenArtifacts", "load_queen_artifacts"]

FORMAT = "modelshield-queen"
FORMAT_VERSION = 1
SPEC = HeaderSpec("QUEEN artefact file", FORMAT, FORMAT_VERSION,
                  required={"mapping_widths", "shadow_architecture", "num_shadows", "input_shape", "normalization",
                            "num_classes", "feature_dim", "model_fingerprint"},
                  optional={"record"}, max_bytes=1 << 20)


@dataclass
class QueenArtifacts:
    """Everything QUEEN learns offline for one protected model.

    Attributes:
        mapping: the 2-D mapping network g.
        class_centres: (K, D) mean penultimate feature of each class (PERTURB's targets).
        region_centres: (K, 2) sensitive-region centres m_c in the mapping space.
        region_spread: (K,) rho_c, mean distance of class c's training points to m_c (R_c = beta * rho_c).
        shadows: the weak shadow classifiers.
        shadow_architecture: their architecture name.
        input_shape: (C, H, W) of the protected model's inputs.
        normalization: input statistics the shadow models were built with.
        model_fingerprint: :func:`~modelshield.models.state_dict_fingerprint` of the protected model.
        record: JSON-able fitting record (settings, timings, quality figures).
    """

    mapping: MappingNetwork
    class_centres: torch.Tensor
    region_centres: torch.Tensor
    region_spread: torch.Tensor
    shadows: list[nn.Module]
    shadow_architecture: str
    input_shape: tuple[int, int, int]
    normalization: Normalization
    model_fingerprint: str
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """K."""
        return int(self.class_centres.shape[0])

    @property
    def feature_dim(self) -> int:
        """D."""
        return int(self.class_centres.shape[1])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the artefacts atomically; returns the path."""
        tensors = {f"mapping.{k}": v for k, v in self.mapping.state_dict().items()}
        tensors.update(class_centres=self.class_centres, region_centres=self.region_centres, region_spread=self.region_spread)
        for i, shadow in enumerate(self.shadows):
            tensors.update({f"shadow.{i}.{k}": v for k, v in shadow.state_dict().items()})
        header = {"mapping_widths": self.mapping.widths,
                  "shadow_architecture": self.shadow_architecture, "num_shadows": len(self.shadows),
                  "input_shape": list(self.input_shape), "normalization": self.normalization.to_dict(),
                  "num_classes": self.num_classes, "feature_dim": self.feature_dim,
                  "model_fingerprint": self.model_fingerprint, "record": self.record}
        payload = safetensors_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                                   metadata=metadata_entry(header, FORMAT, SPEC))
        return atomic_write_bytes(path, payload)


def load_queen_artifacts(path: str | os.PathLike[str]) -> QueenArtifacts:
    """Load artefacts written by :meth:`QueenArtifacts.save` (no unpickling, every shape validated).

    Raises:
        ConfigError: the file does not exist.
        FormatError: corrupt, foreign or inconsistent file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"QUEEN artefacts {path} do not exist (build them with `modelshield defense fit`)")
    source = str(path)
    header = metadata_header(read_safetensors_header(path), FORMAT, SPEC, source)
    fields = Fields(source)
    widths = fields.int_list(header, "mapping_widths", 1, 1 << 20, max_items=64)
    k, d = fields.integer(header, "num_classes", 2, 1 << 20), fields.integer(header, "feature_dim", 1, 1 << 20)
    shape = tuple(fields.int_list(header, "input_shape", 1, 1 << 12, length=3))
    normalization = read_normalization(fields, header)
    count = fields.integer(header, "num_shadows", 1, 1024)
    arch = str(fields.string(header, "shadow_architecture", max_chars=256))
    fingerprint = str(fields.string(header, "model_fingerprint", max_chars=64))
    record = fields.obj(header, "record") if "record" in header else {}
    if len(widths) < 2 or widths[0] != d or widths[-1] != 2:
        raise fields.fail("mapping_widths", f"at least two widths from feature_dim {d} down to 2", widths)
    try:
        with safe_open(source, framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise FormatError(f"{path}: corrupt QUEEN artefact file ({exc})") from None
    expected = {"class_centres": (k, d), "region_centres": (k, 2), "region_spread": (k,)}
    for name, want in expected.items():
        got = tuple(tensors[name].shape) if name in tensors else None
        if got != want:
            raise FormatError(f"{path}: tensor {name!r} has shape {got}, expected {want}")

    def load_into(module: nn.Module, prefix: str) -> nn.Module:
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise FormatError(f"{path}: {prefix.rstrip('.')} weights do not match: {str(exc).splitlines()[0]}") from None
        return module.eval()

    try:
        mapping = MappingNetwork(widths)
        shadows = [build_shadow(arch, in_channels=shape[0], image_size=shape[1], num_classes=k, normalization=normalization)
                   for _ in range(count)]
    except ConfigError as exc:
        raise FormatError(f"{path}: cannot rebuild QUEEN modules ({exc})") from None
    load_into(mapping, "mapping.")
    for i, shadow in enumerate(shadows):
        load_into(shadow, f"shadow.{i}.")
    return QueenArtifacts(mapping, tensors["class_centres"].float(), tensors["region_centres"].float(),
                          tensors["region_spread"].float(), shadows, arch, shape, normalization, fingerprint, record)  # type: ignore[arg-type]
