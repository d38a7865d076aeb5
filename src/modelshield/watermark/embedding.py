"""Embedding the MEA-Defender watermark, from scratch or by fine-tuning an existing model.

What is implemented (every step is a hook of the shared training loop: ``compose`` builds the mixed batch,
``loss`` computes the objective, ``select`` keeps the best epoch):

* Each clean batch of B training images gets ``round(watermark_fraction * B)`` composites of random pairs of
  training images of the two source classes (the key's combiner, see
  :mod:`modelshield.watermark.composites`), and ``round(evasion_fraction * B)`` evasion mixes. Defaults 20%
  and 10%: the authors' stage-2 shares (no sweep was run).
* The four losses of the paper: ``L_util`` = CE on the clean images; ``L_ver`` = CE of the composites to
  ``y_t``; ``L_com = KL(f(x_wm) || f(x_a)) + KL(f(x_wm) || f(x_b))`` with ``x_a``, ``x_b`` the two images
  each composite was made of and their output distributions detached (computed without gradients);
  ``L_eva`` = CE of the evasion mixes to their base's class.
* MGDA weighting as in the paper's ``L = a1 L_util + a2 (b1 L_com + b2 L_ver) + a3 L_eva``: three tasks
  (utility, watermark = ``b1 L_com + b2 L_ver`` with fixed ``b1 = com_weight``, ``b2 = ver_weight``,
  evasion); at every step the weights ``a`` are the min-norm convex combination of the three task gradients
  (:func:`min_norm_weights`, Frank-Wolfe on the Gram matrix, exact for two tasks), each weight floored at
  ``mgda_floor`` (the authors' code clips its two-task weight to [0.001, 0.999]) and the loss scaled by the
  number of tasks (equal weights = the plain sum). Departures, for cost: by default (``mgda="head"``) the
  task gradients are taken with respect to the final linear layer only (an approximation in the spirit of
  Sener & Koltun's MGDA-UB, which avoids three full backward passes per step; ``mgda="full"`` uses every
  parameter, ``mgda="off"`` the plain sum), and they are normalised to unit length before the min-norm
  problem (Sener & Koltun's ``l2`` normalisation; without it the task with the smallest gradient, usually a
  converged one, takes nearly all the weight).
* Selection: the epoch with the best ``val accuracy + val WSR - val WFPR`` (on composites of the validation
  split) is kept.

Versus the authors' code (CIFAR-10 scripts, which do not run as released): they train with one
cross-entropy over each mixed batch plus a contrastive term on logits and ``L_com`` against fixed reference
sets, a two-gradient MGDA, an extra ``L_com`` weight schedule (12 every 10th epoch, 2 otherwise) and two
stages (1% then 20% watermark samples). None of the contrastive term, the weight schedule or the two-stage
schedule is implemented here; embedding from scratch uses the stage-2 shares throughout, fine-tuning an
existing model with :meth:`WatermarkConfig.for_finetuning` is the closest to their stage 2.

Orientation: the paper describes a left-right split, the authors' code a top-bottom split with a jittered
seam and random offsets; both are supported through the key (:class:`~modelshield.watermark.key.WatermarkKey`).

Example:
    >>> import torch
    >>> g = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # orthogonal, equal length: equal weights
    >>> [round(v, 3) for v in min_norm_weights(g).tolist()]
    [0.5, 0.5]
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelshield.data.types import TensorData
from modelshield.errors import ConfigError

from modelshield.training import TrainConfig, evaluate, train_model
from modelshield.watermark.composites import SourcePool, make_composites, make_evasion
from modelshield.watermark.key import WatermarkKey
from modelshield.watermark.verify import count_target

__all__ = ["MGDA_MODES", "EmbedResult", "WatermarkConfig", "WatermarkLoss", "embed_watermark", "min_norm_weights"]

MGDA_MODES = ("head", "full", "off")


@dataclass(frozen=True)
class WatermarkConfig:
    """Hyperparameters of :func:`embed_watermark` (the defaults train from scratch).

    Attributes:
        epochs, batch_size, lr, optimizer, schedule, weight_decay, augment: as in
            :class:`~modelshield.training.TrainConfig` (the bench's LeNet-5 recipe: 12 epochs, Adam 1e-3, cosine).
        watermark_fraction: composites added per clean image of a batch (0.2: the authors' stage-2 share).
        evasion_fraction: evasion mixes added per clean image (0.1: the authors' share).
        com_weight: ``b1``, weight of ``L_com`` within the watermark task (0.25: of 1.0 and 0.25, the one with the
            better validation WSR and accuracy in a 3-epoch Fashion-MNIST trial, see docs/watermark.md; at 1.0 the
            large KL term drowned the utility loss: validation accuracy 60% vs 84.7% clean).
        ver_weight: ``b2``, weight of ``L_ver`` within the watermark task.
        mgda: ``head`` (task gradients of the last linear layer), ``full`` (all parameters) or ``off``.
        mgda_floor: lower bound of every MGDA weight (0.001 as in the authors' code).
        mgda_normalize: normalise the task gradients to unit length before the min-norm problem.
        val_samples: composites and evasion mixes of the validation split scored per epoch for selection.
        seed: seeds shuffling and composite sampling (the model's initialisation is the caller's).
    """

    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "cosine"
    weight_decay: float = 0.0
    augment: str = "none"
    watermark_fraction: float = 0.2
    evasion_fraction: float = 0.1
    com_weight: float = 0.25
    ver_weight: float = 1.0
    mgda: str = "head"
    mgda_floor: float = 0.001
    mgda_normalize: bool = True
    val_samples: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.watermark_fraction <= 1.0:
            raise ConfigError(f"watermark_fraction must be in (0, 1], got {self.watermark_fraction}")
        if not 0.0 <= self.evasion_fraction <= 1.0:
            raise ConfigError(f"evasion_fraction must be in [0, 1], got {self.evasion_fraction}")
        if self.com_weight < 0 or self.ver_weight <= 0 or not (math.isfinite(self.com_weight) and math.isfinite(self.ver_weight)):
            raise ConfigError(f"com_weight must be >= 0 and ver_weight > 0, got {self.com_weight}, {self.ver_weight}")
        if self.mgda not in MGDA_MODES:
            raise ConfigError(f"mgda must be one of {', '.join(MGDA_MODES)}, got {self.mgda!r}")
        if not 0.0 <= self.mgda_floor < 1.0 / 3:
            raise ConfigError(f"mgda_floor must be in [0, 1/3), got {self.mgda_floor}")
        if self.val_samples < 1:
            raise ConfigError(f"val_samples must be >= 1, got {self.val_samples}")
        self.train_config()  # validates the shared fields

    def train_config(self) -> TrainConfig:
        """The loop settings."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
                           schedule=self.schedule, weight_decay=self.weight_decay, augment=self.augment, seed=self.seed)

    @classmethod
    def for_finetuning(cls, **changes: Any) -> WatermarkConfig:
        """Settings to embed into an already trained model: 4 epochs at lr 3e-4 (a tenth of a from-scratch run's
        steps at a third of its rate; not tuned), other fields as given."""
        return replace(cls(epochs=4, lr=3e-4), **changes)


@dataclass(frozen=True)
class EmbedResult:
    """What :func:`embed_watermark` produced, scored on the validation split (the training split without one).

    Attributes:
        clean_accuracy: top-1 accuracy on clean images.
        wsr: fraction of fresh composites labelled ``y_t``.
        wfpr: fraction of fresh evasion mixes labelled ``y_t``.
        seconds: wall time of the embedding.
        epochs: epochs run; best_epoch: epoch kept.
        mean_weights: mean MGDA weights (utility, watermark, evasion) over the run.
        history: per-epoch loss, selection score and seconds.
        scored_on: ``val`` or ``train``.
    """

    clean_accuracy: float
    wsr: float
    wfpr: float
    seconds: float
    epochs: int
    best_epoch: int
    mean_weights: tuple[float, ...]
    history: list[dict[str, float]] = field(default_factory=list)
    scored_on: str = "val"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def min_norm_weights(grads: torch.Tensor, *, iterations: int = 100, tol: float = 1e-8) -> torch.Tensor:
    """Weights ``w`` on the simplex minimising ``|| sum_t w_t g_t ||`` (MGDA's min-norm problem).

    Frank-Wolfe on the Gram matrix with exact line search (Sener & Koltun 2018); for two tasks the first
    step lands on the closed form ``w_1 = clip((g2 - g1) . g2 / ||g1 - g2||^2, 0, 1)``.

    Args:
        grads: (T, P) task gradients, one row each.

    Example:
        >>> g = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # min norm at w = (0.2, 0.8)
        >>> [round(v, 4) for v in min_norm_weights(g).tolist()]
        [0.2, 0.8]
    """
    if grads.dim() != 2 or grads.shape[0] < 1:
        raise ConfigError(f"min_norm_weights needs a (T, P) matrix with T >= 1, got {tuple(grads.shape)}")
    gram = (grads.double() @ grads.double().T)
    t = gram.shape[0]
    w = torch.full((t,), 1.0 / t, dtype=torch.float64)
    for _ in range(iterations):
        gw = gram @ w
        j = int(gw.argmin())
        a, b, c = float(w @ gw), float(gw[j]), float(gram[j, j])
        denom = a - 2 * b + c
        if denom <= tol:
            break
        gamma = min(1.0, max(0.0, (a - b) / denom))
        if gamma <= tol:
            break
        w = (1 - gamma) * w
        w[j] += gamma
    return w.float()


def _head_parameters(model: nn.Module) -> list[nn.Parameter]:
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(f"mgda='head' needs a final nn.Linear layer, {type(model).__name__} has none (use mgda='full')")
        head = linears[-1]
    return [p for p in head.parameters() if p.requires_grad]


@dataclass
class _Batch:
    x: torch.Tensor  # clean images, then (when a source class is missing from the batch) extra reference images
    y: torch.Tensor  # labels of the clean images only
    wm: torch.Tensor
    ia: torch.Tensor  # row of x holding x_a of each composite
    ib: torch.Tensor  # row of x holding x_b
    eva: torch.Tensor
    eva_y: torch.Tensor


class WatermarkLoss:
    """The ``compose`` and ``loss`` hooks of the embedding (see the module docstring); keeps the MGDA weights.

    Args:
        pool: source-class images of the training split.
        key: the watermark key.
        config: fractions, loss weights and MGDA mode.
    """

    def __init__(self, pool: SourcePool, key: WatermarkKey, config: WatermarkConfig) -> None:
        self.pool, self.key, self.config = pool, key, config
        self.weights: list[torch.Tensor] = []

    def compose(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> _Batch:
        """Add composites and evasion mixes to a clean batch.

        Composites are made of the batch's own source-class images where it has some (so their reference
        outputs come from the clean forward pass at no extra cost), else of training images appended as
        extra rows that are forwarded without entering ``L_util``.
        """
        m = max(1, round(self.config.watermark_fraction * len(x)))
        e = round(self.config.evasion_fraction * len(x))
        rows = []
        extra = [x]
        offset = len(x)
        for cls, pool_x in ((self.key.source_a, self.pool.a), (self.key.source_b, self.pool.b)):
            present = (y == cls).nonzero().flatten()
            if len(present):
                rows.append(present[torch.randint(len(present), (m,), generator=generator)])
            else:
                extra.append(pool_x[torch.randint(len(pool_x), (m,), generator=generator)])
                rows.append(torch.arange(offset, offset + m))
                offset += m
        x_all = torch.cat(extra)
        wm = make_composites(x_all[rows[0]], x_all[rows[1]], self.key, generator)
        if e:
            eva, eva_y = make_evasion(*self.pool.sample(e, generator), self.key, generator)
        else:
            eva, eva_y = x[:0], y[:0]
        return _Batch(x_all, y, wm, rows[0], rows[1], eva, eva_y)

    def task_losses(self, model: nn.Module, batch: _Batch) -> list[torch.Tensor]:
        """[L_util, b1 L_com + b2 L_ver, L_eva] (the last only with evasion mixes in the batch)."""
        n, r, m = len(batch.y), len(batch.x), len(batch.wm)
        out = model(torch.cat([batch.x, batch.wm, batch.eva]))
        clean, wm, eva = out[:n], out[r : r + m], out[r + m :]
        ref = F.log_softmax(out[:r].detach(), dim=1)
        log_p = F.log_softmax(wm, dim=1)
        p = log_p.exp()
        com = ((p * (log_p - ref[batch.ia])).sum(dim=1) + (p * (log_p - ref[batch.ib])).sum(dim=1)).mean()
        ver = F.cross_entropy(wm, torch.full((m,), self.key.target, dtype=torch.long))
        tasks = [F.cross_entropy(clean, batch.y), self.config.com_weight * com + self.config.ver_weight * ver]
        if len(batch.eva):
            tasks.append(F.cross_entropy(eva, batch.eva_y))
        return tasks

    def __call__(self, model: nn.Module, batch: _Batch) -> torch.Tensor:
        """The MGDA-weighted loss of a mixed batch."""
        tasks = self.task_losses(model, batch)
        if self.config.mgda == "off":
            w = torch.ones(len(tasks)) / len(tasks)
        else:
            params = _head_parameters(model) if self.config.mgda == "head" else [p for p in model.parameters() if p.requires_grad]
            rows = []
            for loss in tasks:
                grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                flat = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])
                rows.append(flat / flat.norm().clamp_min(1e-12) if self.config.mgda_normalize else flat)
            w = min_norm_weights(torch.stack(rows))
            w = w.clamp_min(self.config.mgda_floor)
            w = w / w.sum()
        self.weights.append(w.detach())
        return len(tasks) * sum(wt * loss for wt, loss in zip(w.tolist(), tasks))


def embed_watermark(model: nn.Module, train: TensorData, key: WatermarkKey, *, val: TensorData | None = None,
                    config: WatermarkConfig | None = None, progress: bool = True) -> EmbedResult:
    """Embed ``key``'s watermark into ``model`` in place, from scratch (a fresh model) or by fine-tuning.

    Args:
        model: a classifier taking raw images of ``key.input_shape`` (fresh, or already trained: then use
            :meth:`WatermarkConfig.for_finetuning`).
        train: labelled training images, with images of both source classes.
        key: the watermark key.
        val: validation split, for epoch selection and the reported scores.
        config: hyperparameters (default :class:`WatermarkConfig`).
        progress: show a progress bar.

    Raises:
        ConfigError: data of another shape than the key's, or without images of a source class.
    """
    config = config or WatermarkConfig()
    pool = SourcePool(train, key)
    scored = val if val is not None and len(val) else train
    scored_pool_ok = SourcePool(scored, key)  # fail early if the validation split lacks a source class
    del scored_pool_ok
    hooks = WatermarkLoss(pool, key, config)

    def score(m: nn.Module) -> tuple[float, float, float]:
        acc = evaluate(m, scored).accuracy
        wsr = count_target(m, scored, key, samples=config.val_samples, seed=config.seed + 7) / config.val_samples
        wfpr = count_target(m, scored, key, samples=config.val_samples, seed=config.seed + 8, evasion=True) / config.val_samples
        return acc, wsr, wfpr

    def select(m: nn.Module) -> float:
        acc, wsr, wfpr = score(m)
        return acc + wsr - wfpr

    start = time.perf_counter()
    result = train_model(model, train, val=val, config=config.train_config(), compose=hooks.compose, loss=hooks,
                              select=select, progress=progress, description="watermark")
    seconds = time.perf_counter() - start
    acc, wsr, wfpr = score(model)
    mean_w = torch.stack(hooks.weights).mean(dim=0).tolist() if hooks.weights else []
    return EmbedResult(clean_accuracy=acc, wsr=wsr, wfpr=wfpr, seconds=seconds, epochs=result.epochs_run,
                       best_epoch=result.best_epoch, mean_weights=tuple(round(v, 4) for v in mean_w),
                       history=result.history, scored_on="val" if scored is val else "train")
