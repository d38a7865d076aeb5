"""The locked-file format (version 1): header dataclasses, defensive parsing, serialisation.

The normative description is ``docs/lock-format.md``. In short::

    magic(8) | version u16 | flags u16 | H u32 | header JSON (H) | zero pad to 64 | payload (L) | HMAC tag (32)

Parsing never trusts the header: sizes are capped, every field is type- and range-checked, the tensor layout
must be the canonical one, and the file size must match before the payload is read. Every failure is a
:class:`~modelshield.errors.FormatError` naming the source and the field.

Example:
    >>> entry = TensorEntry("w", "float32", (2,), 0, 8, True)
    >>> header = LockHeader("ctr", 1, bytes(16), KdfParams(), (entry,), 8, {})
    >>> raw = header.to_bytes()
    >>> LockHeader.from_bytes(raw, "example") == header
    True
    >>> payload_start(len(raw)) % 64
    0
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import torch

from modelshield.container import Fields, HeaderSpec, check_magic, check_version, encode_header, parse_header
from modelshield.errors import FormatError

__all__ = [
    "ALIGNMENT",
    "CLEAR_DTYPES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LOCKABLE_DTYPES",
    "MAGIC",
    "MAX_HEADER_BYTES",
    "PREFIX",
    "SCHEMES",
    "SPEC",
    "TAG_BYTES",
    "KdfParams",
    "LockHeader",
    "TensorEntry",
    "canonical_layout",
    "encode_prefix",
    "parse_prefix",
    "payload_start",
]

MAGIC = b"\x89MSLOCK\n"
FORMAT_VERSION = 1
FORMAT_NAME = "modelshield-lock"
PREFIX = struct.Struct("<8sHHI")
TAG_BYTES = 32
NONCE_BYTES = 16
ALIGNMENT = 64
SCHEMES = ("ctr", "aes-expansion")
MAX_ROUNDS = 16
MAX_HEADER_BYTES = 16 << 20
MAX_TENSORS = 100_000
MAX_NAME_CHARS = 1024
MAX_NDIM = 16
MAX_PAYLOAD_BYTES = 1 << 40
MAX_METADATA_ENTRIES = 1024
SCRYPT_N_RANGE = (1 << 10, 1 << 20)

LOCKABLE_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
CLEAR_DTYPES: dict[str, torch.dtype] = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "uint16": torch.uint16,
    "uint32": torch.uint32,
    "uint64": torch.uint64,
}
_ALL_DTYPES = {**LOCKABLE_DTYPES, **CLEAR_DTYPES}
_HEADER_KEYS = {"format", "scheme", "rounds", "sbox", "nonce", "kdf", "payload_bytes", "tensors", "metadata"}
_ENTRY_KEYS = {"name", "dtype", "shape", "offset", "nbytes", "locked"}
SPEC = HeaderSpec("locked file", FORMAT_NAME, FORMAT_VERSION, required=_HEADER_KEYS - {"format"},
                  max_bytes=MAX_HEADER_BYTES, version_in_header=False)
"""The header rules (:mod:`modelshield.container`); the version lives in the binary prefix."""


def dtype_name(dtype: torch.dtype) -> str | None:
    """The format's name for a torch dtype, or None if the format cannot store it.

    Example:
        >>> dtype_name(torch.bfloat16), dtype_name(torch.complex64)
        ('bfloat16', None)
    """
    for name, candidate in _ALL_DTYPES.items():
        if candidate == dtype:
            return name
    return None


def itemsize(dtype: str) -> int:
    """Bytes per element of a format dtype name."""
    return torch.empty((), dtype=_ALL_DTYPES[dtype]).element_size()


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def payload_start(header_len: int) -> int:
    """Offset of the payload for a header of ``header_len`` bytes (prefix + header, rounded up to 64)."""
    return _align(PREFIX.size + header_len)


def canonical_layout(sizes: list[int]) -> tuple[list[int], int]:
    """Offsets of consecutive tensors of these byte sizes, each 64-aligned, and the payload length.

    Example:
        >>> canonical_layout([8, 100, 0, 4])
        ([0, 64, 192, 192], 196)
    """
    offsets, end = [], 0
    for size in sizes:
        start = _align(end)
        offsets.append(start)
        end = start + size
    return offsets, end


@dataclass(frozen=True)
class KdfParams:
    """How the master key is obtained: ``key`` (a 32-byte key) or ``scrypt`` (from a passphrase)."""

    name: str = "key"
    salt: bytes = b""
    n: int = 0
    r: int = 0
    p: int = 0

    def to_dict(self) -> dict[str, Any]:
        if self.name == "key":
            return {"name": "key"}
        return {"name": "scrypt", "salt": base64.b64encode(self.salt).decode("ascii"), "n": self.n, "r": self.r, "p": self.p}


@dataclass(frozen=True)
class TensorEntry:
    """One manifest row: where a tensor's bytes are and how to read them."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    locked: bool

    @property
    def torch_dtype(self) -> torch.dtype:
        """The tensor's torch dtype."""
        return _ALL_DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "offset": self.offset,
                "nbytes": self.nbytes, "locked": self.locked}


@dataclass(frozen=True)
class LockHeader:
    """The parsed header of a locked file (see ``docs/lock-format.md`` section 2)."""

    scheme: str
    rounds: int
    nonce: bytes
    kdf: KdfParams
    tensors: tuple[TensorEntry, ...]
    payload_bytes: int
    metadata: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Canonical JSON encoding (sorted keys, no whitespace)."""
        doc = {
            "scheme": self.scheme, "rounds": self.rounds, "sbox": "aes",
            "nonce": base64.b64encode(self.nonce).decode("ascii"), "kdf": self.kdf.to_dict(),
            "payload_bytes": self.payload_bytes, "tensors": [t.to_dict() for t in self.tensors],
            "metadata": dict(self.metadata),
        }
        return encode_header(doc, SPEC)

    @classmethod
    def from_bytes(cls, raw: bytes, source: str) -> LockHeader:
        """Parse and validate header JSON; raises FormatError naming ``source`` and the field."""
        return _HeaderParser(source).parse(raw)


def encode_prefix(header_len: int) -> bytes:
    """The 16-byte fixed prefix for a header of ``header_len`` bytes."""
    return PREFIX.pack(MAGIC, FORMAT_VERSION, 0, header_len)


def parse_prefix(prefix: bytes, source: str) -> int:
    """Check magic, version and flags of the first 16 bytes; return the header length.

    Example:
        >>> parse_prefix(encode_prefix(100), "f")
        100
        >>> parse_prefix(b"PK\\x03\\x04" + bytes(12), "f.zip")
        Traceback (most recent call last):
        ...
        modelshield.errors.FormatError: f.zip: not a modelshield locked file (magic is 504b030400000000, expected 894d534c4f434b0a)
    """
    if len(prefix) < PREFIX.size:
        raise FormatError(f"{source}: not a modelshield locked file ({len(prefix)} bytes, shorter than the {PREFIX.size}-byte prefix)")
    magic, version, flags, header_len = PREFIX.unpack(prefix[: PREFIX.size])
    check_magic(magic, MAGIC, SPEC, source)
    check_version(version, SPEC, source)
    if flags != 0:
        raise FormatError(f"{source}: prefix field flags: expected 0, got {flags:#06x}")
    if not 2 <= header_len <= MAX_HEADER_BYTES:
        raise FormatError(f"{source}: header length {header_len} is outside 2..{MAX_HEADER_BYTES}")
    return int(header_len)


class _HeaderParser(Fields):
    def parse(self, raw: bytes) -> LockHeader:
        doc = parse_header(raw, SPEC, self.source)
        scheme = self.string(doc, "scheme", choices=SCHEMES)
        rounds = self.integer(doc, "rounds", 1, MAX_ROUNDS)
        self.string(doc, "sbox", choices=("aes",))
        nonce = self.b64(doc, "nonce", NONCE_BYTES, NONCE_BYTES)
        kdf = self.parse_kdf(doc["kdf"])
        payload_bytes = self.integer(doc, "payload_bytes", 0, MAX_PAYLOAD_BYTES)
        tensors = self.parse_tensors(doc["tensors"], payload_bytes)
        metadata = self.str_map(doc, "metadata", max_entries=MAX_METADATA_ENTRIES)
        return LockHeader(scheme, rounds, nonce, kdf, tensors, payload_bytes, metadata)  # type: ignore[arg-type]

    def parse_kdf(self, doc: Any) -> KdfParams:
        if not isinstance(doc, dict):
            raise self.fail("kdf", "a JSON object", type(doc).__name__)
        name = self.string(doc, "name", where="kdf.", choices=("key", "scrypt"))
        if name == "key":
            self.exact_keys(doc, {"name"}, where="kdf")
            return KdfParams()
        self.exact_keys(doc, {"name", "salt", "n", "r", "p"}, where="kdf")
        salt = self.b64(doc, "salt", 16, 64, where="kdf.")
        n = self.integer(doc, "n", *SCRYPT_N_RANGE, where="kdf.")
        if n & (n - 1):  # type: ignore[operator]
            raise self.fail("kdf.n", "a power of two", n)
        r, p = self.integer(doc, "r", 1, 32, where="kdf."), self.integer(doc, "p", 1, 16, where="kdf.")
        return KdfParams("scrypt", salt, n, r, p)  # type: ignore[arg-type]

    def parse_tensors(self, doc: Any, payload_bytes: int) -> tuple[TensorEntry, ...]:
        if not isinstance(doc, list):
            raise self.fail("tensors", "a JSON array", type(doc).__name__)
        if len(doc) > MAX_TENSORS:
            raise self.fail("tensors", f"at most {MAX_TENSORS} entries", f"{len(doc)} entries")
        entries: list[TensorEntry] = []
        end, previous = 0, None
        for i, item in enumerate(doc):
            where = f"tensors[{i}]."
            item = self.exact_keys(item, _ENTRY_KEYS, where=f"tensors[{i}]")
            name = self.string(item, "name", where=where, max_chars=MAX_NAME_CHARS)
            if not name:
                raise self.fail(f"{where}name", f"a non-empty string of at most {MAX_NAME_CHARS} characters", name)
            if previous is not None and not previous < name:
                raise self.fail(f"{where}name", f"names sorted and unique (after {previous!r})", name)
            previous = name
            dtype = str(self.string(item, "dtype", where=where, choices=tuple(_ALL_DTYPES)))
            shape = self.int_list(item, "shape", 0, MAX_PAYLOAD_BYTES, where=where, max_items=MAX_NDIM)
            numel = math.prod(shape)
            nbytes = self.integer(item, "nbytes", 0, MAX_PAYLOAD_BYTES, where=where)
            if numel * itemsize(dtype) != nbytes:
                raise self.fail(f"{where}nbytes", f"{numel * itemsize(dtype)} (shape {shape} x {itemsize(dtype)}-byte {dtype})", nbytes)
            offset = self.integer(item, "offset", 0, MAX_PAYLOAD_BYTES, where=where)
            if offset != _align(end):
                raise self.fail(f"{where}offset", f"{_align(end)} (canonical layout)", offset)
            end = offset + nbytes
            if end > payload_bytes:
                raise self.fail(f"{where}nbytes", f"a tensor ending inside the {payload_bytes}-byte payload (ends at {end})", nbytes)
            locked = item["locked"]
            if locked is not (dtype in LOCKABLE_DTYPES):
                raise self.fail(f"{where}locked", str(dtype in LOCKABLE_DTYPES).lower() + f" for dtype {dtype}", locked)
            entries.append(TensorEntry(name, dtype, tuple(shape), offset, nbytes, locked))  # type: ignore[arg-type]
        if end != payload_bytes:
            raise self.fail("payload_bytes", f"{end} (the end of the last tensor)", payload_bytes)
        return tuple(entries)
