"""The one versioned file format: a strict JSON header parser and writer, and secret files (0600).

Every file modelshield writes carries a small JSON header that names its format and version. This module
holds the only code that reads and writes such headers, so every format refuses the same hostile inputs in the
same way and says so in the same words:

* the header's size is capped *before* anything is read or allocated for it;
* the JSON is strict: UTF-8, duplicate keys refused, ``NaN``/``Infinity`` refused;
* the ``format`` name and the ``version`` are checked against the caller's constants (a :class:`HeaderSpec`);
* the key set is exact: the spec's required keys, and optional ones, nothing else;
* the fields are checked with typed helpers (:class:`Fields`) whose messages name the file, the field, what
  was expected and what was found.

Every failure is a :class:`~modelshield.errors.FormatError` whose message starts with the file (or, for bytes
that do not come from a file, the name of their source).

Two framings share the same header rules:

* **raw-bytes formats** frame the header JSON themselves and hand its bytes to :func:`parse_header`: Deep-Lock
  files (``lock/format.py``: magic, u16 version, u32 length, header), :class:`~modelshield.keys.SecretKey`
  files (``keys.py``: the whole small file is the header) and the QUEEN client state
  (``defense/client_state.py``: magic, u32 length, header, arrays);
* **safetensors-based formats** keep the header JSON as a string under one key of the safetensors
  ``__metadata__``: checkpoints (``models/checkpoint.py``), AuthNet key files (``auth/key.py``) and QUEEN
  artefacts (``defense/queen_artifacts.py``). :func:`read_safetensors_header` reads and checks the safetensors
  header itself (length capped before reading, strict JSON, known dtypes, byte ranges that tile the data
  exactly) before any tensor is read, and :func:`metadata_header` parses the versioned header inside it.

Secret files (keys) are written with :func:`save_secret_file` (atomic, mode 0600, no overwrite unless asked)
and read with :func:`load_secret_file` (size cap, a one-line warning when the mode is looser than 0600).
The watermark key (``modelshield.watermark``) and the server's client registry (``modelshield.serve``) use
this module too; a new format should add itself to ``tests/formats/test_malformed.py``.

Example:
    >>> spec = HeaderSpec("example file", "modelshield-example", 1, required={"n"})
    >>> raw = encode_header({"n": 3}, spec)
    >>> raw
    b'{"format":"modelshield-example","n":3,"version":1}'
    >>> parse_header(raw, spec, "x.bin")["n"]
    3
    >>> parse_header(b'{"format":"modelshield-example","version":2,"n":3}', spec, "x.bin")
    Traceback (most recent call last):
    ...
    modelshield.errors.FormatError: x.bin: example file format version 2 is not supported (expected 1)
    >>> parse_header(b'{"format":"modelshield-example","version":1,"n":NaN}', spec, "x.bin")
    Traceback (most recent call last):
    ...
    modelshield.errors.FormatError: x.bin: header is not acceptable JSON (non-standard JSON constant NaN)
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import stat
import struct
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from modelshield._io import atomic_write_bytes
from modelshield.errors import ConfigError, FormatError

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "SAFETENSORS_DTYPE_BYTES",
    "SECRET_FILE_MODE",
    "Fields",
    "HeaderSpec",
    "SafetensorsHeader",
    "TensorInfo",
    "check_magic",
    "check_version",
    "encode_header",
    "load_secret_file",
    "metadata_entry",
    "metadata_header",
    "open_input",
    "parse_header",
    "parse_json",
    "read_safetensors_header",
    "save_secret_file",
    "secret_from_env",
]

DEFAULT_MAX_HEADER_BYTES = 1 << 20
SECRET_FILE_MODE = 0o600
SAFETENSORS_DTYPE_BYTES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
_RESERVED = frozenset({"format", "version"})
_MISSING = object()


# -- the header ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeaderSpec:
    """What one format's versioned JSON header must look like.

    Attributes:
        kind: how messages name the format, e.g. ``"checkpoint"`` ("not a modelshield checkpoint").
        name: the value of the header's ``format`` key, or None for a format whose header has no ``format``
            key (a binary magic number identifies it).
        version: the one version this code reads and writes.
        required: keys every header has, besides ``format`` and ``version``.
        optional: keys a header may have.
        max_bytes: the cap on the header's encoded size, checked before it is read.
        version_in_header: False where the version lives in a binary prefix (checked with
            :func:`check_version`) and the JSON has no ``version`` key.

    Example:
        >>> HeaderSpec("key file", "k", 1, required={"version"})
        Traceback (most recent call last):
        ...
        modelshield.errors.ConfigError: HeaderSpec 'key file': 'format' and 'version' are implied, not listed (got ['version'])
    """

    kind: str
    name: str | None
    version: int
    required: frozenset[str] = field(default_factory=frozenset)
    optional: frozenset[str] = field(default_factory=frozenset)
    max_bytes: int = DEFAULT_MAX_HEADER_BYTES
    version_in_header: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "required", frozenset(self.required))
        object.__setattr__(self, "optional", frozenset(self.optional))
        listed = sorted((self.required | self.optional) & _RESERVED)
        if listed:
            raise ConfigError(f"HeaderSpec {self.kind!r}: 'format' and 'version' are implied, not listed (got {listed})")
        if self.required & self.optional:
            raise ConfigError(f"HeaderSpec {self.kind!r}: keys both required and optional: {sorted(self.required & self.optional)}")
        if type(self.version) is not int or self.version < 0 or self.max_bytes < 2:
            raise ConfigError(f"HeaderSpec {self.kind!r}: version must be a non-negative int and max_bytes >= 2")

    @property
    def implied(self) -> dict[str, Any]:
        """The ``format`` and ``version`` entries every header of this spec carries."""
        out: dict[str, Any] = {}
        if self.name is not None:
            out["format"] = self.name
        if self.version_in_header:
            out["version"] = self.version
        return out


def _shown(value: Any) -> str:
    if value is _MISSING:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Reject(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Reject(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise _Reject(f"non-standard JSON constant {name}")


def parse_json(raw: bytes | bytearray | memoryview | str, source: str, *, max_bytes: int,
               what: str = "header") -> Any:
    """Strict JSON: size cap first, UTF-8, no duplicate keys, no NaN/Infinity, bounded nesting.

    Args:
        raw: the JSON text or its UTF-8 bytes.
        source: the file (or other source) named in messages.
        max_bytes: the cap on the UTF-8 size (a longer string is refused before it is encoded or parsed).
        what: how messages name the text (``header``, ``safetensors header``, ...).

    Raises:
        FormatError: over the cap, not UTF-8, not JSON, or JSON this format refuses.

    Example:
        >>> parse_json(b'{"a":1,"a":2}', "f.bin", max_bytes=100)
        Traceback (most recent call last):
        ...
        modelshield.errors.FormatError: f.bin: header is not acceptable JSON (duplicate key 'a')
    """
    if len(raw) > max_bytes:  # characters never outnumber UTF-8 bytes: a cheap first check for text too
        raise FormatError(f"{source}: {what} is {len(raw)} bytes, over the {max_bytes}-byte cap")
    try:
        data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    except UnicodeError:
        raise FormatError(f"{source}: {what} is not UTF-8 text") from None
    if len(data) > max_bytes:
        raise FormatError(f"{source}: {what} is {len(data)} bytes, over the {max_bytes}-byte cap")
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except UnicodeError:
        raise FormatError(f"{source}: {what} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{source}: {what} is not valid JSON ({exc.msg} at byte {exc.pos})") from None
    except (_Reject, ValueError, RecursionError) as exc:
        raise FormatError(f"{source}: {what} is not acceptable JSON ({exc or type(exc).__name__})") from None


def check_version(got: Any, spec: HeaderSpec, source: str) -> None:
    """Refuse any version but ``spec.version`` (an int; ``True`` is not 1).

    Example:
        >>> check_version(3, HeaderSpec("locked file", "modelshield-lock", 1), "m.mslock")
        Traceback (most recent call last):
        ...
        modelshield.errors.FormatError: m.mslock: locked file format version 3 is not supported (expected 1)
    """
    if type(got) is not int or got != spec.version:
        raise FormatError(f"{source}: {spec.kind} format version {_shown(got) if type(got) is not int else got} "
                          f"is not supported (expected {spec.version})")


def check_magic(got: bytes, magic: bytes, spec: HeaderSpec, source: str) -> None:
    """Refuse a file that does not start with ``magic`` (``got`` is its first ``len(magic)`` bytes, or fewer).

    Example:
        >>> check_magic(b"\\x89PNG", b"MSQS", HeaderSpec("QUEEN client state", None, 1), "s.bin")
        Traceback (most recent call last):
        ...
        modelshield.errors.FormatError: s.bin: not a modelshield QUEEN client state (magic is 89504e47, expected 4d535153)
    """
    if len(got) < len(magic):
        raise FormatError(f"{source}: not a modelshield {spec.kind} ({len(got)} bytes, shorter than the "
                          f"{len(magic)}-byte magic)")
    if bytes(got[: len(magic)]) != magic:
        raise FormatError(f"{source}: not a modelshield {spec.kind} (magic is {bytes(got[: len(magic)]).hex()}, "
                          f"expected {magic.hex()})")


def parse_header(raw: bytes | bytearray | memoryview | str, spec: HeaderSpec, source: str) -> dict[str, Any]:
    """Parse and check a versioned header: cap, strict JSON, object, format name, version, exact keys.

    Returns:
        The header as a dict (``format`` and ``version`` included); check its fields with :class:`Fields`.

    Raises:
        FormatError: naming ``source``; the first failed check in the order above.
    """
    doc = parse_json(raw, source, max_bytes=spec.max_bytes)
    fields = Fields(source)
    if not isinstance(doc, dict):
        raise fields.fail("(top level)", "a JSON object", type(doc).__name__)
    if spec.name is not None and doc.get("format", _MISSING) != spec.name:
        got = doc.get("format", _MISSING)
        raise FormatError(f"{source}: not a modelshield {spec.kind} (header field format: expected {spec.name!r}, "
                          f"got {_shown(got)})")
    if spec.version_in_header:
        check_version(doc.get("version", _MISSING), spec, source)
    fields.exact_keys(doc, spec.required | set(spec.implied), spec.optional)
    return doc


def encode_header(doc: Mapping[str, Any], spec: HeaderSpec) -> bytes:
    """The canonical encoding of a header: ``format``/``version`` added, sorted keys, no whitespace, UTF-8.

    The writer obeys the reader's rules: the key set is checked, NaN is refused, and the result must fit
    ``spec.max_bytes``.

    Raises:
        ConfigError: a key the spec does not allow or a missing one, a value JSON cannot hold (NaN, an object),
            or a header over the cap.
    """
    body = dict(doc)
    clash = sorted(set(body) & _RESERVED)
    if clash:
        raise ConfigError(f"{spec.kind} header: {clash} are written by encode_header, not passed")
    body.update(spec.implied)
    keys = set(body)
    allowed = spec.required | spec.optional | set(spec.implied)
    if not spec.required <= keys or not keys <= allowed:
        raise ConfigError(f"{spec.kind} header: missing {sorted(spec.required - keys)}, unexpected {sorted(keys - allowed)}")
    try:
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{spec.kind} header: not JSON-encodable ({exc})") from None
    if len(raw) > spec.max_bytes:
        raise ConfigError(f"{spec.kind} header: {len(raw)} bytes, over the {spec.max_bytes}-byte cap")
    return raw


class Fields:
    """Typed checks of header fields; every failure is a FormatError naming the source, field, expected, got.

    ``where`` is the path of the enclosing object (``"kdf."``, ``"tensors[3]."``), prefixed to the field name.

    Example:
        >>> Fields("m.mslock").integer({"rounds": 0}, "rounds", 1, 16)
        Traceback (most recent call last):
        ...
        modelshield.errors.FormatError: m.mslock: header field rounds: expected an integer in 1..16, got 0
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field_name: str, expected: str, got: Any) -> FormatError:
        """The error for one field (returned, for the caller to raise)."""
        return FormatError(f"{self.source}: header field {field_name}: expected {expected}, got {_shown(got)}")

    def exact_keys(self, doc: Any, required: Iterable[str], optional: Iterable[str] = (), where: str = "") -> dict[str, Any]:
        """``doc`` must be an object holding every required key and nothing but required and optional keys."""
        if not isinstance(doc, dict):
            raise self.fail(where or "(top level)", "a JSON object", type(doc).__name__)
        required, keys = set(required), set(doc)
        missing, extra = sorted(required - keys), sorted(keys - required - set(optional))
        if missing or extra:
            detail = "; ".join(part for part in (f"missing {missing}" if missing else "",
                                                 f"unexpected {extra}" if extra else "") if part)
            raise FormatError(f"{self.source}: header {where or 'object'}: {detail}")
        return doc

    def _get(self, doc: Mapping[str, Any], key: str) -> Any:
        return doc.get(key, _MISSING)

    def integer(self, doc: Mapping[str, Any], key: str, lo: int, hi: int, *, where: str = "",
                nullable: bool = False) -> int | None:
        """An int (not a bool) in ``lo..hi``; None too when ``nullable``."""
        value = self._get(doc, key)
        if nullable and value is None:
            return None
        if type(value) is not int or not lo <= value <= hi:
            raise self.fail(f"{where}{key}", f"an integer in {lo}..{hi}" + (" or null" if nullable else ""), value)
        return value

    def number(self, doc: Mapping[str, Any], key: str, lo: float = -math.inf, hi: float = math.inf, *,
               where: str = "", nullable: bool = False) -> float | None:
        """A finite number (int or float, not a bool) in ``[lo, hi]``; None too when ``nullable``."""
        value = self._get(doc, key)
        if nullable and value is None:
            return None
        if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
            raise self.fail(f"{where}{key}", f"a number in [{lo}, {hi}]" + (" or null" if nullable else ""), value)
        return float(value)

    def string(self, doc: Mapping[str, Any], key: str, *, where: str = "", choices: tuple[str, ...] | None = None,
               max_chars: int = 1 << 16, nullable: bool = False) -> str | None:
        """A string (one of ``choices`` if given) of at most ``max_chars`` characters; None too when ``nullable``."""
        value = self._get(doc, key)
        if nullable and value is None:
            return None
        if not isinstance(value, str) or (choices is not None and value not in choices) or len(value) > max_chars:
            expected = "one of " + ", ".join(choices) if choices else f"a string of at most {max_chars} characters"
            raise self.fail(f"{where}{key}", expected + (" or null" if nullable else ""), value)
        return value

    def boolean(self, doc: Mapping[str, Any], key: str, *, where: str = "") -> bool:
        """true or false."""
        value = self._get(doc, key)
        if not isinstance(value, bool):
            raise self.fail(f"{where}{key}", "true or false", value)
        return value

    def b64(self, doc: Mapping[str, Any], key: str, lo: int, hi: int, *, where: str = "") -> bytes:
        """Standard padded base64 of ``lo..hi`` bytes, decoded."""
        value = self._get(doc, key)
        if not isinstance(value, str) or len(value) > 4 * hi:
            raise self.fail(f"{where}{key}", f"base64 of {lo}..{hi} bytes", value)
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise self.fail(f"{where}{key}", "valid base64", value) from None
        if not lo <= len(raw) <= hi:
            raise self.fail(f"{where}{key}", f"{lo}..{hi} bytes", f"{len(raw)} bytes")
        return raw

    def int_list(self, doc: Mapping[str, Any], key: str, lo: int, hi: int, *, where: str = "",
                 length: int | None = None, max_items: int = 1 << 16) -> list[int]:
        """A list of ints in ``lo..hi`` (exactly ``length`` of them if given, else at most ``max_items``)."""
        value = self._get(doc, key)
        count_ok = isinstance(value, list) and (len(value) == length if length is not None else len(value) <= max_items)
        if not count_ok or any(type(v) is not int or not lo <= v <= hi for v in value):
            count = f"{length}" if length is not None else f"at most {max_items}"
            raise self.fail(f"{where}{key}", f"a list of {count} integers in {lo}..{hi}", value)
        return list(value)

    def number_list(self, doc: Mapping[str, Any], key: str, *, where: str = "", length: int | None = None,
                    max_items: int = 1 << 16) -> list[float]:
        """A list of finite numbers (exactly ``length`` of them if given, else at most ``max_items``)."""
        value = self._get(doc, key)
        count_ok = isinstance(value, list) and (len(value) == length if length is not None else len(value) <= max_items)
        if not count_ok or any(type(v) not in (int, float) or not math.isfinite(v) for v in value):
            count = f"{length}" if length is not None else f"at most {max_items}"
            raise self.fail(f"{where}{key}", f"a list of {count} finite numbers", value)
        return [float(v) for v in value]

    def obj(self, doc: Mapping[str, Any], key: str, *, where: str = "", max_entries: int = 1 << 16) -> dict[str, Any]:
        """A JSON object (its contents unchecked) of at most ``max_entries`` entries."""
        value = self._get(doc, key)
        if not isinstance(value, dict) or len(value) > max_entries:
            raise self.fail(f"{where}{key}", f"a JSON object of at most {max_entries} entries",
                            type(value).__name__ if isinstance(value, dict) else value)
        return value

    def str_map(self, doc: Mapping[str, Any], key: str, *, where: str = "", max_entries: int = 1024) -> dict[str, str]:
        """A JSON object mapping strings to strings, at most ``max_entries`` entries."""
        value = self._get(doc, key)
        if not isinstance(value, dict):
            raise self.fail(f"{where}{key}", "a JSON object", type(value).__name__ if value is not _MISSING else value)
        if len(value) > max_entries:
            raise self.fail(f"{where}{key}", f"at most {max_entries} entries", f"{len(value)} entries")
        for name, item in value.items():
            if not isinstance(item, str):
                raise self.fail(f"{where}{key}[{name!r}]", "a string", item)
        return dict(value)


# -- safetensors framing --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors header: dtype name (``F32``...), shape, and byte range in the data."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """A checked safetensors header: tensors by name, the string metadata, and the data's start offset."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int


def _read_head(handle: BinaryIO, size: int, source: str, max_bytes: int) -> SafetensorsHeader:
    first = handle.read(8)
    if len(first) < 8:
        raise FormatError(f"{source}: not a safetensors file ({len(first)} bytes, shorter than the 8-byte header length)")
    (length,) = struct.unpack("<Q", first)
    if not 2 <= length <= max_bytes:
        raise FormatError(f"{source}: safetensors header length {length} is outside 2..{max_bytes}")
    if 8 + length > size:
        raise FormatError(f"{source}: truncated file: the header needs {8 + length} bytes, file has {size}")
    doc = parse_json(handle.read(length), source, max_bytes=max_bytes, what="safetensors header")
    fields = Fields(source)
    if not isinstance(doc, dict):
        raise fields.fail("(top level)", "a JSON object", type(doc).__name__)
    metadata = fields.str_map(doc, "__metadata__", max_entries=1024) if "__metadata__" in doc else {}
    data_bytes = size - 8 - length
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int]] = []
    for name, entry in doc.items():
        if name == "__metadata__":
            continue
        where = f"{name}."
        fields.exact_keys(entry, {"dtype", "shape", "data_offsets"}, where=name)
        dtype = fields.string(entry, "dtype", where=where, choices=tuple(SAFETENSORS_DTYPE_BYTES))
        shape = fields.int_list(entry, "shape", 0, 1 << 40, where=where, max_items=16)
        start, end = fields.int_list(entry, "data_offsets", 0, 1 << 62, where=where, length=2)
        want = math.prod(shape) * SAFETENSORS_DTYPE_BYTES[str(dtype)]
        if end - start != want:
            raise fields.fail(f"{where}data_offsets", f"a range of {want} bytes (shape {shape} of {dtype})", [start, end])
        tensors[name] = TensorInfo(str(dtype), tuple(shape), start, end)
        spans.append((start, end))
    covered = 0
    for start, end in sorted(spans):
        if start != covered:
            raise FormatError(f"{source}: safetensors data is not tiled exactly (a tensor starts at {start}, expected {covered})")
        covered = end
    if covered != data_bytes:
        raise FormatError(f"{source}: truncated or extended file: the tensors need {covered} data bytes, file has {data_bytes}")
    return SafetensorsHeader(tensors, metadata, 8 + length)


def read_safetensors_header(data: str | os.PathLike[str] | bytes | bytearray | memoryview, *, source: str | None = None,
                            max_bytes: int = 16 << 20) -> SafetensorsHeader:
    """Read and check a safetensors header (from a file, reading only the header, or from bytes).

    The header length is capped before it is read; the JSON is strict; every tensor has a known dtype, a shape
    and a byte range of the matching size, and the ranges tile the data exactly (so a truncated or extended
    file is refused here, before any tensor is read).

    Args:
        data: a path, or the file's bytes.
        source: the name used in messages (default: the path, or ``<bytes>``).
        max_bytes: the cap on the header's length.

    Raises:
        FormatError: naming the source.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        import io

        view = memoryview(data).cast("B")
        return _read_head(io.BytesIO(view), len(view), source or "<bytes>", max_bytes)  # type: ignore[arg-type]
    path = Path(data)
    with open(path, "rb") as handle:
        return _read_head(handle, os.fstat(handle.fileno()).st_size, source or str(path), max_bytes)


def metadata_header(header: SafetensorsHeader, key: str, spec: HeaderSpec, source: str) -> dict[str, Any]:
    """The versioned header stored as JSON text under ``key`` of a safetensors file's metadata."""
    text = header.metadata.get(key)
    if text is None:
        found = ", ".join(repr(k) for k in sorted(header.metadata)) or "none"
        raise FormatError(f"{source}: not a modelshield {spec.kind} (no {key!r} metadata; found {found})")
    return parse_header(text, spec, source)


def metadata_entry(doc: Mapping[str, Any], key: str, spec: HeaderSpec) -> dict[str, str]:
    """The safetensors ``metadata=`` argument holding ``doc`` as a versioned header under ``key``.

    Example:
        >>> metadata_entry({"n": 1}, "ex", HeaderSpec("example", "modelshield-example", 1, required={"n"}))
        {'ex': '{"format":"modelshield-example","n":1,"version":1}'}
    """
    return {key: encode_header(doc, spec).decode("utf-8")}


# -- files ----------------------------------------------------------------------------------------------------
def open_input(path: str | os.PathLike[str], *, what: str, missing_hint: str = "") -> BinaryIO:
    """Open a file to read, turning "missing", "a directory" or "not a regular file" into one-line ConfigErrors.

    Example:
        >>> open_input("/nonexistent/m.mslock", what="locked file", missing_hint=" (create one with `modelshield lock`)")
        Traceback (most recent call last):
        ...
        modelshield.errors.ConfigError: locked file /nonexistent/m.mslock does not exist (create one with `modelshield lock`)
    """
    path = Path(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist{missing_hint}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, expected a {what}") from None
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise ConfigError(f"{path} is not a regular file, expected a {what}")
    return handle


def secret_from_env(variable: str, *, expected: str) -> str:
    """The stripped value of an environment variable holding a secret; ConfigError naming it when unset.

    Example:
        >>> secret_from_env("MODELSHIELD_SURELY_UNSET", expected="a base64 key")
        Traceback (most recent call last):
        ...
        modelshield.errors.ConfigError: environment variable MODELSHIELD_SURELY_UNSET is not set (expected a base64 key)
    """
    value = os.environ.get(variable, "").strip()
    if not value:
        raise ConfigError(f"environment variable {variable} is not set (expected {expected})")
    return value


def save_secret_file(path: str | os.PathLike[str], data: bytes, *, what: str = "key file",
                     overwrite: bool = False) -> Path:
    """Write a secret atomically with mode 0600; refuse to replace an existing file unless ``overwrite``.

    Raises:
        ConfigError: the file exists and ``overwrite`` is False.

    Example:
        >>> import os, tempfile
        >>> p = save_secret_file(os.path.join(tempfile.mkdtemp(), "k"), b"secret")
        >>> oct(p.stat().st_mode & 0o777)
        '0o600'
        >>> save_secret_file(p, b"other")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        modelshield.errors.ConfigError: .../k already exists; refusing to overwrite a key file (pass overwrite=True / --force)
    """
    path = Path(path)
    try:
        return atomic_write_bytes(path, data, mode=SECRET_FILE_MODE, overwrite=overwrite)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; refusing to overwrite a {what} (pass overwrite=True / --force)") from None


def load_secret_file(path: str | os.PathLike[str], *, max_bytes: int, what: str = "key file",
                     missing_hint: str = "", stacklevel: int = 3) -> bytes:
    """Read a secret file: size cap before reading, and a warning when others may read it.

    Args:
        path: the file.
        max_bytes: the largest acceptable file.
        what: how messages name the file (``"key file"``, ``"auth key file"``...).
        missing_hint: appended to the does-not-exist message (e.g. how to create one).
        stacklevel: for the permission warning (the default points at the caller's caller).

    Raises:
        ConfigError: the file does not exist or is a directory.
        FormatError: the file is larger than ``max_bytes``.
    """
    path = Path(path)
    with open_input(path, what=what, missing_hint=missing_hint) as handle:
        st = os.fstat(handle.fileno())
        if st.st_size > max_bytes:
            raise FormatError(f"{path}: {st.st_size} bytes is over the {max_bytes}-byte cap for a {what}")
        mode = stat.S_IMODE(st.st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.warn(f"{what} {path} is accessible by other users (mode {mode:#o}); run `chmod 600 {path}`",
                          stacklevel=stacklevel)
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FormatError(f"{path}: over the {max_bytes}-byte cap for a {what} (it grew while read)")
    return data
