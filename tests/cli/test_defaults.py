"""Defaults have one source: every CLI option that sets a library setting takes its default from it.

Walks every subcommand of ``modelshield``. Each option is either mapped to a config field or function parameter
(declared with ``add_config_option``; its default must equal the source's) or is listed, with the reason, in
``CLI_ONLY_OPTIONS``. A new option that is neither fails here, so a copied default cannot drift silently.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from modelshield.cli import COMMANDS, build_parser
from modelshield.cli._common import CLI_ONLY_OPTIONS, add_config_option, config_default
from modelshield.training import TrainConfig


def _commands(parser: argparse.ArgumentParser, path: str = "modelshield") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, f"{path} {name}")


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    for action in parser._actions:
        if action.option_strings and not isinstance(action, skip):
            yield action


def problems(parser: argparse.ArgumentParser) -> list[str]:
    """Every option whose default is not its source's, or that has neither a source nor a CLI-only reason."""
    found = []
    for command, sub in _commands(parser):
        for action in _options(sub):
            flag = action.option_strings[-1]
            sources = getattr(action, "config_sources", None)
            if sources is None:
                if action.dest not in CLI_ONLY_OPTIONS:
                    found.append(f"`{command} {flag}` has no config mapping: declare it with add_config_option(parser, "
                                 f"Config, field) or list {action.dest!r} in CLI_ONLY_OPTIONS with the reason")
                continue
            for source, field in sources:
                expected = config_default(source, field)
                if action.default != expected or type(action.default) is not type(expected):
                    found.append(f"`{command} {flag}` default {action.default!r} != {source.__qualname__}.{field} = {expected!r}")
    return found


def test_every_option_default_comes_from_its_source() -> None:
    assert problems(build_parser()) == []


def test_every_feature_registers_config_backed_options() -> None:
    parser = build_parser()
    mapped = {command for command, sub in _commands(parser)
              if any(getattr(action, "config_sources", None) for action in _options(sub))}
    for command in ("train", "lock", "auth embed", "auth evaluate", "defense fit", "attack extract", "demo", "bench",
                    "serve", "clients add"):
        assert f"modelshield {command}" in mapped, command
    assert len(COMMANDS) == len(set(COMMANDS))


def test_cli_only_reasons_are_all_in_use() -> None:
    used = {action.dest for _, sub in _commands(build_parser()) for action in _options(sub)
            if getattr(action, "config_sources", None) is None}
    assert set(CLI_ONLY_OPTIONS) - used == set()


def test_a_drifted_or_unmapped_option_is_reported() -> None:
    parser = argparse.ArgumentParser()
    action = add_config_option(parser, TrainConfig, "epochs")
    assert problems(parser) == []
    action.default = 12  # a hand-edited default
    parser.add_argument("--lr", type=float, default=1e-3)  # copied by hand instead of mapped
    found = problems(parser)
    assert len(found) == 2
    assert "default 12 != TrainConfig.epochs = 10" in found[0] and "`modelshield --lr` has no config mapping" in found[1]


@pytest.mark.parametrize("argv, expected", [
    (["train", "--out", "m"], {"epochs": TrainConfig().epochs, "lr": TrainConfig().lr, "patience": None}),
    (["attack", "extract", "m", "--queen-threshold-queries", "7"], {"queen_threshold_queries": 7, "seed": 0}),
])
def test_parsed_values(argv, expected) -> None:  # type: ignore[no-untyped-def]
    args = vars(build_parser().parse_args(argv))
    assert {key: args[key] for key in expected} == expected


def test_add_config_option_refuses_a_second_default_and_disagreeing_sources() -> None:
    from modelshield.defense.queen import QueenConfig

    with pytest.raises(TypeError, match="do not pass one"):
        add_config_option(argparse.ArgumentParser(), TrainConfig, "epochs", default=3)
    with pytest.raises(TypeError, match="one option cannot feed both"):
        add_config_option(argparse.ArgumentParser(), TrainConfig, "lr", also=[(QueenConfig, "beta")])
    with pytest.raises(TypeError, match="has no field"):
        add_config_option(argparse.ArgumentParser(), TrainConfig, "epoch")
