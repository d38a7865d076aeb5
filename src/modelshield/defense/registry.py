"""Build a defense by name: ``none``, ``top1``, ``rounding``, ``reverse-sigmoid``, ``gaussian``, ``queen``.

Example:
    >>> build_defense("rounding", decimals=2).describe()
    {'name': 'rounding', 'decimals': 2}
    >>> build_defense("nonee")
    Traceback (most recent call last):
    ...
    modelshield.errors.ConfigError: unknown defense 'nonee' (did you mean 'none'?); known: none, top1, rounding, reverse-sigmoid, gaussian, queen
"""

from __future__ import annotations

from typing import Any

from torch import nn

from modelshield.defense.base import Defense
from modelshield.defense.baselines import GaussianNoiseDefense, NoDefense, ReverseSigmoidDefense, RoundingDefense, TopOneDefense
from modelshield.defense.queen import QueenConfig, QueenDefense
from modelshield.defense.queen_artifacts import QueenArtifacts
from modelshield.errors import ConfigError, did_you_mean
from modelshield.state import StateStore

__all__ = ["DEFENSE_NAMES", "build_defense", "canonical_defense_name"]

DEFENSE_NAMES = ("none", "top1", "rounding", "reverse-sigmoid", "gaussian", "queen")
_BASELINES: dict[str, type[Defense]] = {"none": NoDefense, "top1": TopOneDefense, "rounding": RoundingDefense,
                                        "reverse-sigmoid": ReverseSigmoidDefense, "gaussian": GaussianNoiseDefense}
_ALIASES = {"top-1": "top1", "label": "top1", "round": "rounding", "reverse_sigmoid": "reverse-sigmoid",
            "rs": "reverse-sigmoid", "noise": "gaussian"}


def canonical_defense_name(name: str) -> str:
    """``name`` lower-cased with its alias resolved (``rs`` -> ``reverse-sigmoid``); unknown names pass through.

    Example:
        >>> canonical_defense_name("RS"), canonical_defense_name("queen")
        ('reverse-sigmoid', 'queen')
    """
    return _ALIASES.get(name.lower(), name.lower())


def build_defense(name: str, *, model: nn.Module | None = None, artifacts: QueenArtifacts | None = None,
                  queen: QueenConfig | None = None, store: StateStore | None = None, **settings: Any) -> Defense:
    """A defense by name.

    Args:
        name: one of :data:`DEFENSE_NAMES`.
        model: the protected model (``queen`` only).
        artifacts: fitted QUEEN artefacts (``queen`` only).
        queen: QUEEN's online settings.
        store: QUEEN's client state store.
        **settings: the baseline's fields (``decimals``, ``beta``, ``gamma``, ``sigma``, ``seed``).

    Raises:
        ConfigError: unknown name, bad setting, or QUEEN without its model and artefacts.
    """
    key = canonical_defense_name(name)
    if key == "queen":
        if model is None or artifacts is None:
            raise ConfigError("defense 'queen' needs the protected model and its fitted artefacts "
                              "(`modelshield defense fit` writes them; pass --queen FILE)")
        if settings:
            raise ConfigError(f"defense 'queen' takes its settings as a QueenConfig, got {sorted(settings)}")
        return QueenDefense.for_model(model, artifacts, queen, store=store)
    if key not in _BASELINES:
        raise ConfigError(f"unknown defense {name!r}{did_you_mean(key, DEFENSE_NAMES)}; known: {', '.join(DEFENSE_NAMES)}")
    try:
        return _BASELINES[key](**settings)
    except TypeError as exc:
        raise ConfigError(f"defense {key!r}: bad setting ({exc})") from None
