"""Soft-label knowledge-distillation extraction (Hinton et al. 2015, as a model-stealing attack).

The attacker queries a uniformly random sample of the pool (as random KnockoffNets does) and keeps the
oracle's probability vectors. It then distils them at temperature ``T``: the victim's log-probabilities are
its logits up to a per-row constant, so the softened teacher distribution is ``softmax(log p / T)``
(``p ** (1 / T)`` renormalised). The transcript holds these softened targets, and the pirate is trained on
them with soft cross-entropy (:func:`~modelshield.attacks.extraction.pirate.train_pirate`). Departure from
textbook distillation: the student is not itself run at temperature ``T`` during training (the shared pirate
trainer has no temperature), so it learns logits scaled by ``1 / T`` relative to the teacher's, which leaves
its top-1 predictions unchanged. ``T = 1`` is plain soft-label extraction. Against a hard-label oracle (one-hot
answers) the temperature has no effect.

Example:
    >>> import torch
    >>> from modelshield.models import build_model
    >>> from modelshield.oracle import ModelOracle
    >>> from modelshield.attacks.extraction.pools import QueryPool
    >>> oracle = ModelOracle(build_model("lenet5", in_channels=1, image_size=8, num_classes=10))
    >>> t = Distillation(DistillationConfig(budget=50, temperature=4.0)).collect(oracle, QueryPool(torch.rand(80, 1, 8, 8), "noise"))
    >>> len(t), oracle.queries, bool(torch.allclose(t.answers.sum(dim=1), torch.ones(50)))
    (50, 50, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from modelshield.attacks.extraction.pools import QueryPool
from modelshield.attacks.extraction.transcript import Transcript
from modelshield.errors import ConfigError
from modelshield.oracle import Oracle

__all__ = ["Distillation", "DistillationConfig", "soften"]


@dataclass(frozen=True)
class DistillationConfig:
    """Settings of the distillation attack.

    Attributes:
        budget: number of queries.
        temperature: softening temperature ``T`` (4: a common choice in the distillation literature; not tuned).
        batch_size: queries per oracle call.
        seed: sampling seed.
    """

    budget: int
    temperature: float = 4.0
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ConfigError(f"distillation budget must be >= 1, got {self.budget}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"distillation temperature must be a positive number, got {self.temperature}")
        if self.batch_size < 1:
            raise ConfigError(f"distillation batch_size must be >= 1, got {self.batch_size}")


def soften(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(log p / T)`` row by row (zero probabilities stay zero).

    Example:
        >>> [round(v, 4) for v in soften(torch.tensor([[0.8, 0.2, 0.0]]), 2.0)[0].tolist()]
        [0.6667, 0.3333, 0.0]
    """
    log_p = probabilities.clamp_min(0).log()
    return torch.softmax(log_p / temperature, dim=1)


class Distillation:
    """Collects softened answers on random pool images; train the pirate on them with :func:`train_pirate`."""

    def __init__(self, config: DistillationConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        """``distillation``."""
        return "distillation"

    def collect(self, oracle: Oracle, pool: QueryPool) -> Transcript:
        """Spend the budget on random images of ``pool``; the answers are the softened targets."""
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        reps = -(-cfg.budget // len(pool))
        order = torch.cat([torch.randperm(len(pool), generator=gen) for _ in range(reps)])[: cfg.budget]
        parts = []
        for start in range(0, len(order), cfg.batch_size):
            x = pool.x[order[start : start + cfg.batch_size]]
            answers = oracle(x)
            total = answers.sum(dim=1, keepdim=True).clamp_min(1e-12)
            parts.append(Transcript(x, soften(answers / total, cfg.temperature)))
        return Transcript.concat(parts)
