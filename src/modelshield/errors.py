"""The whole exception tree of modelshield.

Every error the library raises on purpose derives from :class:`ModelShieldError`. Errors caused by the
user's input also derive from the matching built-in, so ``except ValueError`` keeps working::

    ModelShieldError (Exception)             exit code 1
    ├── ConfigError (ValueError)             exit code 3   bad argument, unknown name, shape mismatch
    │   └── DatasetNotFound (FileNotFoundError) exit code 4  no dataset where we looked
    ├── FormatError (ValueError)             exit code 5   malformed, truncated or foreign file
    ├── IntegrityError                       exit code 6   wrong key or tampered file (one opaque message)
    └── BudgetExceeded (RuntimeError)        exit code 7   a client's query budget is spent

The CLI prints ``error: <message>`` on one line and exits with the class's ``exit_code``; it never shows a
traceback for these. Messages name the file or field, what was expected and what was found.

Example:
    >>> from modelshield.errors import ConfigError, ModelShieldError
    >>> issubclass(ConfigError, ValueError) and issubclass(ConfigError, ModelShieldError)
    True
    >>> ConfigError.exit_code
    3
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "DatasetNotFound",
    "FormatError",
    "IntegrityError",
    "ModelShieldError",
    "did_you_mean",
]


class ModelShieldError(Exception):
    """Root of every error modelshield raises on purpose."""

    exit_code: int = 1


class ConfigError(ModelShieldError, ValueError):
    """An argument, name, shape or setting is not acceptable."""

    exit_code = 3


class DatasetNotFound(ConfigError, FileNotFoundError):
    """A dataset is not where we looked; the message says where and how to point at it."""

    exit_code = 4


class FormatError(ModelShieldError, ValueError):
    """A file is malformed, truncated, of another kind, or of an unsupported version."""

    exit_code = 5


class IntegrityError(ModelShieldError):
    """Authentication failed: the key is wrong or the data was modified.

    The message is deliberately the same for both causes, so that it tells an attacker nothing.
    """

    exit_code = 6


class BudgetExceeded(ModelShieldError, RuntimeError):
    """A client asked for more queries than its budget allows (the server refuses the whole batch)."""

    exit_code = 7


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return a ``" (did you mean 'x'?)"`` hint for a misspelt name, or an empty string.

    Example:
        >>> did_you_mean("lenet", ["lenet5", "vgg", "resnet20"])
        " (did you mean 'lenet5'?)"
        >>> did_you_mean("zzz", ["lenet5"])
        ''
    """
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
