"""Secret keys: the one recipe every protection uses for its master secrets.

A :class:`SecretKey` is 32 random bytes from :mod:`secrets` (or derived from a passphrase with scrypt). It
never shows itself: ``repr`` is redacted, comparison is constant-time, and key files are written atomically
with mode 0600. Keys are read from a file or an environment variable, never from the command line.

Key file format (version 1), UTF-8 JSON with the header rules of :mod:`modelshield.container` (exact keys,
no duplicates, at most 4096 bytes), written with sorted keys and a final newline::

    {"format":"modelshield-secret-key","key":"<base64 of 32 bytes>","version":1}

Example:
    >>> import os, tempfile
    >>> key = SecretKey.generate()
    >>> "redacted" in repr(key)
    True
    >>> path = key.save(os.path.join(tempfile.mkdtemp(), "master.key"))
    >>> oct(path.stat().st_mode & 0o777)
    '0o600'
    >>> SecretKey.load(path) == key
    True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from modelshield.container import (
    Fields,
    HeaderSpec,
    encode_header,
    load_secret_file,
    parse_header,
    save_secret_file,
    secret_from_env,
)
from modelshield.errors import ConfigError, FormatError

__all__ = ["DEFAULT_KEY_ENV", "KEY_BYTES", "ScryptParams", "SecretKey", "load_secret_key"]

KEY_BYTES = 32
KEY_FILE_FORMAT = "modelshield-secret-key"
KEY_FILE_VERSION = 1
MAX_KEY_FILE_BYTES = 4096
DEFAULT_KEY_ENV = "MODELSHIELD_KEY"
KEY_FILE_SPEC = HeaderSpec("secret key file", KEY_FILE_FORMAT, KEY_FILE_VERSION, required={"key"},
                           max_bytes=MAX_KEY_FILE_BYTES)


class ScryptParams:
    """scrypt cost parameters (n, r, p); the defaults follow current OWASP guidance (n=2**17, r=8, p=1).

    Example:
        >>> ScryptParams(n=2**14).as_dict()
        {'n': 16384, 'r': 8, 'p': 1}
    """

    __slots__ = ("n", "p", "r")

    def __init__(self, n: int = 2**17, r: int = 8, p: int = 1) -> None:
        if n < 2**10 or n & (n - 1):
            raise ConfigError(f"scrypt n must be a power of two >= 1024, got {n}")
        if not 1 <= r <= 64 or not 1 <= p <= 16:
            raise ConfigError(f"scrypt r must be in 1..64 and p in 1..16, got r={r}, p={p}")
        self.n, self.r, self.p = n, r, p

    def as_dict(self) -> dict[str, int]:
        """Return the parameters as a JSON-ready dict."""
        return {"n": self.n, "r": self.r, "p": self.p}


class SecretKey:
    """A 256-bit secret. Redacted ``repr``, constant-time ``==``, 0600 key files.

    Args:
        material: exactly 32 bytes of key material.

    Raises:
        ConfigError: if ``material`` is not 32 bytes.
    """

    __slots__ = ("_material",)

    def __init__(self, material: bytes) -> None:
        if not isinstance(material, (bytes, bytearray)) or len(material) != KEY_BYTES:
            got = len(material) if isinstance(material, (bytes, bytearray)) else type(material).__name__
            raise ConfigError(f"a secret key is {KEY_BYTES} bytes, got {got}")
        self._material = bytes(material)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def generate(cls) -> SecretKey:
        """Return a fresh key from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_passphrase(
        cls, passphrase: str | bytes, salt: bytes, params: ScryptParams | None = None
    ) -> SecretKey:
        """Derive a key from a passphrase with scrypt.

        Args:
            passphrase: the passphrase (str is UTF-8 encoded); must not be empty.
            salt: at least 16 random bytes, stored beside whatever the key protects.
            params: scrypt cost; default :class:`ScryptParams`.

        Example:
            >>> salt = bytes(16)
            >>> a = SecretKey.from_passphrase("correct horse", salt, ScryptParams(n=2**10))
            >>> a == SecretKey.from_passphrase("correct horse", salt, ScryptParams(n=2**10))
            True
        """
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        if not passphrase:
            raise ConfigError("the passphrase is empty")
        if len(salt) < 16:
            raise ConfigError(f"the scrypt salt must be at least 16 bytes, got {len(salt)}")
        params = params or ScryptParams()
        kdf = Scrypt(salt=salt, length=KEY_BYTES, n=params.n, r=params.r, p=params.p)
        return cls(kdf.derive(passphrase))

    @classmethod
    def from_text(cls, text: str, *, source: str = "key text") -> SecretKey:
        """Parse a key file's JSON text, or a bare base64 string (as kept in an environment variable)."""
        text = text.strip()
        if text.startswith("{"):
            doc = parse_header(text, KEY_FILE_SPEC, source)
            return cls(Fields(source).b64(doc, "key", KEY_BYTES, KEY_BYTES))
        try:
            material = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise FormatError(f"{source}: the key is not valid base64") from None
        if len(material) != KEY_BYTES:
            raise FormatError(f"{source}: the key is {len(material)} bytes, expected {KEY_BYTES}")
        return cls(material)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SecretKey:
        """Read a key file; warns if the file is readable by group or others.

        Raises:
            ConfigError: the file does not exist.
            FormatError: the file is not a modelshield key file.
        """
        data = load_secret_file(path, max_bytes=MAX_KEY_FILE_BYTES, what="key file",
                                missing_hint=f" (create one with `modelshield keygen --out {path}`)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{path}: not a modelshield secret key file (not UTF-8 text)") from None
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_env(cls, variable: str = DEFAULT_KEY_ENV) -> SecretKey:
        """Read a base64 key (or key-file JSON) from an environment variable."""
        return cls.from_text(secret_from_env(variable, expected="a base64 key"), source=f"${variable}")

    # -- use ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the key file atomically with mode 0600; refuses to overwrite unless asked."""
        data = encode_header({"key": self.to_base64()}, KEY_FILE_SPEC) + b"\n"
        return save_secret_file(path, data, what="key", overwrite=overwrite)

    def to_bytes(self) -> bytes:
        """Return the raw key material. Handle with care: never log it."""
        return self._material

    def to_base64(self) -> str:
        """Return the key as base64 text (for an environment variable). Never log it."""
        return base64.b64encode(self._material).decode("ascii")

    def derive(self, info: bytes, length: int = KEY_BYTES, salt: bytes | None = None) -> bytes:
        """Derive an independent subkey with HKDF-SHA256 (domain-separated by ``info``).

        Example:
            >>> k = SecretKey(bytes(32))
            >>> k.derive(b"a") != k.derive(b"b")
            True
        """
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(self._material)

    @property
    def fingerprint(self) -> str:
        """A short public identifier (16 hex digits of a domain-separated hash); reveals nothing useful."""
        return hashlib.sha256(b"modelshield-key-fingerprint\x00" + self._material).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretKey):
            return NotImplemented
        return hmac.compare_digest(self._material, other._material)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"SecretKey(<redacted>, fingerprint={self.fingerprint})"

    __str__ = __repr__

    def __reduce__(self) -> object:
        raise TypeError("SecretKey refuses to be pickled; save it with SecretKey.save()")


def load_secret_key(key_file: str | os.PathLike[str] | None = None, env: str = DEFAULT_KEY_ENV) -> SecretKey:
    """Load a key from ``key_file`` if given, else from the environment variable ``env``.

    This is how every CLI command gets its key: never from the command line itself.
    """
    if key_file is not None:
        return SecretKey.load(key_file)
    if os.environ.get(env):
        return SecretKey.from_env(env)
    raise ConfigError(f"no key given: pass --key-file PATH or set the environment variable {env}")
