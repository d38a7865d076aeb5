"""The secret MEA-Defender watermark key and its file format.

A :class:`WatermarkKey` says which two source classes ``s_i`` (``source_a``) and ``s_j`` (``source_b``) are
combined, into which target class ``y_t`` the composite must fall, how they are combined (the half-and-half
combiner's orientation, seam jitter and random offsets) and a seed. Whoever holds the key can build fresh
watermark composites, so it is a secret: the file is written atomically with mode 0600, never pickled, and
read back through a strict parser that refuses anything else.

Key file (version 1), a :mod:`modelshield.container` header (strict UTF-8 JSON, sorted keys), at most 64 KiB::

    {"format": "modelshield-watermark-key", "version": 1,
     "source_classes": [0, 1], "target": 2, "num_classes": 10, "input_shape": [1, 28, 28],
     "combiner": {"name": "half", "orientation": "top-bottom", "jitter": 3, "offset": 2},
     "seed": 123456789}

Defaults per dataset (:meth:`WatermarkKey.for_dataset`): Fashion-MNIST T-shirt (0) + Trouser (1) -> Pullover
(2), the paper's choice. MNIST: digit 0 + digit 1 -> digit 2, the same "classes 0 and 1 -> class 2" rule the
paper used for both its datasets (Fashion-MNIST, and CIFAR-10 airplane 0 + automobile 1 -> bird 2); it was
fixed before any experiment, not picked on results. The default orientation is the authors' code's
top-bottom split with a jittered seam; the paper's left-right split is the other option.

Example:
    >>> import os, tempfile
    >>> key = WatermarkKey.for_dataset("fashion-mnist", seed=7)
    >>> key.source_a, key.source_b, key.target, key.orientation
    (0, 1, 2, 'top-bottom')
    >>> path = key.save(os.path.join(tempfile.mkdtemp(), "wm.key"))
    >>> oct(path.stat().st_mode & 0o777), WatermarkKey.load(path) == key
    ('0o600', True)
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelshield.container import Fields, HeaderSpec, encode_header, load_secret_file, parse_header, save_secret_file
from modelshield.errors import ConfigError, FormatError

__all__ = ["DATASET_DEFAULTS", "ORIENTATIONS", "WATERMARK_KEY_FORMAT", "WatermarkKey"]

WATERMARK_KEY_FORMAT = "modelshield-watermark-key"
WATERMARK_KEY_VERSION = 1
ORIENTATIONS = ("top-bottom", "left-right")
MAX_KEY_FILE_BYTES = 1 << 16
# dataset -> (source_a, source_b, target, num_classes, input shape); see the module docstring for the reasons
DATASET_DEFAULTS: dict[str, tuple[int, int, int, int, tuple[int, int, int]]] = {
    "fashion-mnist": (0, 1, 2, 10, (1, 28, 28)),
    "mnist": (0, 1, 2, 10, (1, 28, 28)),
    "digits": (0, 1, 2, 10, (1, 8, 8)),
    "cifar10": (0, 1, 2, 10, (3, 32, 32)),
}
KEY_SPEC = HeaderSpec("watermark key file", WATERMARK_KEY_FORMAT, WATERMARK_KEY_VERSION,
                      required={"source_classes", "target", "num_classes", "input_shape", "combiner", "seed"},
                      max_bytes=MAX_KEY_FILE_BYTES)


@dataclass(frozen=True)
class WatermarkKey:
    """The secret that builds watermark composites.

    Attributes:
        source_a: first source class ``s_i``.
        source_b: second source class ``s_j``.
        target: target class ``y_t`` (different from both sources).
        num_classes: classes of the protected model.
        input_shape: (C, H, W) of its inputs.
        orientation: ``top-bottom`` (the authors' code) or ``left-right`` (the paper).
        jitter: the seam moves uniformly within +-``jitter`` pixels of the middle.
        offset: each source image is translated by up to +-``offset`` pixels (both axes, zero fill) first.
        seed: seeds the embedding's composite stream (fresh verification composites use their own seed).

    Raises:
        ConfigError: classes out of range or not distinct, an unknown orientation, or jitter/offset that do
            not fit the image.
    """

    source_a: int
    source_b: int
    target: int
    num_classes: int
    input_shape: tuple[int, int, int]
    orientation: str = "top-bottom"
    jitter: int = 3
    offset: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        if self.num_classes < 3:
            raise ConfigError(f"a watermark needs at least 3 classes (two sources and a target), got {self.num_classes}")
        classes = (self.source_a, self.source_b, self.target)
        if any(not 0 <= c < self.num_classes for c in classes):
            raise ConfigError(f"watermark classes must be in [0, {self.num_classes}), got sources "
                              f"{self.source_a}, {self.source_b} and target {self.target}")
        if len(set(classes)) != 3:
            raise ConfigError(f"watermark source and target classes must be three distinct classes, got {classes}")
        if self.orientation not in ORIENTATIONS:
            raise ConfigError(f"watermark orientation must be one of {', '.join(ORIENTATIONS)}, got {self.orientation!r}")
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ConfigError(f"watermark input_shape must be (C, H, W), got {self.input_shape}")
        side = min(self.input_shape[1:])
        if not 0 <= self.jitter < side // 4:
            raise ConfigError(f"watermark jitter must be in [0, {side // 4}) for {side}-pixel images, got {self.jitter}")
        if not 0 <= self.offset < side // 4:
            raise ConfigError(f"watermark offset must be in [0, {side // 4}) for {side}-pixel images, got {self.offset}")

    @classmethod
    def for_dataset(cls, dataset: str, *, seed: int | None = None, orientation: str = "top-bottom",
                    jitter: int | None = None, offset: int | None = None) -> WatermarkKey:
        """The default key for a known dataset (:data:`DATASET_DEFAULTS`); ``seed`` None = a random one.

        Jitter and offset default to 3 and 2 pixels (about a tenth of a 28-pixel side), 1 and 0 on 8x8 images.

        Raises:
            ConfigError: a dataset without defaults (build the key with explicit classes instead).
        """
        if dataset not in DATASET_DEFAULTS:
            raise ConfigError(f"no default watermark key for dataset {dataset!r}; known: {', '.join(DATASET_DEFAULTS)} "
                              "(or construct WatermarkKey with explicit classes)")
        a, b, t, k, shape = DATASET_DEFAULTS[dataset]
        small = shape[1] < 16
        return cls(a, b, t, k, shape, orientation=orientation,
                   jitter=(1 if small else 3) if jitter is None else jitter,
                   offset=(0 if small else 2) if offset is None else offset,
                   seed=secrets.randbits(63) if seed is None else seed)

    # -- file format ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The key file's JSON document."""
        return {"format": WATERMARK_KEY_FORMAT, "version": WATERMARK_KEY_VERSION,
                "source_classes": [self.source_a, self.source_b], "target": self.target,
                "num_classes": self.num_classes, "input_shape": list(self.input_shape),
                "combiner": {"name": "half", "orientation": self.orientation, "jitter": self.jitter, "offset": self.offset},
                "seed": self.seed}

    def to_bytes(self) -> bytes:
        """The key file's bytes (the canonical header encoding of :mod:`modelshield.container`)."""
        doc = {k: v for k, v in self.to_dict().items() if k not in ("format", "version")}
        return encode_header(doc, KEY_SPEC) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "watermark key") -> WatermarkKey:
        """Parse a key file strictly (:func:`modelshield.container.parse_header`): every field present, of the
        right type, nothing else.

        Raises:
            FormatError: naming ``source``, the field, what was expected and what was found.
        """
        doc = parse_header(bytes(data).rstrip(b"\n"), KEY_SPEC, source)
        f = Fields(source)
        sources = f.int_list(doc, "source_classes", 0, 1 << 20, length=2)
        shape = f.int_list(doc, "input_shape", 1, 1 << 16, length=3)
        target = f.integer(doc, "target", 0, 1 << 20)
        num_classes = f.integer(doc, "num_classes", 1, 1 << 20)
        seed = f.integer(doc, "seed", 0, (1 << 63) - 1)
        combiner = f.exact_keys(doc.get("combiner"), {"name", "orientation", "jitter", "offset"}, where="combiner")
        f.string(combiner, "name", where="combiner.", choices=("half",))
        orientation = f.string(combiner, "orientation", where="combiner.", choices=ORIENTATIONS)
        jitter = f.integer(combiner, "jitter", 0, 1 << 16, where="combiner.")
        offset = f.integer(combiner, "offset", 0, 1 << 16, where="combiner.")
        try:
            return cls(sources[0], sources[1], int(target or 0), int(num_classes or 0), (shape[0], shape[1], shape[2]),
                       orientation=str(orientation), jitter=int(jitter or 0), offset=int(offset or 0), seed=int(seed or 0))
        except ConfigError as exc:
            raise FormatError(f"{source}: {exc}") from None

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the key file atomically with mode 0600 (:func:`modelshield.container.save_secret_file`);
        refuses to overwrite unless asked.

        Raises:
            ConfigError: the file exists and ``overwrite`` is False.
        """
        return save_secret_file(path, self.to_bytes(), what="watermark key", overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WatermarkKey:
        """Read a key file (:func:`modelshield.container.load_secret_file`); warns when other users can read it.

        Raises:
            ConfigError: the file does not exist.
            FormatError: the file is not a valid watermark key (the message names the file).
        """
        data = load_secret_file(path, max_bytes=MAX_KEY_FILE_BYTES, what="watermark key file",
                                missing_hint=" (create one with `modelshield watermark embed`)")
        return cls.from_bytes(data, source=str(path))

    def __repr__(self) -> str:
        fields = asdict(self)
        fields["seed"] = "<redacted>"
        return "WatermarkKey(" + ", ".join(f"{k}={v!r}" if k != "seed" else f"{k}={v}" for k, v in fields.items()) + ")"

    def __reduce__(self) -> object:
        raise TypeError("WatermarkKey refuses to be pickled; save it with WatermarkKey.save()")

    def __copy__(self) -> WatermarkKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> WatermarkKey:
        return self

