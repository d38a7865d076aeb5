"""An adaptive attacker that knows QUEEN: it drops the answers it believes were reversed, before training.

QUEEN answers a client's queries with a label-preserving PERTURB (a softmax: every entry strictly positive)
until the client's coverage of sensitive regions passes a threshold, and with REVERSE after that:
``max(2q - p, 0)`` renormalised, which usually has exact zeros and often another top-1 than the model. An
attacker who knows this can test each answer:

* ``shape``: drop an answer with any entry ``<= zero_tol`` (a softmax never has an exact zero). Meaningless
  for hard-label (one-hot) transcripts, which are refused.
* ``disagreement``: train a pirate on the first ``warmup`` answers (answered before QUEEN's threshold) and drop
  every later answer whose top-1 differs from that pirate's; the warm-up rows are always kept.
* ``both``: drop what either test drops.

Example:
    >>> import torch
    >>> from modelshield.attacks.extraction.transcript import Transcript
    >>> answers = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.4, 0.6], [0.5, 0.25, 0.25]])
    >>> r = filter_transcript(Transcript(torch.zeros(3, 1, 4, 4), answers), FilterConfig(method="shape"))
    >>> r.kept.tolist(), r.dropped, len(r.transcript)
    ([True, False, True], 1, 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from modelshield.attacks.extraction.pirate import PirateConfig, train_pirate
from modelshield.attacks.extraction.pools import QueryPool
from modelshield.attacks.extraction.run import ExtractionAttack
from modelshield.attacks.extraction.transcript import Transcript
from modelshield.errors import ConfigError
from modelshield.oracle import Oracle
from modelshield.training import predict_logits

__all__ = ["FILTER_METHODS", "FilterConfig", "FilterResult", "FilteringAttack", "filter_transcript", "shape_suspects"]

FILTER_METHODS = ("shape", "disagreement", "both")


@dataclass(frozen=True)
class FilterConfig:
    """How answers believed to be reversed are found.

    Attributes:
        method: ``shape``, ``disagreement`` or ``both`` (see the module docstring).
        warmup: the first ``warmup`` answers train the disagreement pirate and are always kept by that test.
        zero_tol: an entry ``<= zero_tol`` counts as an exact zero (shape test).
        pirate: how the disagreement pirate is trained (default :class:`PirateConfig`).
    """

    method: str = "shape"
    warmup: int = 1000
    zero_tol: float = 1e-12
    pirate: PirateConfig | None = None

    def __post_init__(self) -> None:
        if self.method not in FILTER_METHODS:
            raise ConfigError(f"filter method must be one of {', '.join(FILTER_METHODS)}, got {self.method!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"filter warmup must be an integer >= 0, got {self.warmup!r}")
        if self.method != "shape" and self.warmup < 1:
            raise ConfigError(f"filter method {self.method!r} trains a pirate on the warm-up answers: warmup must be >= 1")
        if isinstance(self.zero_tol, bool) or not isinstance(self.zero_tol, (int, float)) \
                or not math.isfinite(self.zero_tol) or self.zero_tol < 0:
            raise ConfigError(f"filter zero_tol must be a finite number >= 0, got {self.zero_tol!r}")
        if self.pirate is not None and not isinstance(self.pirate, PirateConfig):
            raise ConfigError(f"filter pirate must be a PirateConfig or None, got {type(self.pirate).__name__}")


@dataclass(frozen=True)
class FilterResult:
    """What the filter kept.

    Attributes:
        transcript: the kept queries and answers, in their original order.
        kept: bool mask (N,) over the input transcript.
        dropped: number of rows dropped.
    """

    transcript: Transcript = field(repr=False)
    kept: torch.Tensor = field(repr=False)
    dropped: int


def shape_suspects(answers: torch.Tensor, zero_tol: float = 1e-12) -> torch.Tensor:
    """Rows with any entry ``<= zero_tol`` (an exact zero, which a softmax never has): bool (N,)."""
    return (answers <= zero_tol).any(dim=1)


def _disagreements(answers: torch.Tensor, predicted: torch.Tensor, warmup: int) -> torch.Tensor:
    """Rows past ``warmup`` whose top-1 answer differs from ``predicted`` (top-1 labels, one per row): bool (N,)."""
    flags = answers.argmax(dim=1) != predicted
    flags[:warmup] = False
    return flags


def filter_transcript(transcript: Transcript, config: FilterConfig | None = None) -> FilterResult:
    """Drop the answers ``config`` flags as reversed.

    Raises:
        ConfigError: the shape test on a hard-label transcript (one-hot answers always have zeros).
    """
    config = config or FilterConfig()
    n = len(transcript)
    drop = torch.zeros(n, dtype=torch.bool)
    if config.method in ("shape", "both"):
        if transcript.labels == "hard":
            raise ConfigError(f"filter method {config.method!r}: the shape test is meaningless for hard-label "
                              "(one-hot) answers, which always have zeros; use method='disagreement'")
        drop |= shape_suspects(transcript.answers, config.zero_tol)
    if config.method in ("disagreement", "both") and n > config.warmup:
        warm = transcript.prefix(config.warmup)
        pirate = train_pirate(warm.x, warm.answers, config.pirate)
        with torch.no_grad():
            predicted = torch.cat([warm.answers.argmax(dim=1),
                                   predict_logits(pirate, transcript.x[config.warmup :]).argmax(dim=1)])
        drop |= _disagreements(transcript.answers, predicted, config.warmup)
    kept = ~drop
    return FilterResult(Transcript(transcript.x[kept], transcript.answers[kept]), kept, int(drop.sum()))


class FilteringAttack:
    """Another extraction attack whose transcript is filtered before the pirate sees it.

    It spends the inner attack's budget as the inner attack does; the pirate then trains on fewer answers.

    Args:
        inner: the attack that collects (e.g. ``build_attack("knockoff", budget=5000)``).
        config: the filter.

    Attributes:
        last_result: the filter's result on the latest :meth:`collect` (None before the first).
    """

    def __init__(self, inner: ExtractionAttack, config: FilterConfig | None = None) -> None:
        if not callable(getattr(inner, "collect", None)) or not isinstance(getattr(inner, "name", None), str):
            raise ConfigError(f"FilteringAttack wraps an extraction attack (name, collect), got {type(inner).__name__}")
        self.inner = inner
        self.config = config or FilterConfig()
        self.last_result: FilterResult | None = None

    @property
    def name(self) -> str:
        """``<inner>+filter-<method>``."""
        return f"{self.inner.name}+filter-{self.config.method}"

    def collect(self, oracle: Oracle, pool: QueryPool) -> Transcript:
        """Collect with the inner attack, then keep what the filter keeps."""
        self.last_result = filter_transcript(self.inner.collect(oracle, pool), self.config)
        return self.last_result.transcript
