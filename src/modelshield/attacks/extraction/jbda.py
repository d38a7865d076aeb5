"""JBDA (Papernot et al. 2017) and JBDA-TR (Juuti et al. 2019): Jacobian-based dataset augmentation.

Start from a small seed set drawn from the pool, query it, then repeat: train a substitute on everything
collected; for (a random subset of) the collected points, step ``x' = clip(x + lambda * sign(grad_x
log F_t(x)))`` and query the new points. JBDA takes ``t`` = the oracle's label of ``x`` (the Jacobian column
of that class) with the step's sign flipped every ``sign_period`` rounds; JBDA-TR takes a random target
``t`` different from that label, so the new points move towards other classes' decision regions. Each round
roughly doubles the set until the budget is spent (the last round augments just enough points).

Example:
    >>> import torch
    >>> from modelshield.models import build_model
    >>> from modelshield.oracle import ModelOracle
    >>> from modelshield.attacks.extraction.pools import QueryPool
    >>> oracle = ModelOracle(build_model("lenet5", in_channels=1, image_size=8, num_classes=10))
    >>> attack = JBDA(JBDAConfig(budget=50, seed_size=20, targeted=True, epochs_per_round=1))
    >>> t = attack.collect(oracle, QueryPool(torch.rand(100, 1, 8, 8), "noise"))
    >>> len(t), oracle.queries, bool(t.x.min() >= 0 and t.x.max() <= 1)
    (50, 50, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from modelshield.attacks.extraction.pools import QueryPool
from modelshield.attacks.extraction.transcript import Transcript
from modelshield.data.types import Normalization
from modelshield.errors import ConfigError
from modelshield.models.registry import MODEL_REGISTRY, build_model, canonical_model_name
from modelshield.oracle import Oracle
from modelshield.training import TrainConfig, train_model

__all__ = ["JBDA", "JBDAConfig"]


@dataclass(frozen=True)
class JBDAConfig:
    """Settings of JBDA / JBDA-TR.

    Attributes:
        budget: total queries (seed set included).
        seed_size: initial queries drawn from the pool.
        step: lambda, the augmentation step in pixel units ([0, 1] images).
        targeted: False = JBDA, True = JBDA-TR (random target class).
        sign_period: JBDA only: flip the step's sign every this many rounds (None = never).
        epochs_per_round: substitute training epochs per round (the substitute keeps its weights across rounds).
        substitute_architecture: substitute model.
        batch_size: queries per oracle call.
        seed: seed of every random draw.
    """

    budget: int
    seed_size: int = 100
    step: float = 0.1
    targeted: bool = False
    sign_period: int | None = 3
    epochs_per_round: int = 5
    substitute_architecture: str = "lenet5"
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.seed_size <= self.budget:
            raise ConfigError(f"JBDA needs 1 <= seed_size <= budget, got seed_size {self.seed_size}, budget {self.budget}")
        if not self.step > 0 or self.epochs_per_round < 1 or self.batch_size < 1:
            raise ConfigError("JBDA step must be > 0, epochs_per_round and batch_size >= 1")
        if self.sign_period is not None and self.sign_period < 1:
            raise ConfigError(f"JBDA sign_period must be >= 1 or None, got {self.sign_period}")
        if canonical_model_name(self.substitute_architecture) not in MODEL_REGISTRY:
            raise ConfigError(f"JBDA substitute_architecture must be one of {', '.join(MODEL_REGISTRY)}")


class JBDA:
    """Collects a transcript by Jacobian-based augmentation; train the pirate on it with :func:`train_pirate`."""

    def __init__(self, config: JBDAConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        """``jbda`` or ``jbda-tr``."""
        return "jbda-tr" if self.config.targeted else "jbda"

    def _query(self, oracle: Oracle, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([oracle(x[i : i + self.config.batch_size]) for i in range(0, len(x), self.config.batch_size)])

    def collect(self, oracle: Oracle, pool: QueryPool) -> Transcript:
        """Spend the budget on ``oracle``, seeded from ``pool``."""
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        seed_x = pool.x[torch.randperm(len(pool), generator=gen)[: cfg.seed_size]]
        xs, ys = [seed_x], [self._query(oracle, seed_x)]
        torch.manual_seed(cfg.seed)
        _, channels, size, _ = seed_x.shape
        substitute = build_model(cfg.substitute_architecture, in_channels=channels, image_size=size,
                                 num_classes=oracle.num_classes, normalization=Normalization.from_images(seed_x))
        collected, rounds = cfg.seed_size, 0
        while collected < cfg.budget:
            x_all, y_all = torch.cat(xs), torch.cat(ys)
            targets = y_all / y_all.sum(dim=1, keepdim=True).clamp_min(1e-12)
            train_model(substitute, (x_all, targets), progress=False,
                        config=TrainConfig(epochs=cfg.epochs_per_round, batch_size=64, lr=1e-3, schedule="none",
                                           seed=cfg.seed + rounds))
            n_new = min(len(x_all), cfg.budget - collected)
            pick = torch.randperm(len(x_all), generator=gen)[:n_new]
            labels = targets[pick].argmax(dim=1)
            if cfg.targeted:
                shift = torch.randint(1, oracle.num_classes, (n_new,), generator=gen)
                cls, sign = (labels + shift) % oracle.num_classes, 1.0
            else:
                cls = labels
                sign = -1.0 if cfg.sign_period is not None and (rounds // cfg.sign_period) % 2 == 1 else 1.0
            new_x = self._augment(substitute, x_all[pick], cls, sign * cfg.step)
            xs.append(new_x)
            ys.append(self._query(oracle, new_x))
            collected += n_new
            rounds += 1
        return Transcript(torch.cat(xs), torch.cat(ys))

    @staticmethod
    def _augment(model: torch.nn.Module, x: torch.Tensor, cls: torch.Tensor, step: float) -> torch.Tensor:
        model.eval()
        out = []
        for i in range(0, len(x), 512):
            xb = x[i : i + 512].clone().requires_grad_(True)
            log_p = F.log_softmax(model(xb), dim=1)
            grad, = torch.autograd.grad(log_p.gather(1, cls[i : i + 512, None]).sum(), xb)
            out.append((xb.detach() + step * grad.sign()).clamp(0.0, 1.0))
        return torch.cat(out)
