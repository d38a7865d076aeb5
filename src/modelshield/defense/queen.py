"""QUEEN online (spec "Online, per client"): per-client coverage of sensitive regions, REVERSE past a
threshold, label-preserving PERTURB otherwise.

For each query: ``p = softmax(f(x))``, ``c = argmax p``, ``z = g(phi(x))``, ``d = |z - m_c|``. A query is
*in region* when ``d < R_c`` and *novel* when every point recorded for class ``c`` is farther than ``r``.
An in-region novel query is reversed when the client's coverage ``CQS[c]`` already exceeds ``t``;
otherwise its point is recorded and ``CQS[c] += SQS^2 (r / R_c)^2`` with ``SQS = erfc(alpha (d - R_c) / R_c) / 2``.
Every other query gets PERTURB. ``threshold_queries`` replaces ``t`` by a count of recorded points per class.

Vectorisation and order semantics. Everything per query (features, g, distances, SQS, PERTURB for the whole
batch, REVERSE for the reversed rows) is computed batch-wide. The only order-dependent part, the state
update, runs class by class (a loop over at most K classes): the batch's in-region queries of class ``c`` are
checked against ``Rec[c]`` in one distance matrix; the survivors' pairwise distances tell whether any of them
is within ``r`` of an *earlier* survivor. When none is (the usual case) the sequential result has a closed form
(a cumulative sum of the coverage increments decides which are recorded and which reversed); otherwise a
sequential scan runs over those survivors only, reusing the precomputed distance matrix. The result equals
the per-sample algorithm applied in batch order (a test compares them).

Example:
    >>> import numpy as np
    >>> state = QueenClientState.empty(2)
    >>> z = np.array([[0.0, 0.0], [0.001, 0.0], [0.5, 0.0]], dtype=np.float32)
    >>> rev = decide_batch(state, np.array([0, 0, 0]), z, np.array([True, True, True]),
    ...                    np.array([0.15, 0.15, 0.15]), radius=0.005, threshold=0.2, threshold_queries=None)
    >>> rev.tolist(), len(state.points[0]), round(float(state.coverage[0]), 2)
    ([False, False, False], 2, 0.3)
    >>> decide_batch(state, np.array([0]), np.array([[0.9, 0.0]], np.float32), np.array([True]), np.array([0.15]),
    ...              radius=0.005, threshold=0.2, threshold_queries=None).tolist()
    [True]
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from modelshield.defense.base import Defense
from modelshield.defense.baselines import GaussianNoiseDefense, ReverseSigmoidDefense, RoundingDefense, TopOneDefense
from modelshield.defense.client_state import QueenClientState
from modelshield.defense.features import FeatureSplit
from modelshield.defense.policy import ClientPolicy
from modelshield.defense.queen_artifacts import QueenArtifacts
from modelshield.defense.shadow import SoftmaxRegression
from modelshield.errors import ConfigError
from modelshield.models.checkpoint import state_dict_fingerprint
from modelshield.state import InMemoryStateStore, StateStore

__all__ = ["OUT_OF_REGION", "QueenConfig", "QueenDefense", "decide_batch", "keep_label", "perturb_probabilities",
           "reverse_probabilities"]

# decide_batch runs over at most this many queries at a time (its within-class distance matrix is quadratic);
# the chunks are applied in order to one decoded state, so the result is the same as one call, and committed once
_DECIDE_CHUNK = 1024
# the stateless out-of-region answers, each built from QueenConfig.seed (only the noise uses it)
_STATELESS: dict[str, Callable[[int], Defense]] = {
    "top1": lambda seed: TopOneDefense(), "rounding": lambda seed: RoundingDefense(),
    "reverse-sigmoid": lambda seed: ReverseSigmoidDefense(), "gaussian": lambda seed: GaussianNoiseDefense(seed=seed)}
OUT_OF_REGION = ("perturb", *_STATELESS)


@dataclass(frozen=True)
class QueenConfig:
    """Online settings of QUEEN.

    The defaults were tuned on MNIST (LeNet-5 victim; KnockoffNets transcripts from the attacker split, pirates
    scored on the validation split): the threshold as a count of 50 novel in-region queries per class, r = 1e-4
    and beta = 1.5. The released scripts' values (:meth:`released`: r = 0.005, t = 0.2, beta = 1) never reverse
    on this unit-circle embedding, whose class regions are arcs: the area coverage saturates near 0.06.

    Attributes:
        novelty_radius: r, in the unit-circle mapping space.
        coverage_threshold: t, reverse once a class's coverage exceeds it (``math.inf`` never reverses).
        threshold_queries: if set, replaces ``t``: reverse once this many novel in-region points were recorded
            for the class (the embedding-independent form of the threshold); None uses ``t``.
        alpha: sharpness of SQS.
        beta: region radius R_c = beta * rho_c.
        shadows_per_answer: k shadow models averaged per reversed answer (drawn at random per query).
        perturb_step: PERTURB step length in feature space (0.05).
        perturb_steps: maximum PERTURB steps (20; 0 disables PERTURB).
        seed: seed of the defense's random draws (shadow subsets).
        reverse_keeps_label: label-preserving REVERSE: a reversed answer is moved so that its top-1 is the
            model's label (the reversed vector's top entry and the label's entry swap places). Free for clients
            that use the label; a hard-label pirate then learns from true labels.
        out_of_region: the answer to a query outside its class's sensitive region: ``perturb`` (the paper's
            PERTURB) or a stateless defense applied to those rows only: ``top1``, ``rounding``,
            ``reverse-sigmoid``, ``gaussian`` (their default settings). ``top1`` keeps the top-1 label;
            ``rounding`` keeps it up to ties; ``reverse-sigmoid`` and ``gaussian`` can change it.
        window_seconds: coverage decays over a time window: a client's coverage and recorded points (and the
            pool's) start over when a new window of this many seconds begins (tumbling windows on the
            defense's clock); None keeps them forever (the paper).
        young_client_queries: the sybil-resistant mode: a client with fewer than this many queries answered
            (its whole history, across windows) and no tier of its own (``ClientPolicy.allowance``: a customer
            the deployer knows) is *young*; its queries also count in one pooled state shared by every young
            client, and are reversed when either its own state or the pool is past its threshold. Opening many
            accounts then buys the attacker nothing over one young account; established and tiered clients are
            judged on their own history only. None disables the pool (per-client state only).
        pool_threshold_queries: the pool's threshold, novel in-region queries per class over all young clients
            (in the current window).
    """

    novelty_radius: float = 1e-4
    coverage_threshold: float = 0.2
    threshold_queries: int | None = 50
    alpha: float = 1.0
    beta: float = 1.5
    shadows_per_answer: int = 5
    perturb_step: float = 0.05
    perturb_steps: int = 20
    seed: int = 0
    reverse_keeps_label: bool = False
    out_of_region: str = "perturb"
    window_seconds: float | None = None
    young_client_queries: int | None = None
    pool_threshold_queries: int = 50

    @classmethod
    def released(cls, **changes: Any) -> QueenConfig:
        """The released scripts' settings: r = 0.005, coverage threshold t = 0.2, alpha = beta = 1, k = 5."""
        return cls(**{"novelty_radius": 0.005, "coverage_threshold": 0.2, "threshold_queries": None, "beta": 1.0,
                      **changes})

    def __post_init__(self) -> None:
        if not (self.novelty_radius >= 0 and math.isfinite(self.novelty_radius)):
            raise ConfigError(f"QueenConfig.novelty_radius must be a finite number >= 0, got {self.novelty_radius}")
        if not self.coverage_threshold >= 0:
            raise ConfigError(f"QueenConfig.coverage_threshold must be >= 0 (inf = never reverse), got {self.coverage_threshold}")
        if self.threshold_queries is not None and self.threshold_queries < 0:
            raise ConfigError(f"QueenConfig.threshold_queries must be >= 0 or None, got {self.threshold_queries}")
        for name in ("alpha", "beta"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"QueenConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.shadows_per_answer < 1:
            raise ConfigError(f"QueenConfig.shadows_per_answer must be >= 1, got {self.shadows_per_answer}")
        if self.perturb_steps < 0 or not (self.perturb_step >= 0 and math.isfinite(self.perturb_step)):
            raise ConfigError(f"QueenConfig.perturb_steps must be >= 0 and perturb_step >= 0, got {self.perturb_steps}, {self.perturb_step}")
        if self.out_of_region not in OUT_OF_REGION:
            raise ConfigError(f"QueenConfig.out_of_region must be one of {', '.join(OUT_OF_REGION)}, got {self.out_of_region!r}")
        if self.window_seconds is not None and not (self.window_seconds > 0 and math.isfinite(self.window_seconds)):
            raise ConfigError(f"QueenConfig.window_seconds must be > 0 seconds or None, got {self.window_seconds}")
        if self.young_client_queries is not None and self.young_client_queries < 1:
            raise ConfigError(f"QueenConfig.young_client_queries must be >= 1 or None, got {self.young_client_queries}")
        if self.pool_threshold_queries < 0:
            raise ConfigError(f"QueenConfig.pool_threshold_queries must be >= 0, got {self.pool_threshold_queries}")


def _over(coverage: float, count: int, threshold: float, threshold_queries: int | None) -> bool:
    return count >= threshold_queries if threshold_queries is not None else coverage > threshold


def decide_batch(state: QueenClientState, classes: np.ndarray, z: np.ndarray, in_region: np.ndarray,
                 increments: np.ndarray, *, radius: float, threshold: float, threshold_queries: int | None) -> np.ndarray:
    """Apply one batch to a client's state in batch order; return which queries to reverse.

    Args:
        state: the client's state (updated in place: recorded points, coverage, reversed counts, queries).
        classes: (n,) predicted class per query.
        z: (n, 2) float32 mapped points.
        in_region: (n,) bool, ``d < R_c``.
        increments: (n,) coverage increment ``SQS^2 (r / R_c)^2`` per query.
        radius: novelty radius r.
        threshold: coverage threshold t.
        threshold_queries: count threshold replacing t when not None.
    """
    n = len(classes)
    reverse = np.zeros(n, dtype=bool)
    state.queries += n
    if n == 0:
        return reverse
    r2 = radius * radius
    for cls in np.unique(classes[in_region]):
        idx = np.flatnonzero(in_region & (classes == cls))
        rec = state.points[cls]
        zc = z[idx].astype(np.float32)
        if len(rec):
            d2 = ((zc[:, None, :] - rec[None, :, :]) ** 2).sum(-1).min(axis=1)
            cand = np.flatnonzero(d2 > r2)
        else:
            cand = np.arange(len(idx))
        if len(cand) == 0:
            continue
        cov, count = float(state.coverage[cls]), len(rec)
        if _over(cov, count, threshold, threshold_queries):
            reverse[idx[cand]] = True
            state.reversed[cls] += len(cand)
            continue
        zs, inc = zc[cand], increments[idx[cand]]
        pair = ((zs[:, None, :] - zs[None, :, :]) ** 2).sum(-1) <= r2
        conflict = np.tril(pair, k=-1)  # conflict[i, j]: j earlier than i and within r
        recorded = np.zeros(len(cand), dtype=bool)
        rev_c = np.zeros(len(cand), dtype=bool)
        if not conflict.any():
            before = cov + np.concatenate([[0.0], np.cumsum(inc)[:-1]])
            counts_before = count + np.arange(len(cand))
            over = counts_before >= threshold_queries if threshold_queries is not None else before > threshold
            recorded, rev_c = ~over, over
        else:
            for i in range(len(cand)):
                if conflict[i, : i][recorded[:i]].any():
                    continue
                if _over(cov, count, threshold, threshold_queries):
                    rev_c[i] = True
                    continue
                recorded[i] = True
                cov += float(inc[i])
                count += 1
        state.coverage[cls] = float(state.coverage[cls]) + float(inc[recorded].sum())
        state.points[cls] = np.concatenate([rec, zs[recorded]]).astype(np.float32)
        reverse[idx[cand[rev_c]]] = True
        state.reversed[cls] += int(rev_c.sum())
    return reverse


def perturb_probabilities(features: torch.Tensor, labels: torch.Tensor, class_centres: torch.Tensor, head: nn.Linear,
                          step: float, steps: int) -> torch.Tensor:
    """PERTURB: move ``phi`` towards the farthest class centre by up to ``steps`` steps of ``step``, stopping
    before ``argmax h`` leaves ``labels``; return ``softmax(h(moved phi))`` (top-1 label preserved).

    Example:
        >>> import torch
        >>> head = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = head.weight.copy_(torch.eye(2)); _ = head.bias.zero_()
        >>> phi = torch.tensor([[1.0, 0.0]])
        >>> out = perturb_probabilities(phi, torch.tensor([0]), torch.tensor([[2.0, 0.0], [0.0, 2.0]]), head, 0.05, 20)
        >>> int(out.argmax()), bool(out[0, 0] < torch.softmax(head(phi), 1)[0, 0])
        (0, True)
    """
    if steps == 0 or step == 0:
        return torch.softmax(head(features), dim=1)
    dist = torch.cdist(features, class_centres)
    target = class_centres[dist.argmax(dim=1)]
    direction = torch.nn.functional.normalize(target - features, dim=1)
    scales = torch.arange(steps + 1, dtype=features.dtype) * step
    # h is affine: h(phi + s * dir) = h(phi) + s * (W dir), so the (steps + 1) candidates cost two small matmuls
    base, slope = head(features), direction @ head.weight.T
    logits = base[None] + scales[:, None, None] * slope[None]  # (steps + 1, n, K)
    keeps = (logits.argmax(dim=2) == labels[None]).long().cumprod(dim=0)
    last = (keeps.sum(dim=0) - 1).clamp_min(0)
    chosen = logits[last, torch.arange(features.shape[0])]
    return torch.softmax(chosen, dim=1)


def reverse_probabilities(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """REVERSE's closed form: the simplex point with the highest cosine to ``u = 2q - p``:
    ``max(u, 0) / sum(max(u, 0))``, or a one-hot on ``argmax u`` when no entry is positive.

    Example:
        >>> import torch
        >>> reverse_probabilities(torch.tensor([[0.9, 0.1]]), torch.tensor([[0.6, 0.4]])).round(decimals=3).tolist()
        [[0.30000001192092896, 0.699999988079071]]
    """
    u = 2 * q - p
    pos = u.clamp_min(0.0)
    total = pos.sum(dim=1, keepdim=True)
    onehot = torch.zeros_like(u).scatter_(1, u.argmax(dim=1, keepdim=True), 1.0)
    return torch.where(total > 0, pos / total.clamp_min(1e-12), onehot)


def keep_label(y: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Label-preserving REVERSE: swap each row's top entry with its ``labels`` entry, so the top-1 is the label.

    Example:
        >>> import torch
        >>> keep_label(torch.tensor([[0.3, 0.7], [0.6, 0.4]]), torch.tensor([0, 0])).tolist()
        [[0.699999988079071, 0.30000001192092896], [0.6000000238418579, 0.4000000059604645]]
    """
    rows = torch.arange(y.shape[0])
    top = y.argmax(dim=1)
    out = y.clone()
    out[rows, labels], out[rows, top] = y[rows, top], y[rows, labels]
    tied = out.argmax(dim=1) != labels  # the label's entry ties another maximum: lift it just above
    if tied.any():
        out[rows[tied], labels[tied]] += 1e-6
        out[tied] = out[tied] / out[tied].sum(dim=1, keepdim=True)
    return out


class QueenDefense(Defense):
    """QUEEN behind the common :class:`~modelshield.defense.base.Defense` interface.

    Args:
        artifacts: the fitted artefacts.
        head: the protected model's final linear layer ``h`` (PERTURB re-evaluates it).
        config: online settings.
        store: per-client state store (default: in memory). Keys are ``"<namespace>:<client_id>"``, and
            ``"<namespace>/pool"`` for the young clients' pool; each answered batch is one
            :meth:`~modelshield.state.StateStore.update` of the client's state (all of the batch or nothing),
            and, for a young client in the sybil-resistant mode, a second one of the pool.
        namespace: key prefix (default: ``queen:`` + the model fingerprint), so several protected models can
            share one store.
        clock: seconds, for ``window_seconds`` (default :func:`time.time`; a benchmark passes a simulated one).

    The client's :class:`~modelshield.defense.ClientPolicy` (passed with each batch) may mark it trusted (no
    state, never reversed) or give it its own threshold (``allowance``, a tier).

    Use :meth:`for_model` to build it from the protected model (checks the artefacts belong to it).
    """

    name = "queen"

    def __init__(self, artifacts: QueenArtifacts, head: nn.Linear, config: QueenConfig | None = None, *,
                 store: StateStore | None = None, namespace: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.artifacts = artifacts
        self.head = head
        self.config = config or QueenConfig()
        if head.in_features != artifacts.feature_dim or head.out_features != artifacts.num_classes:
            raise ConfigError(f"QUEEN artefacts are for {artifacts.feature_dim} features and {artifacts.num_classes} classes, "
                              f"the head has {head.in_features} and {head.out_features}")
        if self.config.shadows_per_answer > len(artifacts.shadows):
            raise ConfigError(f"QueenConfig.shadows_per_answer={self.config.shadows_per_answer} but the artefacts hold "
                              f"{len(artifacts.shadows)} shadow models")
        self.store: StateStore = store if store is not None else InMemoryStateStore()
        self.namespace = namespace or f"queen:{artifacts.model_fingerprint[:16]}"
        self.clock = clock
        self._generator = torch.Generator().manual_seed(self.config.seed)
        self._lock = threading.Lock()
        self._stacked = self._stack_shadows()
        outside = _STATELESS.get(self.config.out_of_region)
        self._outside: Defense | None = None if outside is None else outside(self.config.seed)

    @classmethod
    def for_model(cls, model: nn.Module, artifacts: QueenArtifacts, config: QueenConfig | None = None, *,
                  store: StateStore | None = None, namespace: str | None = None,
                  clock: Callable[[], float] = time.time) -> QueenDefense:
        """Build the defense for ``model``; raises ConfigError if the artefacts were fitted for another model."""
        fingerprint = state_dict_fingerprint(model.state_dict())
        if fingerprint != artifacts.model_fingerprint:
            raise ConfigError(f"QUEEN artefacts were fitted for model {artifacts.model_fingerprint}, "
                              f"this model is {fingerprint}; run `modelshield defense fit` for it")
        return cls(artifacts, FeatureSplit(model).head, config, store=store, namespace=namespace, clock=clock)

    def key(self, client_id: str) -> str:
        """The store key of a client."""
        return f"{self.namespace}:{client_id}"

    @property
    def pool_key(self) -> str:
        """The store key of the young clients' pooled state (no client key can equal it)."""
        return f"{self.namespace}/pool"

    def client_state(self, client_id: str) -> QueenClientState:
        """A copy of a client's current state (empty for a new client)."""
        return self._state_at(self.key(client_id))

    def pool_state(self) -> QueenClientState:
        """A copy of the young clients' pooled state (sybil-resistant mode)."""
        return self._state_at(self.pool_key)

    def _state_at(self, key: str) -> QueenClientState:
        blob = self.store.get(key)
        k = self.artifacts.num_classes
        return QueenClientState.empty(k) if blob is None else QueenClientState.from_bytes(blob, k, source=key)

    def reset(self, client_id: str | None = None) -> None:
        if client_id is not None:
            self.store.delete(self.key(client_id))
            return
        for key in self.store.keys(f"{self.namespace}:"):
            self.store.delete(key)
        self.store.delete(self.pool_key)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.config), "shadows": len(self.artifacts.shadows),
                "shadow_architecture": self.artifacts.shadow_architecture}

    def answer(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor, client_id: str,
               policy: ClientPolicy | None = None) -> torch.Tensor:
        return self.answer_with_decisions(x, logits, features, client_id, policy)[0]

    @torch.no_grad()
    def answer_with_decisions(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor,
                              client_id: str, policy: ClientPolicy | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`answer`, also returning the (N,) bool mask of the answers that were reversed."""
        cfg, art = self.config, self.artifacts
        policy = policy if policy is not None else ClientPolicy()
        features = features.float()
        p = torch.softmax(logits.float(), dim=1)
        classes = p.argmax(dim=1)
        z = art.mapping(features)
        radius = cfg.beta * art.region_spread[classes]
        d = (z - art.region_centres[classes]).norm(dim=1)
        in_region = d < radius
        sqs = 0.5 * torch.erfc(cfg.alpha * (d - radius) / radius)
        increments = sqs.square() * (cfg.novelty_radius / radius).square()
        batch = (classes.numpy(), z.numpy().astype(np.float32), in_region.numpy(), increments.double().numpy())
        window = int(self.clock() // cfg.window_seconds) if cfg.window_seconds is not None else 0
        if policy.trusted:  # exempt: nothing recorded, nothing reversed
            reverse = torch.zeros(len(classes), dtype=torch.bool)
        else:
            own = policy.allowance if policy.allowance is not None else cfg.threshold_queries
            # one commit for the whole batch: the client's state moves for all of it or (on an error) not at all
            rev, before = self.store.update(self.key(client_id), self._updater(batch, window, own))
            if policy.allowance is None and cfg.young_client_queries is not None and before < cfg.young_client_queries:
                pooled, _ = self.store.update(self.pool_key, self._updater(batch, window, cfg.pool_threshold_queries))
                rev = rev | pooled
            reverse = torch.from_numpy(rev)
        out = perturb_probabilities(features, classes, art.class_centres, self.head, cfg.perturb_step, cfg.perturb_steps)
        if self._outside is not None:
            rows = torch.nonzero(~in_region & ~reverse).flatten()
            if len(rows):
                out[rows] = self._outside.answer(x[rows], logits[rows], features[rows], client_id, policy)
        if reverse.any():
            rows = torch.nonzero(reverse).flatten()
            reversed_answers = reverse_probabilities(p[rows], self._shadow_mean(x[rows]))
            out[rows] = keep_label(reversed_answers, classes[rows]) if cfg.reverse_keeps_label else reversed_answers
        return out, reverse

    def _updater(self, batch: tuple[np.ndarray, ...], window: int,
                 threshold_queries: int | None) -> Callable[[bytes | None], tuple[bytes, tuple[np.ndarray, int]]]:
        """The pure state update of one batch (the store may call it again on a newer blob)."""
        cfg, k = self.config, self.artifacts.num_classes
        classes, z, in_region, increments = batch

        def update(blob: bytes | None) -> tuple[bytes, tuple[np.ndarray, int]]:
            state = QueenClientState.empty(k) if blob is None else QueenClientState.from_bytes(blob, k)
            if state.window != window:  # a new time window: coverage and points start over, the history count stays
                fresh = QueenClientState.empty(k)
                fresh.queries, fresh.window = state.queries, window
                state = fresh
            before = state.queries
            rev = np.concatenate([np.zeros(0, dtype=bool), *(
                decide_batch(state, classes[s : s + _DECIDE_CHUNK], z[s : s + _DECIDE_CHUNK],
                             in_region[s : s + _DECIDE_CHUNK], increments[s : s + _DECIDE_CHUNK],
                             radius=cfg.novelty_radius, threshold=cfg.coverage_threshold,
                             threshold_queries=threshold_queries)
                for s in range(0, len(classes), _DECIDE_CHUNK))])
            return state.to_bytes(), (rev, before)

        return update

    def _shadow_mean(self, x: torch.Tensor) -> torch.Tensor:
        shadows = self.artifacts.shadows
        with self._lock:
            pick = torch.rand(x.shape[0], len(shadows), generator=self._generator).argsort(dim=1)[:, : self.config.shadows_per_answer]
        chosen = torch.zeros(x.shape[0], len(shadows)).scatter_(1, pick, 1.0)  # (n, N_s) 0/1
        if self._stacked is not None:  # softmax-regression shadows: all of them in one matmul
            normalize, weight, bias = self._stacked  # weight (N_s * K, D): one matrix product for all shadows
            logits = torch.addmm(bias, normalize(x).flatten(1), weight.T).view(x.shape[0], len(shadows), -1)
            return (chosen[:, :, None] * torch.softmax(logits, dim=2)).sum(dim=1) / self.config.shadows_per_answer
        q = torch.zeros(x.shape[0], self.artifacts.num_classes)
        for j in torch.nonzero(chosen.any(dim=0)).flatten().tolist():  # a loop over the few shadow models
            q += chosen[:, j : j + 1] * torch.softmax(shadows[j](x), dim=1)
        return q / self.config.shadows_per_answer

    def _stack_shadows(self) -> tuple[nn.Module, torch.Tensor, torch.Tensor] | None:
        shadows = self.artifacts.shadows
        if not all(isinstance(s, SoftmaxRegression) for s in shadows):
            return None
        first = shadows[0].normalize  # type: ignore[union-attr]
        if not all(torch.equal(s.normalize.mean, first.mean) and torch.equal(s.normalize.std, first.std) for s in shadows):  # type: ignore[union-attr]
            return None
        weight = torch.cat([s.linear.weight.detach() for s in shadows]).contiguous()  # type: ignore[union-attr]
        bias = torch.cat([s.linear.bias.detach() for s in shadows])  # type: ignore[union-attr]
        return first, weight, bias
