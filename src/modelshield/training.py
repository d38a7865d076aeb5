"""One seeded train / evaluate loop used by every feature, aware of DistributedDataParallel.

Run normally, it trains in this process. Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), it
joins the process group (gloo on CPU), wraps the model in DistributedDataParallel and gives each rank its
share of every batch: the per-rank batch is ``batch_size / world_size`` and gradients are averaged, so the
optimisation matches the single-process run on the same data (up to floating-point summation order and
per-rank BatchNorm statistics). Every rank evaluates the whole validation split; only rank 0 reports.

Example:
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.models import build_model
    >>> seed_everything(0)
    >>> data = make_synthetic(256, num_classes=4, seed=0)
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> config = TrainConfig(epochs=8, batch_size=32, lr=3e-3, seed=0)
    >>> result = train_model(model, data, config=config, progress=False)
    >>> evaluate(model, data).accuracy > 0.9
    True
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from modelshield.data.types import TensorData
from modelshield.errors import ConfigError

__all__ = ["EvalResult", "TrainConfig", "TrainResult", "evaluate", "make_progress", "predict_logits",
           "seed_everything", "train_model"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "cosine", "step", "multistep")
AUGMENTS = ("none", "shift", "shift-flip")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_progress(enabled: bool = True, console: Console | None = None) -> Progress:
    """A rich progress bar on stderr (so ``--json`` output on stdout stays clean); disabled -> invisible."""
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
        console=console or Console(stderr=True), disable=not enabled, transient=False,
    )


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`train_model`.

    Attributes:
        epochs: passes over the training data.
        batch_size: global batch size (split across ranks under DDP).
        lr: learning rate.
        optimizer: ``adam``, ``adamw`` or ``sgd`` (with ``momentum``, Nesterov).
        momentum: SGD momentum (Nesterov when > 0).
        weight_decay: L2 penalty / decoupled decay.
        schedule: ``cosine`` (to zero over the run), ``step`` (x ``gamma`` every ``step_size`` epochs),
            ``multistep`` (x ``gamma`` after each of the ``milestones`` fractions of the run's steps) or ``none``.
        step_size: epochs between decays of the ``step`` schedule.
        gamma: decay factor of the ``step`` and ``multistep`` schedules.
        milestones: fractions of the run, in (0, 1), after which ``multistep`` decays the learning rate.
        patience: stop after this many epochs without a better selection score (needs ``val`` or a ``select``
            hook of :func:`train_model`); None = never.
        augment: ``none``, ``shift`` (random translation up to 2 px) or ``shift-flip`` (plus horizontal flips).
        label_smoothing: cross-entropy label smoothing.
        seed: seeds initial shuffling and augmentation (the model's initialisation is the caller's).
        eval_batch_size: batch size for evaluation.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    step_size: int = 10
    gamma: float = 0.1
    milestones: tuple[float, ...] = (0.5, 0.75)
    patience: int | None = None
    augment: str = "none"
    label_smoothing: float = 0.0
    seed: int = 0
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be >= 1 or None, got {self.patience}")
        if any(not 0 < f < 1 for f in self.milestones):
            raise ConfigError(f"milestones are fractions of the run in (0, 1), got {self.milestones}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of a model on a dataset; rows with any non-finite logit count as wrong.

    Attributes:
        accuracy: correct / total, in [0, 1].
        correct: number of correct predictions.
        total: number of samples.
        nonfinite: number of rows whose output held NaN or Inf (all counted wrong).
    """

    accuracy: float
    correct: int
    total: int
    nonfinite: int = 0


@dataclass(frozen=True)
class TrainResult:
    """What a training run did.

    Attributes:
        epochs_run: epochs completed (fewer than asked when early stopping fired).
        best_epoch: epoch (1-based) whose weights were kept (the best selection score, else the last).
        val_accuracy: validation accuracy of the kept weights (None without a validation split).
        history: per-epoch dicts with ``epoch``, ``loss``, ``seconds`` and the selection score (``val_accuracy``
            for the default selection, ``score`` for a ``select`` hook).
        wall_seconds: total wall time.
        world_size: number of DDP processes (1 when not distributed).
        scores: the selection score after each epoch (empty without selection).
        best_score: the kept epoch's score (None without selection).
    """

    epochs_run: int
    best_epoch: int
    val_accuracy: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    wall_seconds: float = 0.0
    world_size: int = 1
    scores: list[float] = field(default_factory=list)
    best_score: float | None = None


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` (put in eval mode) for a batch of raw images, computed in chunks."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]) if len(x) else torch.empty(0)


def score_logits(logits: torch.Tensor, labels: torch.Tensor) -> EvalResult:
    """Score logits against labels; a row with any NaN/Inf is wrong (argmax of NaN must not win by luck).

    Example:
        >>> import torch
        >>> score_logits(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), torch.tensor([1, 1]))
        EvalResult(accuracy=0.5, correct=1, total=2, nonfinite=1)
    """
    finite = torch.isfinite(logits).all(dim=1)
    correct = int(((logits.argmax(dim=1) == labels) & finite).sum())
    total = int(labels.shape[0])
    return EvalResult(correct / total if total else 0.0, correct, total, int((~finite).sum()))


def evaluate(model: nn.Module, data: TensorData, batch_size: int = 1024) -> EvalResult:
    """Top-1 accuracy of ``model`` on ``data`` (eval mode, no gradients)."""
    return score_logits(predict_logits(model, data.x, batch_size), data.y)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return dist.get_rank(), dist.get_world_size()


def _augment(x: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    if mode == "none":
        return x
    n, _, h, w = x.shape
    shifts = torch.randint(-2, 3, (n, 2), generator=gen).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = shifts[:, 0] * 2.0 / w
    theta[:, 1, 2] = shifts[:, 1] * 2.0 / h
    if mode == "shift-flip":
        flip = torch.rand(n, generator=gen) < 0.5
        theta[flip, 0, 0] = -1.0
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if not params:
        raise ConfigError("the model has no trainable parameters (all have requires_grad=False)")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=config.step_size * steps_per_epoch, gamma=config.gamma)
    if config.schedule == "multistep":
        total = config.epochs * steps_per_epoch
        milestones = sorted({max(1, round(f * total)) for f in config.milestones})
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=config.gamma)
    return None


def _batches(n: int, batch_size: int, rank: int, world: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        yield index[rank::world]


def _default_loss(label_smoothing: float) -> Callable[[nn.Module, object], torch.Tensor]:
    """Cross-entropy on ``(x, y)``: hard labels with label smoothing, or soft cross-entropy for (N, K) ``y``."""

    def loss(model: nn.Module, batch: object) -> torch.Tensor:
        x, y = batch  # type: ignore[misc]
        out = model(x)
        if y.dim() == 2:
            return -(y * F.log_softmax(out, dim=1)).sum(dim=1).mean()
        return F.cross_entropy(out, y, label_smoothing=label_smoothing)

    return loss


def _default_compose(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return x, y


def _train_mode(model: nn.Module, trained: set[int] | None) -> None:
    """``model.train()``; with an explicit parameter set, modules holding parameters none of which train stay in eval."""
    model.train()
    if trained is None:
        return
    for module in model.modules():
        own = [id(p) for p in module.parameters()]
        if own and not any(i in trained for i in own):
            module.eval()


def _as_tensors(data: TensorData | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, TensorData):
        return data.x, data.y
    if not (isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        raise ConfigError(f"training data must be a TensorData or an (x, y) pair of tensors, got {type(data).__name__}")
    x, y = data
    if y.dim() not in (1, 2) or x.dim() < 1 or x.shape[0] != y.shape[0]:
        raise ConfigError(f"training data needs one target per sample: x {tuple(x.shape)}, y {tuple(y.shape)} "
                          "(expected y of shape (N,) labels or (N, K) probabilities)")
    return x, y


def train_model(
    model: nn.Module,
    data: TensorData | tuple[torch.Tensor, torch.Tensor],
    *,
    val: TensorData | None = None,
    config: TrainConfig = TrainConfig(),
    compose: Callable[[torch.Tensor, torch.Tensor, torch.Generator], Any] | None = None,
    loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    select: Callable[[nn.Module], float] | None = None,
    params: Iterable[nn.Parameter] | None = None,
    progress: bool = True,
    description: str = "train",
) -> TrainResult:
    """Train ``model`` in place on ``data``; keep the weights of the epoch with the best validation score.

    One step: sample a batch of ``data`` (seeded shuffle, this rank's share under DDP), augment its images
    (``config.augment``), ``batch = compose(x, y, generator)``, ``loss(model, batch)``, backward, optimiser and
    scheduler step. After every epoch ``select(model)`` scores the weights (eval mode, no gradients; on every
    rank, so early stopping agrees); the best epoch's weights (ties: the earlier) are restored at the end.

    Args:
        model: any ``nn.Module``; with the default loss it maps a batch of ``x`` to logits.
        data: a :class:`TensorData`, or an ``(x, y)`` pair of tensors with one row per sample, where ``y`` is
            (N,) labels or (N, K) probabilities (soft cross-entropy, e.g. a pirate trained on an oracle's
            answers) or anything a custom ``loss`` reads (e.g. sample indices).
        val: validation data; the default ``select`` is its accuracy (with ``config.patience``: early stopping).
            With a custom ``select``, only the kept weights' accuracy on it is reported.
        config: hyperparameters.
        compose: ``compose(x, y, generator) -> batch`` turns the sampled (augmented) rows into the training batch,
            any object the loss reads; it may add samples (keyed or watermark composites). ``generator`` is this
            rank's seeded augmentation stream. Default: ``(x, y)``.
        loss: ``loss(model, batch) -> scalar tensor``; ``model`` is the DistributedDataParallel wrapper under DDP.
            Default: cross-entropy with ``config.label_smoothing``, or soft cross-entropy when ``y`` is (N, K).
        select: ``select(model) -> float``, higher is better. Default: accuracy on ``val`` when given, else no
            selection (the last epoch is kept).
        params: the parameters to optimise (e.g. a tail or a head). Given, every other parameter is frozen during
            the run (``requires_grad`` restored afterwards) and every module holding parameters none of which
            train is kept in eval mode (frozen BatchNorm statistics). Default: all with ``requires_grad``.
        progress: show a rich progress bar (on rank 0 only).
        description: label of the progress bar.

    Returns:
        TrainResult with the history, the selection scores and the kept epoch.

    Raises:
        ConfigError: empty data, targets that do not match the samples, no parameter to train, or augmentation
            on data that is not NCHW images.
    """
    x_all, y_all = _as_tensors(data)
    if len(x_all) == 0:
        raise ConfigError("the training data is empty")
    if config.augment != "none" and x_all.dim() != 4:
        raise ConfigError(f"augment={config.augment!r} needs NCHW images, got x of shape {tuple(x_all.shape)}")
    compose = compose or _default_compose
    loss_fn = loss or _default_loss(config.label_smoothing)
    if select is None and val is not None and len(val):
        def select(m: nn.Module) -> float:
            return evaluate(m, val, config.eval_batch_size).accuracy
        default_select = True
    else:
        default_select = False
    trained: set[int] | None = None
    saved_flags = [(p, p.requires_grad) for p in model.parameters()]
    if params is not None:
        chosen = list(params)
        trained = {id(p) for p in chosen}
        for p, _ in saved_flags:
            p.requires_grad_(id(p) in trained)
        train_params = chosen
    else:
        train_params = [p for p in model.parameters() if p.requires_grad]
    try:
        return _run(model, x_all, y_all, val, config, compose, loss_fn, select, default_select, train_params, trained,
                    progress, description)
    finally:
        if params is not None:
            for p, flag in saved_flags:
                p.requires_grad_(flag)


def _run(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, val: TensorData | None, config: TrainConfig,
         compose: Callable[[torch.Tensor, torch.Tensor, torch.Generator], Any], loss_fn: Callable[[nn.Module, Any], torch.Tensor],
         select: Callable[[nn.Module], float] | None, default_select: bool, params: list[nn.Parameter],
         trained: set[int] | None, progress: bool, description: str) -> TrainResult:
    n = len(x_all)
    rank, world = _distributed()
    opt = _optimizer(params, config)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    steps = math.ceil(n / config.batch_size)
    sched = _scheduler(opt, config, steps)
    gen = torch.Generator().manual_seed(config.seed)
    aug_gen = torch.Generator().manual_seed(config.seed + 1 + rank)
    best_score, best_state, best_epoch, stale = -math.inf, None, 0, 0
    history: list[dict[str, float]] = []
    scores: list[float] = []
    start = time.perf_counter()
    with make_progress(progress and rank == 0) as bar:
        task = bar.add_task(description, total=config.epochs * steps, status="")
        epoch = 0
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            _train_mode(model, trained)
            total_loss, seen = 0.0, 0
            for index in _batches(n, config.batch_size, rank, world, gen):
                x = x_all[index]
                if config.augment != "none":
                    x = _augment(x, config.augment, aug_gen)
                value = loss_fn(net, compose(x, y_all[index], aug_gen))
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total_loss += float(value.detach()) * len(index)
                seen += len(index)
                bar.advance(task)
            record: dict[str, float] = {"epoch": epoch, "loss": total_loss / max(seen, 1), "seconds": time.perf_counter() - t0}
            status = f"loss {record['loss']:.4f}"
            if select is not None:
                model.eval()
                with torch.no_grad():
                    score = float(select(model))
                scores.append(score)
                record["val_accuracy" if default_select else "score"] = score
                status += f" {'val' if default_select else 'score'} {score:.4f}"
                if score > best_score:
                    best_score, best_epoch, stale = score, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    stale += 1
            history.append(record)
            bar.update(task, status=status)
            if select is not None and config.patience is not None and stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    val_accuracy: float | None = None
    if val is not None and len(val):
        val_accuracy = best_score if default_select else evaluate(model, val, config.eval_batch_size).accuracy
    return TrainResult(
        epochs_run=epoch, best_epoch=best_epoch or epoch, val_accuracy=val_accuracy, history=history,
        wall_seconds=time.perf_counter() - start, world_size=world, scores=scores,
        best_score=best_score if best_state is not None else None,
    )


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
