"""Lock a model or state dict under a secret key, and unlock it again bit-exactly.

The recipe layer of Deep-Lock: :func:`lock_model` / :func:`lock_state_dict` give a :class:`LockedModel`
(the locked-file image in memory), which saves to and loads from one file (``docs/lock-format.md``);
:func:`unlock_state_dict` / :func:`unlock_model` check the MAC and restore every tensor bit for bit.

Example:
    >>> import torch
    >>> from modelshield.keys import SecretKey
    >>> key = SecretKey.generate()
    >>> weights = {"w": torch.randn(3, 4), "b": torch.zeros(3, dtype=torch.bfloat16), "n": torch.tensor(7)}
    >>> locked = lock_state_dict(weights, key)
    >>> restored = unlock_state_dict(locked, key)
    >>> all(torch.equal(restored[k].view(torch.uint8), weights[k].view(torch.uint8)) for k in ("w", "b"))
    True
    >>> unlock_state_dict(locked, SecretKey.generate())
    Traceback (most recent call last):
    ...
    modelshield.errors.IntegrityError: <memory>: authentication failed: wrong key, or the file was modified
"""

from __future__ import annotations

import hmac
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modelshield._io import atomic_write_bytes
from modelshield.container import open_input
from modelshield.errors import ConfigError, FormatError, IntegrityError, did_you_mean
from modelshield.keys import ScryptParams, SecretKey
from modelshield.lock.engine import lock_payload, unlock_payload
from modelshield.lock.format import (
    LOCKABLE_DTYPES,
    MAX_ROUNDS,
    NONCE_BYTES,
    PREFIX,
    SCHEMES,
    TAG_BYTES,
    KdfParams,
    LockHeader,
    TensorEntry,
    canonical_layout,
    dtype_name,
    encode_prefix,
    parse_prefix,
    payload_start,
)
from modelshield.lock.schedule import mac_key, make_keystreams

__all__ = [
    "CHECKPOINT_METADATA_KEY",
    "LockConfig",
    "LockedModel",
    "Passphrase",
    "is_locked_file",
    "lock_model",
    "lock_state_dict",
    "unlock_model",
    "unlock_state_dict",
]

CHECKPOINT_METADATA_KEY = "modelshield"
_INTEGRITY_MESSAGE = "authentication failed: wrong key, or the file was modified"


@dataclass(frozen=True)
class LockConfig:
    """How to lock.

    Attributes:
        scheme: key schedule, ``ctr`` (default: AES-256-CTR keystream from an HKDF subkey) or
            ``aes-expansion`` (paper-faithful AES-256 key expansion; weak, see the format spec).
        rounds: S-box rounds, 1..16 (the paper uses 1).

    Example:
        >>> LockConfig(scheme="ctr ")
        Traceback (most recent call last):
        ...
        modelshield.errors.ConfigError: scheme must be one of ctr, aes-expansion, got 'ctr ' (did you mean 'ctr'?)
    """

    scheme: str = "ctr"
    rounds: int = 1

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r}{did_you_mean(str(self.scheme), SCHEMES)}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or not 1 <= self.rounds <= MAX_ROUNDS:
            raise ConfigError(f"rounds must be an integer in 1..{MAX_ROUNDS}, got {self.rounds!r}")


class Passphrase:
    """A passphrase to derive the master key from with scrypt (salt and cost stored in the file header).

    Never shows itself; prefer a random key file (:class:`~modelshield.keys.SecretKey`) where possible.

    Example:
        >>> Passphrase("correct horse battery staple")
        Passphrase(<redacted>)
    """

    __slots__ = ("_secret", "params")

    def __init__(self, secret: str | bytes, params: ScryptParams | None = None) -> None:
        self._secret = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if not self._secret:
            raise ConfigError("the passphrase is empty")
        self.params = params or ScryptParams()

    def derive(self, salt: bytes, params: ScryptParams) -> SecretKey:
        """The master key for this salt and cost."""
        return SecretKey.from_passphrase(self._secret, salt, params)

    def __repr__(self) -> str:
        return "Passphrase(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> object:
        raise TypeError("Passphrase refuses to be pickled")


LockKey = SecretKey | Passphrase


def _master_key(key: LockKey, kdf: KdfParams, source: str) -> bytes:
    if kdf.name == "key":
        if not isinstance(key, SecretKey):
            raise ConfigError(f"{source} was locked with a key file, not a passphrase: pass the key (--key-file or the key variable)")
        return key.to_bytes()
    if not isinstance(key, Passphrase):
        raise ConfigError(f"{source} was locked with a passphrase, not a key file: pass the passphrase (--passphrase-env)")
    return key.derive(kdf.salt, ScryptParams(kdf.n, kdf.r, kdf.p)).to_bytes()


def _require_little_endian() -> None:
    if sys.byteorder != "little":  # pragma: no cover - no big-endian CI
        raise ConfigError("locked files store little-endian bytes; this big-endian host is not supported")


def _flat_bytes(tensor: torch.Tensor) -> np.ndarray:
    """A flat uint8 numpy view of a CPU tensor's raw bytes (a copy only if it is not contiguous or on a device)."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    return t.view(torch.uint8).numpy() if t.numel() else np.empty(0, dtype=np.uint8)


def _as_tensor(raw: np.ndarray, entry: TensorEntry) -> torch.Tensor:
    """Wrap a flat uint8 buffer (not copied) as the entry's dtype and shape."""
    if entry.nbytes == 0:
        return torch.empty(entry.shape, dtype=entry.torch_dtype)
    return torch.from_numpy(raw).view(entry.torch_dtype).reshape(entry.shape)


def _mac_prefix(mac: hmac.HMAC, prefix: bytes, header_bytes: bytes) -> None:
    mac.update(prefix)
    mac.update(header_bytes)
    mac.update(bytes(payload_start(len(header_bytes)) - PREFIX.size - len(header_bytes)))


class LockedModel:
    """A locked state dict: header, locked payload and MAC tag, exactly as stored in the file.

    Build one with :func:`lock_state_dict` / :func:`lock_model` or read one with :meth:`load` /
    :meth:`from_bytes`; nothing in it is usable without the key except through :meth:`attacker_state_dict`.

    Attributes:
        header: the parsed header (scheme, rounds, nonce, KDF, manifest, metadata).
        source: where it came from (a path, or ``<memory>``), for error messages.
    """

    def __init__(self, header: LockHeader, header_bytes: bytes, payload: np.ndarray, tag: bytes, source: str = "<memory>") -> None:
        self.header = header
        self._header_bytes = header_bytes
        self._payload = payload
        self._tag = tag
        self.source = source

    # -- description ---------------------------------------------------------------------------
    @property
    def tensor_names(self) -> list[str]:
        """Names in the canonical (sorted) order."""
        return [t.name for t in self.header.tensors]

    @property
    def metadata(self) -> dict[str, str]:
        """The free-form string metadata (e.g. the checkpoint metadata under ``modelshield``)."""
        return dict(self.header.metadata)

    @property
    def payload_bytes(self) -> int:
        """Size of the payload in bytes."""
        return self.header.payload_bytes

    @property
    def file_bytes(self) -> int:
        """Size of the file image in bytes."""
        return payload_start(len(self._header_bytes)) + self.header.payload_bytes + TAG_BYTES

    def __repr__(self) -> str:
        h = self.header
        return (f"LockedModel(source={self.source!r}, scheme={h.scheme!r}, rounds={h.rounds}, "
                f"tensors={len(h.tensors)}, payload_bytes={h.payload_bytes})")

    # -- the attacker's view ---------------------------------------------------------------------
    def attacker_state_dict(self) -> dict[str, torch.Tensor]:
        """The locked bytes reinterpreted as tensors of the declared dtypes and shapes, without any key.

        This is what a thief holding the file can load into the architecture; integer buffers are readable.
        """
        out: dict[str, torch.Tensor] = {}
        for entry in self.header.tensors:
            out[entry.name] = _as_tensor(self._payload[entry.offset : entry.offset + entry.nbytes].copy(), entry)
        return out

    # -- unlocking -----------------------------------------------------------------------------
    def unlock(self, key: LockKey, *, verify: bool = True) -> dict[str, torch.Tensor]:
        """Check the MAC and return the original tensors (see :func:`unlock_state_dict`)."""
        return self.unlock_with_master_key(_master_key(key, self.header.kdf, self.source), verify=verify)

    def unlock_with_master_key(self, master: bytes, *, verify: bool = True) -> dict[str, torch.Tensor]:
        """Unlock with the 32 raw master-key bytes (after any passphrase KDF): for attacks and tests.

        Raises:
            IntegrityError: ``verify`` and the MAC does not match.
        """
        _require_little_endian()
        h = self.header
        mac = hmac.new(mac_key(master, h.nonce), digestmod="sha256") if verify else None
        if mac is not None:
            _mac_prefix(mac, encode_prefix(len(self._header_bytes)), self._header_bytes)
        # numpy buffers (large ones get transparent huge pages), wrapped as tensors without a copy
        outputs = [np.empty(e.nbytes, dtype=np.uint8) for e in h.tensors]
        keystreams = make_keystreams(h.scheme, master, h.nonce, h.rounds, h.payload_bytes)
        tag, gaps_zero = unlock_payload(h.tensors, self._payload, outputs, keystreams, mac)
        if tag is not None and not hmac.compare_digest(tag, self._tag):
            outputs.clear()
            raise IntegrityError(f"{self.source}: {_INTEGRITY_MESSAGE}")
        if not gaps_zero:
            raise FormatError(f"{self.source}: payload padding between tensors is not zero")
        return {e.name: _as_tensor(out, e) for e, out in zip(h.tensors, outputs)}

    # -- bytes and files -------------------------------------------------------------------------
    def _parts(self) -> list[bytes | memoryview]:
        pad = payload_start(len(self._header_bytes)) - PREFIX.size - len(self._header_bytes)
        return [encode_prefix(len(self._header_bytes)), self._header_bytes, bytes(pad), memoryview(self._payload), self._tag]

    def to_bytes(self) -> bytes:
        """The complete file image."""
        return b"".join(self._parts())

    def save(self, path: str | os.PathLike[str], *, mode: int = 0o644) -> Path:
        """Write the file atomically (temporary file in the same folder, fsync, rename); returns the path."""
        return atomic_write_bytes(path, self._parts(), mode=mode)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, source: str = "<bytes>") -> LockedModel:
        """Parse a file image held in memory (validated as :meth:`load` does); the payload is a view of ``data``.

        Raises:
            FormatError: not a locked file, unsupported version, malformed header, wrong size.
        """
        view = memoryview(data).cast("B")
        header, header_bytes, start = _read_head(lambda offset, n: bytes(view[offset : offset + n]), len(view), source)
        payload = np.frombuffer(view, dtype=np.uint8, count=header.payload_bytes, offset=start)  # read-only view, no copy
        tag = bytes(view[start + header.payload_bytes :])
        return cls(header, header_bytes, payload, tag, source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LockedModel:
        """Read and validate a locked file; the header is checked before the payload is read.

        Raises:
            ConfigError: the file does not exist.
            FormatError: not a locked file, unsupported version, malformed header, truncated or extended.
        """
        path = Path(path)
        source = str(path)
        with open_input(path, what="locked file", missing_hint=" (create one with `modelshield lock`)") as handle:
            header, header_bytes, start = _read_head(lambda offset, n: handle.read(n), os.fstat(handle.fileno()).st_size, source)
            payload = np.empty(header.payload_bytes, dtype=np.uint8)
            got = handle.readinto(memoryview(payload)) if header.payload_bytes else 0
            tag = handle.read(TAG_BYTES)
            if got != header.payload_bytes or len(tag) != TAG_BYTES or handle.read(1):
                raise FormatError(f"{source}: the file changed size while it was read")
        return cls(header, header_bytes, payload, tag, source)


def _read_head(read: Callable[[int, int], bytes], size: int, source: str) -> tuple[LockHeader, bytes, int]:
    """Prefix, header, size and padding checks (section 5 order), reading sequentially through ``read(offset, n)``.

    Returns the header, its bytes and the payload offset; ``read`` is left positioned at the payload.
    """
    header_len = parse_prefix(read(0, PREFIX.size), source)
    if PREFIX.size + header_len > size:
        raise FormatError(f"{source}: truncated file: the header needs {PREFIX.size + header_len} bytes, file has {size}")
    header_bytes = read(PREFIX.size, header_len)
    header = LockHeader.from_bytes(header_bytes, source)
    start = payload_start(header_len)
    expected = start + header.payload_bytes + TAG_BYTES
    if size != expected:
        raise FormatError(f"{source}: truncated or extended file: header says {expected} bytes, file has {size}")
    if any(read(PREFIX.size + header_len, start - PREFIX.size - header_len)):
        raise FormatError(f"{source}: header padding is not zero")
    return header, header_bytes, start


def lock_state_dict(state_dict: Mapping[str, torch.Tensor], key: LockKey, config: LockConfig | None = None, *,
                    metadata: Mapping[str, str] | None = None, _nonce: bytes | None = None,
                    _salt: bytes | None = None) -> LockedModel:
    """Lock every floating tensor of a state dict (parameters and buffers) under ``key``.

    Floating tensors (float16, bfloat16, float32, float64) are locked; integer and bool buffers are stored in
    the clear (authenticated). Tensors are laid out in sorted-name order.

    Args:
        state_dict: name -> tensor (any device; read as contiguous CPU bytes).
        key: a :class:`~modelshield.keys.SecretKey`, or a :class:`Passphrase` (scrypt, salt in the header).
        config: scheme and rounds (default :class:`LockConfig`: ``ctr``, 1 round).
        metadata: string metadata stored (authenticated, not encrypted) in the header.

    Raises:
        ConfigError: a tensor of an unsupported dtype (complex, float8), or bad metadata.
    """
    _require_little_endian()
    config = config or LockConfig()
    names = sorted(state_dict)
    entries_src: list[tuple[str, str, torch.Tensor]] = []
    for name in names:
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            raise ConfigError(f"state dict entry {name!r}: expected a tensor, got {type(tensor).__name__}")
        dname = dtype_name(tensor.dtype)
        if dname is None:
            raise ConfigError(f"state dict entry {name!r}: dtype {tensor.dtype} cannot be locked "
                              f"(supported: {', '.join(LOCKABLE_DTYPES)}, and integer/bool buffers in the clear)")
        entries_src.append((name, dname, tensor))
    meta = dict(metadata or {})
    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in meta.items()):
        raise ConfigError("lock metadata must map strings to strings")
    sources = [_flat_bytes(t) for _, _, t in entries_src]
    offsets, payload_len = canonical_layout([s.shape[0] for s in sources])
    entries = tuple(TensorEntry(name, dname, tuple(t.shape), off, src.shape[0], dname in LOCKABLE_DTYPES)
                    for (name, dname, t), off, src in zip(entries_src, offsets, sources))
    nonce = _nonce if _nonce is not None else secrets.token_bytes(NONCE_BYTES)
    if isinstance(key, Passphrase):
        salt = _salt if _salt is not None else secrets.token_bytes(16)
        kdf = KdfParams("scrypt", salt, key.params.n, key.params.r, key.params.p)
    else:
        kdf = KdfParams()
    header = LockHeader(config.scheme, config.rounds, nonce, kdf, entries, payload_len, meta)
    header_bytes = header.to_bytes()
    LockHeader.from_bytes(header_bytes, "the new header")  # the writer obeys the reader's rules
    master = _master_key(key, kdf, "the new file")
    mac = hmac.new(mac_key(master, nonce), digestmod="sha256")
    _mac_prefix(mac, encode_prefix(len(header_bytes)), header_bytes)
    payload = np.zeros(payload_len, dtype=np.uint8)
    keystreams = make_keystreams(config.scheme, master, nonce, config.rounds, payload_len)
    tag = lock_payload(entries, sources, payload, keystreams, mac)
    return LockedModel(header, header_bytes, payload, tag)


def unlock_state_dict(locked: LockedModel, key: LockKey, *, verify: bool = True) -> dict[str, torch.Tensor]:
    """Restore the original state dict, bit for bit, after checking the MAC.

    Args:
        locked: the locked model.
        key: the key (or passphrase) it was locked with.
        verify: check the MAC (default). ``verify=False`` decrypts without any check: it exists only so that
            the benchmark can measure what a wrong key produces; never use it to load a model.

    Raises:
        IntegrityError: wrong key, or the file was modified (one message for both).
        ConfigError: a passphrase given for a key-file lock, or the other way round.
    """
    return locked.unlock(key, verify=verify)


def lock_model(model: nn.Module, key: LockKey, config: LockConfig | None = None, *, meta: object | None = None) -> LockedModel:
    """Lock a module's state dict; ``meta`` (a :class:`~modelshield.models.CheckpointMeta`) lets it be rebuilt.

    Example:
        >>> from modelshield.models import build_model
        >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
        >>> locked = lock_model(model, SecretKey.generate())
        >>> len(locked.tensor_names) == len(model.state_dict())
        True
    """
    metadata = {}
    if meta is not None:
        metadata[CHECKPOINT_METADATA_KEY] = meta.to_json()  # type: ignore[attr-defined]
    return lock_state_dict(model.state_dict(), key, config, metadata=metadata)


def checkpoint_meta(locked: LockedModel):  # type: ignore[no-untyped-def]
    """The :class:`~modelshield.models.CheckpointMeta` stored in a locked file, or None."""
    from modelshield.models.checkpoint import CheckpointMeta

    text = locked.header.metadata.get(CHECKPOINT_METADATA_KEY)
    return None if text is None else CheckpointMeta.from_json(text, locked.source)


def build_locked_architecture(locked: LockedModel) -> nn.Module:
    """A fresh module of the architecture recorded in the locked file's checkpoint metadata."""
    from modelshield.models import MODEL_REGISTRY, build_model

    meta = checkpoint_meta(locked)
    if meta is None:
        raise ConfigError(f"{locked.source} holds no checkpoint metadata; pass the module to load into (model=...)")
    if meta.architecture not in MODEL_REGISTRY:
        raise ConfigError(f"{locked.source}: architecture {meta.architecture!r} is not in the zoo; pass model=...")
    return build_model(meta.architecture, normalization=meta.normalization, **meta.arch_args)


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load a state dict strictly, turning a mismatch into a FormatError; returns the model in eval mode."""
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise FormatError(f"{source}: weights do not match the module: {'; '.join(x.strip() for x in lines[1:4]) or lines[0]}") from None
    return model.eval()


def unlock_model(locked: LockedModel, key: LockKey, model: nn.Module | None = None) -> nn.Module:
    """Unlock into ``model`` (default: rebuilt from the file's checkpoint metadata); returned in eval mode.

    Example:
        >>> from modelshield.models import CheckpointMeta, build_model
        >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
        >>> meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits")
        >>> key = SecretKey.generate()
        >>> restored = unlock_model(lock_model(model, key, meta=meta), key)
        >>> all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
        True
    """
    state = unlock_state_dict(locked, key)
    return load_into(model if model is not None else build_locked_architecture(locked), state, locked.source)


def is_locked_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts with the locked-file magic (cheap: reads its first bytes; False if unreadable).

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(suffix=".safetensors") as handle:
        ...     is_locked_file(handle.name)
        False
    """
    from modelshield.lock.format import MAGIC

    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
