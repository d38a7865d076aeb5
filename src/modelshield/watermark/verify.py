"""Ownership verification by black-box queries: WSR, WFPR and a calibrated one-sided binomial test.

A suspect is anything that answers a batch of raw images: a local ``nn.Module``, any callable returning
(N, K) scores or (N,) labels (numpy or torch), or an :class:`~modelshield.oracle.Oracle` (so an HTTP oracle
works unchanged). Only the top-1 label of each answer is used: hard labels are enough.

* **WSR** (watermark success rate): the fraction of ``samples`` fresh composites, built with the key's
  combiner from *held-out* images of the two source classes, that the suspect labels ``key.target``.
* **WFPR** (watermark false-positive rate): the fraction of evasion-style mixes of the same classes (the
  combiners of :data:`~modelshield.watermark.composites.EVASION_COMBINERS`) labelled ``key.target``.
* **Decision**: under the null hypothesis "the suspect is an independent model", each composite falls into
  the target with a rate at most ``r0``; the p-value is ``P[Binomial(n, r0) >= hits]``. The verdict is
  positive ("watermarked") only when ``p < alpha`` **and** the WSR exceeds the suspect's own WFPR by at least
  ``wfpr_margin`` (:func:`decide`): a model that labels *every* mix of the two source classes ``y_t`` (a
  collapsed or heavily pruned model predicting the target for everything) has a high WSR but an equally high
  WFPR, and is not evidence of the watermark, which is specific to the key's combiner. ``r0`` comes from a :class:`NullCalibration`: the largest
  one-sided Clopper-Pearson upper confidence bound (level ``confidence``) of the WSRs of independent
  calibration models (trained without the watermark, or extracted from an unwatermarked victim), measured
  on a validation split. Taking the worst calibration model and its sampling uncertainty is deliberately
  conservative. Without calibration, ``r0`` is the paper's fixed threshold, 30%.

Caveat: the binomial model treats composites as independent draws for a fixed suspect; the spread *between*
independent models is only covered as far as the calibration models span it.

Example:
    >>> import torch
    >>> from modelshield.data import TensorData
    >>> from modelshield.watermark.key import WatermarkKey
    >>> key = WatermarkKey(0, 1, 2, 3, (1, 8, 8), jitter=1, offset=0)
    >>> data = TensorData(torch.rand(40, 1, 8, 8), torch.arange(40) % 3)
    >>> always_target = lambda x: torch.full((len(x),), 2)
    >>> report = verify_watermark(always_target, data, key, config=VerifyConfig(samples=200, evasion_samples=50))
    >>> report.wsr, report.p_value < 1e-12
    (1.0, True)
    >>> report.wfpr, report.verdict  # it labels the evasion mixes y_t too: collapsed, not watermarked
    (1.0, False)
    >>> verify_watermark(lambda x: torch.zeros(len(x)), data, key, config=VerifyConfig(samples=200)).verdict
    False
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Union

import numpy as np
import torch
from scipy import stats
from torch import nn

from modelshield.data.types import TensorData
from modelshield.errors import ConfigError
from modelshield.oracle import Oracle
from modelshield.training import predict_logits
from modelshield.watermark.composites import EVASION_COMBINERS, SourcePool
from modelshield.watermark.key import WatermarkKey

__all__ = ["PAPER_THRESHOLD", "NullCalibration", "Suspect", "VerifyConfig", "VerifyReport", "binomial_p_value",
           "calibrate_null", "clopper_pearson_upper", "count_target", "decide", "predict_labels", "verify_watermark"]

PAPER_THRESHOLD = 0.30
Suspect = Union[nn.Module, Oracle, Callable[[torch.Tensor], Any]]


@dataclass(frozen=True)
class VerifyConfig:
    """How a suspect is verified.

    Attributes:
        samples: fresh watermark composites queried (>= 1,000 for a report; fewer allowed for tests).
        evasion_samples: evasion-style mixes queried for the WFPR (0 = skip).
        alpha: significance level of the one-sided binomial test (0.001: a strict conventional level; an
            owner's claim should not rest on a 1-in-100 chance).
        default_null_rate: ``r0`` when no calibration is given: the paper's threshold, 30%.
        wfpr_margin: the WSR must exceed the suspect's own WFPR by at least this much for a positive verdict
            (0.30: the paper's own decision threshold of 30% WSR, applied to the gap over the WFPR, so a model
            that sends every source-class mix to ``y_t`` is not called watermarked; the issue's goals, WSR >= 80%
            on pirates and WFPR <= 6%, leave a gap of 74 points on a real pirate, and an independent or collapsed
            model's gap is near zero). 0 disables the check.
        seed: seed of the composites (independent of the key's embedding seed).
        batch_size: queries per call to the suspect.
    """

    samples: int = 1000
    evasion_samples: int = 1000
    alpha: float = 1e-3
    default_null_rate: float = PAPER_THRESHOLD
    wfpr_margin: float = 0.30
    seed: int = 0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.samples < 1 or self.evasion_samples < 0 or self.batch_size < 1:
            raise ConfigError(f"verify: samples and batch_size must be >= 1, evasion_samples >= 0, got {self.samples}, "
                              f"{self.batch_size}, {self.evasion_samples}")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"verify: alpha must be in (0, 1), got {self.alpha}")
        if not 0.0 < self.default_null_rate < 1.0:
            raise ConfigError(f"verify: default_null_rate must be in (0, 1), got {self.default_null_rate}")
        if not 0.0 <= self.wfpr_margin < 1.0:
            raise ConfigError(f"verify: wfpr_margin must be in [0, 1), got {self.wfpr_margin}")
        if self.wfpr_margin > 0 and self.evasion_samples < 1:
            raise ConfigError("verify: wfpr_margin > 0 needs evasion_samples >= 1 (the WFPR is part of the decision)")


@dataclass(frozen=True)
class NullCalibration:
    """The null rate ``r0`` and the calibration models it came from.

    Attributes:
        rate: ``r0``, the max over models of the Clopper-Pearson upper bound of their WSR.
        confidence: level of those one-sided bounds.
        names: calibration models.
        hits: composites each labelled ``y_t``.
        samples: composites each was asked.
    """

    rate: float
    confidence: float
    names: tuple[str, ...]
    hits: tuple[int, ...]
    samples: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (WSRs included)."""
        return {**asdict(self), "wsr": [h / n for h, n in zip(self.hits, self.samples)]}


def clopper_pearson_upper(hits: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper confidence bound of a binomial rate.

    Example:
        >>> round(clopper_pearson_upper(0, 1000), 5)  # 1 - 0.05 ** (1 / 1000)
        0.00299
    """
    if not 0 <= hits <= n or n < 1:
        raise ConfigError(f"need 0 <= hits <= n and n >= 1, got hits {hits}, n {n}")
    if hits == n:
        return 1.0
    return float(stats.beta.ppf(confidence, hits + 1, n - hits))


def binomial_p_value(hits: int, n: int, rate: float) -> float:
    """``P[Binomial(n, rate) >= hits]``: one-sided p-value of observing ``hits`` or more under the null rate.

    Example:
        >>> binomial_p_value(0, 10, 0.3)
        1.0
        >>> round(binomial_p_value(10, 10, 0.5), 6)  # 0.5 ** 10
        0.000977
    """
    if not 0 <= hits <= n:
        raise ConfigError(f"need 0 <= hits <= n, got hits {hits}, n {n}")
    if hits == 0:
        return 1.0
    return float(stats.binom.sf(hits - 1, n, rate))


def calibrate_null(results: Sequence[tuple[str, int, int]], *, confidence: float = 0.95) -> NullCalibration:
    """The null rate from independent calibration models: ``results`` = (name, hits, samples) each.

    Example:
        >>> cal = calibrate_null([("a", 0, 1000), ("b", 12, 1000)])
        >>> 0.012 < cal.rate < 0.02
        True

    Raises:
        ConfigError: no result, or a confidence outside (0, 1).
    """
    if not results:
        raise ConfigError("calibrate_null needs at least one calibration model")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    rate = max(clopper_pearson_upper(h, n, confidence) for _, h, n in results)
    return NullCalibration(rate, confidence, tuple(r[0] for r in results), tuple(int(r[1]) for r in results),
                           tuple(int(r[2]) for r in results))


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of verifying one suspect.

    Attributes:
        wsr: watermark success rate (hits / samples).
        hits: composites labelled ``target``.
        samples: composites asked.
        wfpr: evasion-style mixes labelled ``target`` / evasion samples (None when not measured).
        evasion_hits: those mixes labelled ``target``.
        evasion_samples: evasion mixes asked.
        null_rate: ``r0`` of the test.
        null_source: ``calibrated (...)`` or ``paper threshold``.
        alpha: significance level.
        p_value: ``P[Binomial(samples, r0) >= hits]``.
        wfpr_margin: the margin of WSR over WFPR the verdict required.
        verdict: True = the suspect carries the watermark (``p_value < alpha`` and ``wsr - wfpr >= wfpr_margin``).
        source_classes, target, orientation: the key's public description (no secret).
    """

    wsr: float
    hits: int
    samples: int
    wfpr: float | None
    evasion_hits: int
    evasion_samples: int
    null_rate: float
    null_source: str
    alpha: float
    p_value: float
    verdict: bool
    source_classes: tuple[int, int]
    target: int
    orientation: str
    wfpr_margin: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    def to_markdown(self) -> str:
        """A short Markdown report."""
        wfpr = "not measured" if self.wfpr is None else f"{100 * self.wfpr:.2f}% ({self.evasion_hits}/{self.evasion_samples})"
        rows = [("verdict", "**watermarked**" if self.verdict else "not shown"),
                ("WSR", f"{100 * self.wsr:.2f}% ({self.hits}/{self.samples} composites labelled {self.target})"),
                ("null rate r0", f"{100 * self.null_rate:.2f}% ({self.null_source})"),
                ("p-value", f"{self.p_value:.3g} (alpha {self.alpha:g}, one-sided binomial)"),
                ("WFPR", wfpr + (f" (the WSR must exceed it by {100 * self.wfpr_margin:g} points)" if self.wfpr_margin else "")),
                ("key", f"classes {self.source_classes[0]} + {self.source_classes[1]} -> {self.target}, {self.orientation}")]
        return "\n".join(["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]])


def predict_labels(suspect: Suspect, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Top-1 labels of a suspect for a batch of raw images, queried in chunks.

    Raises:
        ConfigError: answers that are neither (N,) labels nor (N, K) scores for the N images asked.
    """
    if isinstance(suspect, nn.Module):
        return predict_logits(suspect, x, batch_size).argmax(dim=1)
    out = []
    for i in range(0, len(x), batch_size):
        chunk = x[i : i + batch_size]
        answer = suspect(chunk)
        answer = torch.as_tensor(np.asarray(answer)) if not isinstance(answer, torch.Tensor) else answer.detach().cpu()
        if answer.dim() == 2 and answer.shape[0] == len(chunk):
            out.append(answer.argmax(dim=1))
        elif answer.dim() == 1 and answer.shape[0] == len(chunk):
            out.append(answer.long())
        else:
            raise ConfigError(f"the suspect answered {tuple(answer.shape)} for {len(chunk)} images; expected "
                              f"({len(chunk)},) labels or ({len(chunk)}, K) scores")
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def count_target(suspect: Suspect, images: TensorData, key: WatermarkKey, *, samples: int, seed: int = 0,
                 evasion: bool = False, batch_size: int = 256) -> int:
    """How many of ``samples`` fresh composites (or evasion mixes) of ``images`` the suspect labels ``key.target``."""
    pool = SourcePool(images, key)
    gen = torch.Generator().manual_seed(seed)
    x = pool.evasion(samples, gen, EVASION_COMBINERS)[0] if evasion else pool.composites(samples, gen)
    return int((predict_labels(suspect, x, batch_size) == key.target).sum())


def decide(hits: int, samples: int, evasion_hits: int, evasion_samples: int, null_rate: float, *, alpha: float,
           wfpr_margin: float) -> tuple[float, bool]:
    """The p-value and the verdict: ``p < alpha`` against ``null_rate`` and ``WSR - WFPR >= wfpr_margin``.

    Example:
        >>> p, verdict = decide(966, 1000, 981, 1000, 0.03, alpha=1e-3, wfpr_margin=0.3)  # collapsed: all -> y_t
        >>> p < 1e-100, verdict
        (True, False)
        >>> decide(850, 1000, 40, 1000, 0.03, alpha=1e-3, wfpr_margin=0.3)[1]
        True
    """
    p = binomial_p_value(hits, samples, null_rate)
    wfpr = evasion_hits / evasion_samples if evasion_samples else 0.0
    gap_ok = wfpr_margin <= 0 or (evasion_samples > 0 and hits / samples - wfpr >= wfpr_margin - 1e-12)
    return p, bool(p < alpha and not math.isnan(p) and gap_ok)


def verify_watermark(suspect: Suspect, images: TensorData, key: WatermarkKey, *, config: VerifyConfig | None = None,
                     null: NullCalibration | None = None) -> VerifyReport:
    """Query ``suspect`` with fresh composites of held-out ``images`` and decide whether it carries the watermark.

    Args:
        suspect: a model, an oracle or any callable (see the module docstring).
        images: labelled images the suspect was not trained on (the owner's held-out split), with images
            of both source classes.
        key: the owner's watermark key.
        config: sample counts, significance level, seed.
        null: calibration of the null rate (default: the paper's 30% threshold as ``r0``).

    Raises:
        ConfigError: images without a source class, of the wrong shape, or answers of the wrong shape.
    """
    config = config or VerifyConfig()
    hits = count_target(suspect, images, key, samples=config.samples, seed=config.seed, batch_size=config.batch_size)
    ev_hits = 0
    if config.evasion_samples:
        ev_hits = count_target(suspect, images, key, samples=config.evasion_samples, seed=config.seed + 1, evasion=True,
                               batch_size=config.batch_size)
    rate = null.rate if null is not None else config.default_null_rate
    source = f"calibrated on {len(null.names)} independent models, max {100 * null.confidence:g}% upper bound" if null else "paper threshold"
    p, verdict = decide(hits, config.samples, ev_hits, config.evasion_samples, rate, alpha=config.alpha,
                        wfpr_margin=config.wfpr_margin)
    return VerifyReport(
        wsr=hits / config.samples, hits=hits, samples=config.samples,
        wfpr=ev_hits / config.evasion_samples if config.evasion_samples else None, evasion_hits=ev_hits,
        evasion_samples=config.evasion_samples, null_rate=rate, null_source=source, alpha=config.alpha, p_value=p,
        verdict=verdict, source_classes=(key.source_a, key.source_b), target=key.target, orientation=key.orientation,
        wfpr_margin=config.wfpr_margin)
