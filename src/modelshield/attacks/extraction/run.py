"""Run an extraction attack end to end: collect a transcript, train the pirate, score it.

Example:
    >>> import torch
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.models import build_model
    >>> from modelshield.oracle import ModelOracle
    >>> from modelshield.defense import ClientPolicy, NoDefense, ProtectedModel
    >>> from modelshield.attacks.extraction.pools import QueryPool
    >>> data = make_synthetic(400, num_classes=4, seed=0)
    >>> victim = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> oracle = ModelOracle(ProtectedModel(victim, NoDefense()), policy=ClientPolicy(output="label"))
    >>> attack = build_attack("knockoff", budget=200)
    >>> r = run_extraction(attack, oracle, QueryPool(data.x, "synthetic"), data, victim=victim,
    ...                    pirate=PirateConfig(epochs=2))
    >>> r.attack, r.labels, r.queries, len(r.transcript), type(r.pirate).__name__
    ('knockoff', 'hard', 200, 200, 'LeNet5')
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from torch import nn

from modelshield.attacks.extraction.distillation import Distillation, DistillationConfig
from modelshield.attacks.extraction.jbda import JBDA, JBDAConfig
from modelshield.attacks.extraction.knockoff import KnockoffConfig, KnockoffNets
from modelshield.attacks.extraction.pirate import PirateConfig, score_pirate, train_pirate
from modelshield.attacks.extraction.pools import QueryPool
from modelshield.attacks.extraction.transcript import Transcript
from modelshield.data.types import TensorData
from modelshield.errors import ConfigError, did_you_mean
from modelshield.oracle import Oracle

__all__ = ["ATTACK_NAMES", "ExtractionAttack", "ExtractionResult", "TranscriptScore", "build_attack", "run_extraction",
           "score_transcript"]

ATTACK_NAMES = ("knockoff", "knockoff-adaptive", "jbda", "jbda-tr")
ATTACK_NAMES = (*ATTACK_NAMES, "distillation")


class ExtractionAttack(Protocol):
    """Anything that spends an oracle's budget on a pool and returns what it collected."""

    @property
    def name(self) -> str:
        """Attack name."""
        ...

    def collect(self, oracle: Oracle, pool: QueryPool) -> Transcript:
        """Query ``oracle``; return queries and answers."""
        ...


def build_attack(name: str, *, budget: int, seed: int = 0, **settings: Any) -> ExtractionAttack:
    """An attack by name (:data:`ATTACK_NAMES`); ``settings`` are its config's other fields.

    Raises:
        ConfigError: unknown name or bad setting.
    """
    try:
        if name == "knockoff":
            return KnockoffNets(KnockoffConfig(budget=budget, strategy="random", seed=seed, **settings))
        if name == "knockoff-adaptive":
            return KnockoffNets(KnockoffConfig(budget=budget, strategy="adaptive", seed=seed, **settings))
        if name in ("jbda", "jbda-tr"):
            settings.setdefault("seed_size", min(100, budget))
            return JBDA(JBDAConfig(budget=budget, targeted=name == "jbda-tr", seed=seed, **settings))
        if name == "distillation":
            return Distillation(DistillationConfig(budget=budget, seed=seed, **settings))
    except TypeError as exc:
        raise ConfigError(f"attack {name!r}: bad setting ({exc})") from None
    raise ConfigError(f"unknown extraction attack {name!r}{did_you_mean(name, ATTACK_NAMES)}; known: {', '.join(ATTACK_NAMES)}")


@dataclass(frozen=True)
class TranscriptScore:
    """A pirate trained on a transcript, and its scores.

    Attributes:
        pirate: the trained pirate (eval mode).
        accuracy: pirate test accuracy.
        fidelity: agreement of the pirate with the victim on the test set (None without the victim).
        train_seconds: time spent training the pirate.
    """

    pirate: nn.Module = field(repr=False, compare=False)
    accuracy: float
    fidelity: float | None
    train_seconds: float


@dataclass(frozen=True)
class ExtractionResult:
    """Outcome of one extraction: what was collected, the pirate trained on it, and its scores.

    Attributes:
        attack: attack name.
        labels: ``soft`` (probability answers) or ``hard`` (every answer one-hot: a label-only client or a
            top-1 defense); see :attr:`Transcript.labels`.
        pool: query pool name.
        queries: queries spent.
        pirate_architecture: pirate model.
        accuracy: pirate test accuracy.
        fidelity: agreement of the pirate with the victim on the test set (None without the victim).
        query_seconds: time spent collecting.
        train_seconds: time spent training the pirate.
        pirate: the trained pirate.
        transcript: the queries and the answers received.
    """

    attack: str
    labels: str
    pool: str
    queries: int
    pirate_architecture: str
    accuracy: float
    fidelity: float | None
    query_seconds: float
    train_seconds: float
    pirate: nn.Module = field(repr=False, compare=False)
    transcript: Transcript = field(repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        """The JSON-able fields (everything but the pirate and the transcript)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("pirate", "transcript")}


def score_transcript(transcript: Transcript, test: TensorData, *, victim: nn.Module | None = None,
                     pirate: PirateConfig | None = None, progress: bool = False) -> TranscriptScore:
    """Train a pirate on a transcript and score it on ``test`` (accuracy; fidelity to ``victim`` if given)."""
    start = time.perf_counter()
    model = train_pirate(transcript.x, transcript.answers, pirate, progress=progress)
    seconds = time.perf_counter() - start
    score = score_pirate(model, test, victim)
    return TranscriptScore(model, score.accuracy, score.fidelity, seconds)


def run_extraction(attack: ExtractionAttack, oracle: Oracle, pool: QueryPool, test: TensorData, *,
                   victim: nn.Module | None = None, pirate: PirateConfig | None = None,
                   progress: bool = False) -> ExtractionResult:
    """Collect with ``attack`` against ``oracle`` from ``pool``, train a pirate, score it on ``test``."""
    pirate = pirate or PirateConfig()
    start = time.perf_counter()
    transcript = attack.collect(oracle, pool)
    query_seconds = time.perf_counter() - start
    score = score_transcript(transcript, test, victim=victim, pirate=pirate, progress=progress)
    return ExtractionResult(attack.name, transcript.labels, pool.name, len(transcript), pirate.architecture,
                            score.accuracy, score.fidelity, round(query_seconds, 3), round(score.train_seconds, 3),
                            score.pirate, transcript)
