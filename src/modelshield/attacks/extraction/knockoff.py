"""KnockoffNets (Orekondy et al. 2019): query natural images from a pool and keep the answers.

* ``random``: a uniformly random sample of the pool, without replacement (re-shuffled if the budget exceeds
  the pool).
* ``adaptive``: a gradient bandit chooses, batch after batch, which part of the pool to draw from. The
  paper's actions are the surrogate dataset's label hierarchy; ours are k-means clusters of the (downscaled)
  pool images, so no pool labels are needed. Reward per batch = certainty (top-1 minus top-2 answer) +
  diversity (mass above the running mean answer) + the online pirate's loss on the answers, each scaled
  by its running maximum; an online pirate takes a few Adam steps on every batch.

Example:
    >>> import torch
    >>> from modelshield.models import build_model
    >>> from modelshield.oracle import ModelOracle
    >>> from modelshield.attacks.extraction.pools import QueryPool
    >>> oracle = ModelOracle(build_model("lenet5", in_channels=1, image_size=8, num_classes=10))
    >>> pool = QueryPool(torch.rand(100, 1, 8, 8), "noise")
    >>> t = KnockoffNets(KnockoffConfig(budget=60, strategy="adaptive", batch_size=20)).collect(oracle, pool)
    >>> len(t), oracle.queries
    (60, 60)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from modelshield.attacks.extraction.pools import QueryPool
from modelshield.attacks.extraction.transcript import Transcript
from modelshield.data.types import Normalization
from modelshield.errors import ConfigError
from modelshield.models.registry import MODEL_REGISTRY, build_model, canonical_model_name
from modelshield.oracle import Oracle

__all__ = ["KnockoffConfig", "KnockoffNets", "kmeans"]

STRATEGIES = ("random", "adaptive")


@dataclass(frozen=True)
class KnockoffConfig:
    """Settings of KnockoffNets.

    Attributes:
        budget: number of queries.
        strategy: ``random`` or ``adaptive``.
        batch_size: queries per oracle call (and per bandit round).
        clusters: bandit actions (k-means clusters of the pool), adaptive only.
        bandit_lr: gradient-bandit step size, adaptive only.
        online_steps: online pirate Adam steps per round, adaptive only.
        online_architecture: online pirate architecture, adaptive only.
        seed: sampling seed.
    """

    budget: int
    strategy: str = "random"
    batch_size: int = 256
    clusters: int = 10
    bandit_lr: float = 0.5
    online_steps: int = 2
    online_architecture: str = "lenet5"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ConfigError(f"KnockoffNets budget must be >= 1, got {self.budget}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"KnockoffNets strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.batch_size < 1 or self.clusters < 1 or self.online_steps < 0 or not self.bandit_lr > 0:
            raise ConfigError("KnockoffNets batch_size and clusters must be >= 1, online_steps >= 0, bandit_lr > 0")
        if canonical_model_name(self.online_architecture) not in MODEL_REGISTRY:
            raise ConfigError(f"KnockoffNets online_architecture must be one of {', '.join(MODEL_REGISTRY)}")


def kmeans(x: torch.Tensor, k: int, *, iterations: int = 25, seed: int = 0) -> torch.Tensor:
    """Cluster labels of the rows of ``x`` (k-means++ seeding, Lloyd iterations), deterministic for a seed.

    Example:
        >>> x = torch.cat([torch.zeros(5, 2), torch.full((5, 2), 10.0)])
        >>> labels = kmeans(x, 2)
        >>> len(set(labels[:5].tolist())), len(set(labels[5:].tolist())), bool(labels[0] != labels[5])
        (1, 1, True)
    """
    gen = torch.Generator().manual_seed(seed)
    x = x.float()
    centres = x[torch.randint(len(x), (1,), generator=gen)]
    for _ in range(1, k):
        d2 = torch.cdist(x, centres).min(dim=1).values.square()
        weights = d2 if d2.sum() > 0 else torch.ones_like(d2)
        centres = torch.cat([centres, x[torch.multinomial(weights, 1, generator=gen)]])
    labels = torch.cdist(x, centres).argmin(dim=1)
    for _ in range(iterations):
        onehot = torch.nn.functional.one_hot(labels, k).float()
        counts = onehot.sum(dim=0)
        moved = (onehot.T @ x) / counts.clamp_min(1)[:, None]
        centres = torch.where(counts[:, None] > 0, moved, centres)
        new = torch.cdist(x, centres).argmin(dim=1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


class KnockoffNets:
    """Collects a transcript from an oracle; train the pirate on it with :func:`train_pirate`."""

    def __init__(self, config: KnockoffConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        """``knockoff`` or ``knockoff-adaptive``."""
        return "knockoff" if self.config.strategy == "random" else "knockoff-adaptive"

    def collect(self, oracle: Oracle, pool: QueryPool) -> Transcript:
        """Spend the budget on ``oracle`` with images of ``pool``."""
        if self.config.strategy == "random":
            return self._random(oracle, pool)
        return self._adaptive(oracle, pool)

    def _random(self, oracle: Oracle, pool: QueryPool) -> Transcript:
        gen = torch.Generator().manual_seed(self.config.seed)
        reps = -(-self.config.budget // len(pool))
        order = torch.cat([torch.randperm(len(pool), generator=gen) for _ in range(reps)])[: self.config.budget]
        parts = []
        for start in range(0, len(order), self.config.batch_size):
            x = pool.x[order[start : start + self.config.batch_size]]
            parts.append(Transcript(x, oracle(x)))
        return Transcript.concat(parts)

    def _adaptive(self, oracle: Oracle, pool: QueryPool) -> Transcript:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        small = F.adaptive_avg_pool2d(pool.x, min(7, pool.x.shape[-1])).flatten(1)
        k = min(cfg.clusters, len(pool))
        labels = kmeans(small, k, seed=cfg.seed).numpy()
        members = [list(rng.permutation(np.flatnonzero(labels == a))) for a in range(k)]
        torch.manual_seed(cfg.seed)
        _, channels, size, _ = pool.x.shape
        online = build_model(cfg.online_architecture, in_channels=channels, image_size=size, num_classes=oracle.num_classes,
                             normalization=Normalization.from_images(pool.x[:2048]))
        opt = torch.optim.Adam(online.parameters(), lr=1e-3)
        prefs, mean_reward, rounds = np.zeros(k), 0.0, 0
        scale = np.full(3, 1e-8)
        mean_answer = torch.full((oracle.num_classes,), 1.0 / oracle.num_classes)
        parts: list[Transcript] = []
        spent = 0
        while spent < cfg.budget:
            alive = np.array([len(m) > 0 for m in members])
            if not alive.any():  # pool exhausted: refill every cluster
                members = [list(rng.permutation(np.flatnonzero(labels == a))) for a in range(k)]
                alive = np.ones(k, dtype=bool)
            logits = np.where(alive, prefs, -np.inf)
            policy = np.exp(logits - logits.max())
            policy /= policy.sum()
            action = int(rng.choice(k, p=policy))
            n = min(cfg.batch_size, cfg.budget - spent, len(members[action]))
            index = [members[action].pop() for _ in range(n)]
            x = pool.x[index]
            y = oracle(x)
            spent += n
            parts.append(Transcript(x, y))
            online.eval()
            with torch.no_grad():
                log_q = F.log_softmax(online(x), dim=1)
            top2 = y.topk(min(2, y.shape[1]), dim=1).values
            rewards = np.array([
                float((top2[:, 0] - top2[:, -1]).mean()),
                float((y - mean_answer).clamp_min(0).sum(dim=1).mean()),
                float(-(y * log_q).sum(dim=1).mean()),
            ])
            scale = np.maximum(scale, np.abs(rewards))
            reward = float((rewards / scale).sum())
            rounds += 1
            mean_reward += (reward - mean_reward) / rounds
            mean_answer = 0.9 * mean_answer + 0.1 * y.mean(dim=0)
            grad = -policy * cfg.bandit_lr * (reward - mean_reward)
            grad[action] += cfg.bandit_lr * (reward - mean_reward)
            prefs = prefs + np.where(alive, grad, 0.0)
            online.train()
            for _ in range(cfg.online_steps):
                loss = -(y * F.log_softmax(online(x), dim=1)).sum(dim=1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return Transcript.concat(parts)
