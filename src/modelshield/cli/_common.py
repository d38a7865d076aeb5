"""What every command module shares: help format, shared options, config-backed options, output, keys, data.

A leaf module: the feature modules of :mod:`modelshield.cli` import it, it imports none of them.

Defaults have one source. An option that sets a library setting is declared with :func:`add_config_option`,
which reads its default (and, unless given, its type and help) from the dataclass field or function parameter
it feeds, and records that mapping on the argparse action (``action.config_sources``). An option with no
library setting behind it (an output path, ``--force``) is a plain ``add_argument`` whose ``dest`` is listed in
:data:`CLI_ONLY_OPTIONS` with the reason; ``tests/cli/test_defaults.py`` walks every subcommand and fails on an
option that is neither, or whose default differs from its source.

Example:
    >>> import argparse
    >>> from modelshield.training import TrainConfig
    >>> parser = argparse.ArgumentParser()
    >>> action = add_config_option(parser, TrainConfig, "epochs")
    >>> parser.parse_args([]).epochs == TrainConfig().epochs, action.type
    (True, <class 'int'>)
    >>> parser.parse_args(["--epochs", "3"]).epochs
    3
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from modelshield.errors import ConfigError

if TYPE_CHECKING:
    from modelshield.data import DatasetBundle
    from modelshield.models import Checkpoint

__all__ = [
    "CLI_ONLY_OPTIONS",
    "SPLITS",
    "ArgumentParser",
    "HelpFormatter",
    "add_command",
    "add_config_option",
    "add_data_args",
    "add_key_args",
    "add_output_args",
    "check_input_shape",
    "config_default",
    "emit",
    "load_checkpoint_and_data",
    "load_key",
    "one_line_warning",
    "refuse_overwrite",
    "subcommand_group",
]

K = TypeVar("K")
Subparsers = argparse._SubParsersAction  # type: ignore[type-arg]
Source = tuple[Any, str]  # (dataclass type or callable, field or parameter name)

SPLITS = ("train", "val", "attacker", "test")  # what --split accepts (DatasetBundle.split)

# dest of every option that has no library setting behind it, with the reason (see the module docstring)
CLI_ONLY_OPTIONS: dict[str, str] = {
    "dataset": "dataset name; the default is per command (digits, or the checkpoint's own dataset)",
    "data_root": "folder of the datasets; None falls back to $MODELSHIELD_DATA in the data package",
    "out": "output path",
    "key_out": "output path",
    "force": "overwrite switch for output files",
    "quiet": "output switch",
    "json": "output switch",
    "key_file": "input path; keys never come from the command line",
    "passphrase_env": "name of an environment variable; no library default",
    "model": "zoo architecture to train; the registry has no default",
    "train_size": "subset size for `train`; not a TrainConfig field",
    "split": "dataset split the command scores",
    "as_is": "evaluate a locked file without its key (the thief's view)",
    "defense": "defense name; the library has no default defense",
    "queen": "input path (QUEEN artefacts)",
    "queen_threshold": "switches QUEEN to the coverage threshold (QueenConfig.coverage_threshold) when given",
    "state_db": "input path (SQLite client state); None = in memory",
    "attack": "attack name; build_attack has no default",
    "labels": "answer mode the attacker asks for (soft: probabilities, hard: top-1 label)",
    "budget": "query budget; the library requires it explicitly",
    "pool": "query pool kind; query_pool requires it explicitly",
    "client_id": "the client id the attacker queries as",
    "url": "server address to attack instead of the checkpoint",
    "api_key_file": "input path; API keys never come from the command line",
    "auth_key_file": "input path; keys never come from the command line",
    "classes": "watermark source and target classes; the default is the dataset's (WatermarkKey.for_dataset)",
    "from_scratch": "switches `watermark embed` to WatermarkConfig.from_scratch()",
    "embed_epochs": "`watermark embed --epochs`: WatermarkConfig's or from_scratch()'s default, per --from-scratch",
    "embed_lr": "`watermark embed --lr`: WatermarkConfig's or from_scratch()'s default, per --from-scratch",
    "null_rate": "calibrated null rate from independent models; None = VerifyConfig.default_null_rate",
    "report": "output path",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the epilog's line breaks (examples) and shows each option's default."""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, ``error: ...``, exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def add_command(sub: Subparsers, name: str, *, help: str, examples: Sequence[str],  # noqa: A002
                description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser with the house formatter and an ``example(s):`` epilog (every command has one)."""
    title = "example" if len(examples) == 1 else "examples"
    return sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter,  # type: ignore[no-any-return]
                          epilog=f"{title}:\n" + "\n".join(f"  {line}" for line in examples))


def subcommand_group(sub: Subparsers, name: str, help_text: str, *, examples: Sequence[str] = ()) -> Subparsers:
    """The subcommands of the group ``name`` (``modelshield NAME COMMAND``), created on first use.

    Several feature modules may add commands to one group (``attack extract`` from one, ``attack ...`` from
    another): each calls this and gets the same group.
    """
    if name in sub.choices:
        for action in sub.choices[name]._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
        raise ConfigError(f"command {name!r} exists without subcommands")
    parser = add_command(sub, name, help=help_text, examples=examples) if examples else \
        sub.add_parser(name, help=help_text, formatter_class=HelpFormatter)
    group = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", parser_class=ArgumentParser)
    group.required = True
    return group


# -- options backed by a library setting -----------------------------------------------------------------------

def _source_name(source: Any) -> str:
    return getattr(source, "__qualname__", repr(source))


def config_default(source: Any, name: str) -> Any:
    """The default of field ``name`` of a dataclass ``source``, or of parameter ``name`` of a callable.

    Raises:
        TypeError: no such field or parameter, or it has no default (a programming error, not a user error).

    Example:
        >>> from modelshield.lock import LockConfig
        >>> config_default(LockConfig, "scheme")
        'ctr'
    """
    if dataclasses.is_dataclass(source):
        for item in dataclasses.fields(source):
            if item.name == name:
                if item.default is not dataclasses.MISSING:
                    return item.default
                if item.default_factory is not dataclasses.MISSING:
                    return item.default_factory()
                raise TypeError(f"{_source_name(source)}.{name} has no default; the option is not config-backed")
        raise TypeError(f"{_source_name(source)} has no field {name!r}")
    parameter = inspect.signature(source).parameters.get(name)
    if parameter is None:
        raise TypeError(f"{_source_name(source)} has no parameter {name!r}")
    if parameter.default is inspect.Parameter.empty:
        raise TypeError(f"{_source_name(source)}({name}) has no default; the option is not config-backed")
    return parameter.default


def _type_hint(source: Any, name: str) -> Any:
    target = source.__init__ if isinstance(source, type) and not dataclasses.is_dataclass(source) else source
    try:
        return typing.get_type_hints(target).get(name)
    except Exception:  # unresolvable annotations: the caller passes type=
        return None


def _scalar_type(hint: Any) -> type | None:
    if hint in (int, float, str):
        return hint  # type: ignore[no-any-return]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and args[0] in (int, float, str):
            return args[0]  # type: ignore[no-any-return]
    return None


def _docstring_help(source: Any, name: str) -> str | None:
    """The description of ``name`` in the source's Google-style ``Attributes:`` / ``Args:`` section."""
    doc = inspect.getdoc(source) or ""
    match = re.search(rf"^(\s*){re.escape(name)}(?: \([^)]*\))?: (.+(?:\n\1\s+.+)*)", doc, flags=re.MULTILINE)
    if not match:
        return None
    return " ".join(line.strip() for line in match.group(2).splitlines()).replace("%", "%%")


def add_config_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, source: Any, field: str,
                      *flags: str, also: Sequence[Source] = (), **kwargs: Any) -> argparse.Action:
    """Add an option whose default is the default of ``source.field`` (a dataclass field or a parameter).

    Args:
        parser: parser or argument group.
        source: the config dataclass (``TrainConfig``) or the function (``evaluate_auth``) the option feeds.
        field: its field or parameter name.
        *flags: option strings; default ``--field-name``.
        also: further ``(source, field)`` pairs the same option feeds; their defaults must agree.
        **kwargs: ``add_argument`` keywords; ``type`` defaults to the field's scalar type (``int | None``:
            ``int``) and ``help`` to the field's description in the source's docstring. ``default`` is refused.

    Returns:
        The argparse action, with ``config_sources`` (the ``(source, field)`` pairs) set on it.

    Raises:
        TypeError: ``default`` given, or the sources disagree or have no such defaulted field.
    """
    if "default" in kwargs:
        raise TypeError(f"add_config_option takes the default from {_source_name(source)}.{field}; do not pass one")
    sources: tuple[Source, ...] = ((source, field), *also)
    default = config_default(source, field)
    for other, other_field in also:
        if config_default(other, other_field) != default:
            raise TypeError(f"{_source_name(source)}.{field} = {default!r} but {_source_name(other)}.{other_field} = "
                            f"{config_default(other, other_field)!r}; one option cannot feed both")
    if "type" not in kwargs and "action" not in kwargs and "choices" not in kwargs:
        scalar = _scalar_type(_type_hint(source, field))
        if scalar is None:
            raise TypeError(f"cannot infer the option type of {_source_name(source)}.{field}; pass type=")
        if scalar is not str:
            kwargs["type"] = scalar
    if kwargs.get("help") is None:
        kwargs["help"] = _docstring_help(source, field) or f"{_source_name(source)}.{field}"
    action = parser.add_argument(*(flags or (f"--{field.replace('_', '-')}",)), default=default, **kwargs)
    action.config_sources = sources  # type: ignore[attr-defined]
    return action


# -- shared options --------------------------------------------------------------------------------------------

def add_data_args(parser: argparse.ArgumentParser, *, dataset_default: str | None = "digits") -> None:
    """``--dataset`` and ``--data-root``."""
    parser.add_argument("--dataset", default=dataset_default,
                        help="digits (bundled), mnist, fashion-mnist, cifar10, cifar100, synthetic, imagefolder:PATH"
                        + ("" if dataset_default else " (default: the checkpoint's own dataset)"))
    parser.add_argument("--data-root", default=None, help="folder holding the datasets (default: $MODELSHIELD_DATA)")


def add_key_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, env: Source, file_help: str,
                 env_help: str = "environment variable holding the base64 key", required: bool = True) -> None:
    """``--key-file`` and ``--key-env``: keys never travel on the command line.

    Args:
        parser: parser or argument group.
        env: the ``(function, parameter)`` whose default names the environment variable, e.g.
            ``(load_secret_key, "env")``.
        file_help: what the key file is.
        env_help: what the variable holds.
        required: False where a key is optional (then the variable is used only if set).
    """
    parser.add_argument("--key-file", default=None, type=Path, help=file_help)
    add_config_option(parser, *env, "--key-env", metavar="VAR",
                      help=f"{env_help}, used when --key-file is not given" + ("" if required else " (if set)"))


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--json``."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


# -- running a command -----------------------------------------------------------------------------------------

def emit(args: argparse.Namespace, summary: dict[str, Any], rows: list[tuple[str, str]] | None = None) -> None:
    """Print a result: JSON with ``--json``, else a small table."""
    if getattr(args, "json", False):
        print(json.dumps(summary))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in rows or [(k, str(v)) for k, v in summary.items()]:
        table.add_row(f"[bold]{key}[/]", value)
    Console().print(table)


def refuse_overwrite(*paths: str | os.PathLike[str], force: bool) -> None:
    """Raise ConfigError naming the first existing path unless ``force``."""
    for path in paths:
        if Path(path).exists() and not force:
            raise ConfigError(f"{path} already exists; pass --force to overwrite it")


def load_key(key_file: str | os.PathLike[str] | None, env: str, *, from_file: Callable[[Path], K],
             from_env: Callable[[str], K], what: str = "key") -> K:
    """The key from ``key_file`` if given, else from the environment variable ``env``.

    Raises:
        ConfigError: neither given (the message names both ways).

    Example:
        >>> load_key(None, "MODELSHIELD_DOCTEST_UNSET", from_file=Path, from_env=str)
        Traceback (most recent call last):
        ...
        modelshield.errors.ConfigError: no key given: pass --key-file PATH or set the environment variable MODELSHIELD_DOCTEST_UNSET
    """
    if key_file is not None:
        return from_file(Path(key_file))
    if os.environ.get(env):
        return from_env(env)
    raise ConfigError(f"no {what} given: pass --key-file PATH or set the environment variable {env}")


def check_input_shape(expected: Sequence[int], got: Sequence[int], model_source: str, dataset: str) -> None:
    """Raise a clear ConfigError when a dataset's images do not fit a model.

    Example:
        >>> check_input_shape((1, 8, 8), (1, 28, 28), "m.safetensors", "mnist")
        Traceback (most recent call last):
        ...
        modelshield.errors.ConfigError: m.safetensors expects 1x8x8 images but dataset 'mnist' has 1x28x28; evaluate on the dataset it was trained on, or train a model for 'mnist' with `modelshield train --dataset mnist`
    """
    if tuple(expected) != tuple(got):
        e, g = "x".join(map(str, expected)), "x".join(map(str, got))
        raise ConfigError(f"{model_source} expects {e} images but dataset {dataset!r} has {g}; "
                          f"evaluate on the dataset it was trained on, or train a model for {dataset!r} with "
                          f"`modelshield train --dataset {dataset}`")


def load_checkpoint_and_data(args: argparse.Namespace) -> tuple[Checkpoint, DatasetBundle, str]:
    """``(checkpoint, bundle, dataset)`` for ``args.checkpoint`` and ``args.dataset`` (default: the checkpoint's own).

    Raises:
        ConfigError: the dataset's images or class count do not fit the model.
    """
    from modelshield.data import load_dataset
    from modelshield.models import load_checkpoint

    checkpoint = load_checkpoint(args.checkpoint)
    dataset = args.dataset or checkpoint.meta.dataset
    bundle = load_dataset(dataset, args.data_root)
    check_input_shape(checkpoint.meta.input_shape, bundle.info.input_shape, str(args.checkpoint), dataset)
    if checkpoint.meta.num_classes != bundle.info.num_classes:
        raise ConfigError(f"{args.checkpoint} has {checkpoint.meta.num_classes} classes but {dataset!r} has {bundle.info.num_classes}")
    return checkpoint, bundle, dataset


def one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the CLI: ``warning: ...`` on one line."""
    print(f"warning: {message}", file=sys.stderr)
