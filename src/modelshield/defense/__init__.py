"""Extraction defenses behind one interface (input batch, logits, features, client id -> probabilities).

Baselines: :class:`NoDefense`, :class:`TopOneDefense`, :class:`RoundingDefense`, :class:`ReverseSigmoidDefense`,
:class:`GaussianNoiseDefense`; and :class:`QueenDefense` (QUEEN: query unlearning), fitted offline with
:func:`fit_queen`, its per-client state kept in a :class:`~modelshield.state.StateStore` (in memory or SQLite).
:class:`ProtectedModel` turns a model and a defense into ``answer(x, client_id, policy)``, enforcing each
client's :class:`ClientPolicy` (output mode, query budget).
"""

from modelshield.defense.base import Defense
from modelshield.defense.baselines import (
    GaussianNoiseDefense,
    NoDefense,
    ReverseSigmoidDefense,
    RoundingDefense,
    TopOneDefense,
)
from modelshield.defense.client_state import QueenClientState
from modelshield.defense.features import FeatureSplit
from modelshield.defense.metrics import BenignReport, benign_report
from modelshield.defense.protected import ClientPolicy, ProtectedModel
from modelshield.defense.queen import QueenConfig, QueenDefense
from modelshield.defense.queen_artifacts import QueenArtifacts, load_queen_artifacts
from modelshield.defense.queen_fit import QueenFitConfig, fit_queen
from modelshield.defense.registry import DEFENSE_NAMES, build_defense

__all__ = [
    "DEFENSE_NAMES",
    "BenignReport",
    "ClientPolicy",
    "Defense",
    "FeatureSplit",
    "GaussianNoiseDefense",
    "NoDefense",
    "ProtectedModel",
    "QueenArtifacts",
    "QueenClientState",
    "QueenConfig",
    "QueenDefense",
    "QueenFitConfig",
    "ReverseSigmoidDefense",
    "RoundingDefense",
    "TopOneDefense",
    "benign_report",
    "build_defense",
    "fit_queen",
    "load_queen_artifacts",
]
