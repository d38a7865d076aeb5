"""QUEEN's fitted artefacts (mapping network, class centres, sensitive regions, shadow models) and their file.

File format: one ``.safetensors`` file. Tensors: ``mapping.<param>``, ``class_centres`` (K, D),
``region_centres`` (K, 2), ``region_spread`` (K,) (rho_c, the mean distance to the centre),
``shadow.<i>.<param>``. The header's ``modelshield-queen`` entry is JSON: format name and version, the
mapping widths, shadow architecture and count, input shape, normalisation, the protected model's
fingerprint, and the fitting record. Loading never unpickles, validates the JSON and every shape, and
rebuilds the modules with strict state-dict loading; every failure is a :class:`FormatError`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save
from torch import nn

from modelshield._io import atomic_write_bytes
from modelshield.data.types import Normalization
from modelshield.defense.mapping import MappingNetwork
from modelshield.defense.shadow import build_shadow
from modelshield.errors import ConfigError, FormatError

__all__ = ["QueenArtifacts", "load_queen_artifacts"]

FORMAT = "modelshield-queen"
FORMAT_VERSION = 1
_MAX_META = 1 << 20


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
        header = {"format": FORMAT, "version": FORMAT_VERSION, "mapping_widths": self.mapping.widths,
                  "shadow_architecture": self.shadow_architecture, "num_shadows": len(self.shadows),
                  "input_shape": list(self.input_shape), "normalization": self.normalization.to_dict(),
                  "num_classes": self.num_classes, "feature_dim": self.feature_dim,
                  "model_fingerprint": self.model_fingerprint, "record": self.record}
        payload = safetensors_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                                   metadata={FORMAT: json.dumps(header, sort_keys=True)})
        return atomic_write_bytes(path, payload)


def _header(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    text = metadata.get(FORMAT)
    if text is None:
        raise FormatError(f"{path}: not a QUEEN artefact file (no {FORMAT!r} metadata)")
    if len(text) > _MAX_META:
        raise FormatError(f"{path}: QUEEN metadata is {len(text)} bytes, over the {_MAX_META}-byte cap")
    try:
        header = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: QUEEN metadata is not valid JSON ({exc.msg})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FormatError(f"{path}: not a QUEEN artefact file")
    if header.get("version") != FORMAT_VERSION:
        raise FormatError(f"{path}: QUEEN format version {header.get('version')!r} not supported (expected {FORMAT_VERSION})")
    return header


def load_queen_artifacts(path: str | os.PathLike[str]) -> QueenArtifacts:
    """Load artefacts written by :meth:`QueenArtifacts.save` (no unpickling, every shape validated).

    Raises:
        ConfigError: the file does not exist.
        FormatError: corrupt, foreign or inconsistent file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"QUEEN artefacts {path} do not exist (build them with `modelshield defense fit`)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = _header(path, handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise FormatError(f"{path}: corrupt QUEEN artefact file ({exc})") from None
    try:
        widths = [int(w) for w in header["mapping_widths"]]
        k, d = int(header["num_classes"]), int(header["feature_dim"])
        shape = tuple(int(s) for s in header["input_shape"])
        normalization = Normalization.from_dict(header["normalization"])
        count, arch = int(header["num_shadows"]), str(header["shadow_architecture"])
        fingerprint, record = str(header["model_fingerprint"]), dict(header.get("record") or {})
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise FormatError(f"{path}: malformed QUEEN metadata ({exc})") from None
    if len(shape) != 3 or widths[0] != d or widths[-1] != 2 or count < 1:
        raise FormatError(f"{path}: inconsistent QUEEN metadata (input_shape {shape}, widths {widths}, feature_dim {d}, shadows {count})")
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
