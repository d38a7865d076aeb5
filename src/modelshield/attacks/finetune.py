"""Fine-tuning a model the thief holds: one procedure for every start and every bench suite.

The thief holds a model (stolen AuthNet-protected weights, Deep-Lock-locked weights it repaired, or the
victim's own weights as the upper bound) and a fraction of the training data, and fine-tunes it with a fixed
budget (:class:`ThiefConfig`); the baseline is the same architecture trained from scratch on the same data
with the same budget (:func:`finetune` with ``from_scratch=True``). Both bench suites run this procedure
(:func:`thief_data`, :func:`finetune`), so their scratch figures for the same data and seed are the same run.

Locked weights are first *repaired* (:func:`repair_weights`, :func:`finetune_attack`): the locked bits, read
as floats, are uniformly random bit patterns (about 1 in 256 float32 values is NaN or Inf, magnitudes span
1e-38 to 3e38), so non-finite values and values beyond ``max_abs`` are replaced (by a fresh default
initialisation's values, or by zero), subnormal values are flushed to zero (they are zero in effect and make
CPU arithmetic crawl), BatchNorm running statistics are reset, and the input normalisation buffers get the
public dataset statistics. Deep-Lock's claim is that the repaired start does not beat scratch.

Example:
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.models import build_model
    >>> stolen = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> data, test = make_synthetic(64, num_classes=4, seed=0), make_synthetic(32, num_classes=4, seed=1)
    >>> tuned = finetune(stolen, data, config=ThiefConfig(epochs=1), test=test)
    >>> scratch = finetune(stolen, data, config=ThiefConfig(epochs=1), test=test, from_scratch=True)
    >>> (tuned.start, scratch.start, tuned.train_size, tuned.model is stolen)
    ('stolen', 'scratch', 64, False)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from modelshield.data.types import Normalization, TensorData
from modelshield.errors import ConfigError
from modelshield.lock.locked import LockedModel, build_locked_architecture
from modelshield.training import TrainConfig, evaluate, seed_everything, train_model

__all__ = ["FILLS", "QUICK_THIEF", "FinetuneResult", "RepairPolicy", "RepairStats", "ThiefConfig", "finetune",
           "finetune_attack", "reinitialised", "repair_weights", "thief_data"]

FILLS = ("init", "zero")


@dataclass(frozen=True)
class ThiefConfig:
    """The thief's fine-tuning budget: one for every start (stolen, repaired, original, scratch) and every suite.

    Schedule: Adam, learning rate 1e-3, batch 64, cosine decay to zero over 15 epochs, no early stopping (the thief
    holds no validation split). Adam at 1e-3 with a cosine decay is the victims' own recipe family, so no start is
    favoured by a schedule tuned for it. 15 epochs because the thief's smallest share (1%, 600 images: 10 steps an
    epoch) is still learning at 10: from scratch, LeNet-5 on MNIST reaches 84.8% after 10 epochs, 88.3% after 15,
    89.8% after 20 and 90.9% after 30 (mean of seeds 0-2; the lock suite's 10-epoch 83.9% against the auth
    suite's 15-epoch 87.2% was this). 15 epochs take most of that gain at half the cost of 30, which would double
    the suites' dearest cells (the VGG on 10%). The budget is the same for every start, so the comparison stays like for like;
    the 1% scratch figure is a lower bound on what a more patient thief reaches.

    Attributes:
        epochs: passes over the thief's data.
        batch_size: images per step.
        lr: Adam learning rate (cosine-decayed to zero over the run).

    Example:
        >>> ThiefConfig().train_config(seed=3).epochs, ThiefConfig().train_config(seed=3).seed
        (15, 3)
    """

    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"ThiefConfig epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"ThiefConfig.lr must be > 0, got {self.lr}")

    def train_config(self, seed: int) -> TrainConfig:
        """The :class:`~modelshield.training.TrainConfig` of one run (fixed budget: no patience)."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer="adam",
                           schedule="cosine", seed=seed)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, with the fixed parts of the schedule spelled out."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "optimizer": "adam",
                "schedule": "cosine"}


QUICK_THIEF = ThiefConfig(epochs=3)
"""The budget of quick bench runs (pipeline checks, not results)."""


@dataclass(frozen=True)
class RepairPolicy:
    """How the thief repairs locked weights before fine-tuning.

    Attributes:
        fill: replacement for bad values: ``init`` (the value a fresh default initialisation seeded with
            ``seed`` puts there) or ``zero``.
        max_abs: values with a larger magnitude count as bad too (trained weights rarely exceed it);
            ``math.inf`` replaces only NaN/Inf.
        reset_batchnorm: set BatchNorm running means to 0 and variances to 1 (training re-estimates them).
        normalization: public input statistics for the model's ``normalize.mean``/``normalize.std`` buffers;
            None leaves those buffers to the other rules.
        seed: seed of the fresh initialisation used by ``fill="init"``.

    Example:
        >>> RepairPolicy(fill="random")
        Traceback (most recent call last):
        ...
        modelshield.errors.ConfigError: fill must be one of init, zero, got 'random'
    """

    fill: str = "init"
    max_abs: float = 1.0
    reset_batchnorm: bool = True
    normalization: Normalization | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise ConfigError(f"fill must be one of {', '.join(FILLS)}, got {self.fill!r}")
        if not self.max_abs > 0:
            raise ConfigError(f"max_abs must be > 0 (math.inf to keep every finite value), got {self.max_abs}")


@dataclass(frozen=True)
class RepairStats:
    """What the repair changed.

    Attributes:
        total: floating elements in the state dict.
        nonfinite: NaN/Inf elements replaced.
        out_of_range: finite elements beyond ``max_abs`` replaced.
        reset: elements set by the BatchNorm / normalisation rules.
        subnormal: subnormal elements flushed to zero.
    """

    total: int
    nonfinite: int
    out_of_range: int
    reset: int
    subnormal: int = 0

    @property
    def replaced(self) -> int:
        """Elements changed in all."""
        return self.nonfinite + self.out_of_range + self.reset + self.subnormal


@dataclass(frozen=True)
class FinetuneResult:
    """One fine-tuning run.

    Attributes:
        start: ``stolen``, ``locked`` (repaired locked bits), ``scratch`` (fresh initialisation), or any label the
            caller gave (e.g. ``original`` for the victim's weights).
        train_size: training images used.
        accuracy: test accuracy after training (non-finite outputs scored wrong); None without test data.
        start_accuracy: test accuracy of the starting point, before training; None without test data.
        epochs: epochs trained (the budget).
        wall_seconds: training time.
        repair: what the repair changed (locked starts only).
        model: the fine-tuned copy (eval mode).
    """

    start: str
    train_size: int
    accuracy: float | None
    start_accuracy: float | None
    epochs: int
    wall_seconds: float
    repair: RepairStats | None = None
    model: nn.Module | None = field(default=None, repr=False, compare=False)


def repair_weights(state_dict: dict[str, torch.Tensor], template: nn.Module, policy: RepairPolicy) -> tuple[dict[str, torch.Tensor], RepairStats]:
    """Replace bad values of a locked state dict; returns the repaired copy and what changed.

    Args:
        state_dict: the locked bits as tensors (:meth:`~modelshield.lock.LockedModel.attacker_state_dict`).
        template: a freshly initialised module of the same architecture (source of ``fill="init"`` values).
        policy: the repair rules.
    """
    fresh = template.state_dict()
    repaired: dict[str, torch.Tensor] = {}
    total = nonfinite = out_of_range = reset = subnormal = 0
    for name, tensor in state_dict.items():
        t = tensor.detach().clone()
        if not t.is_floating_point():
            repaired[name] = t
            continue
        total += t.numel()
        if policy.normalization is not None and name in ("normalize.mean", "normalize.std"):
            values = policy.normalization.mean if name.endswith("mean") else policy.normalization.std
            repaired[name] = torch.tensor(values, dtype=t.dtype).reshape(t.shape)
            reset += t.numel()
            continue
        if policy.reset_batchnorm and (name.endswith("running_mean") or name.endswith("running_var")):
            repaired[name] = torch.zeros_like(t) if name.endswith("running_mean") else torch.ones_like(t)
            reset += t.numel()
            continue
        bad_nonfinite = ~torch.isfinite(t)
        bad_range = torch.isfinite(t) & (t.abs() > policy.max_abs)
        bad = bad_nonfinite | bad_range
        nonfinite += int(bad_nonfinite.sum())
        out_of_range += int(bad_range.sum())
        if policy.fill == "init" and name in fresh:
            replacement = fresh[name].to(t.dtype).reshape(t.shape)
        else:
            replacement = torch.zeros_like(t)
        fixed = torch.where(bad, replacement, t)
        tiny = (fixed != 0) & (fixed.abs() < torch.finfo(t.dtype).tiny)
        subnormal += int(tiny.sum())
        repaired[name] = torch.where(tiny, torch.zeros_like(fixed), fixed)
    return repaired, RepairStats(total, nonfinite, out_of_range, reset, subnormal)


def reinitialised(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every submodule's ``reset_parameters`` run under ``seed`` (a fresh initialisation).

    Buffers without a reset rule (a zoo model's input normalisation) are kept: they are public statistics.
    BatchNorm running statistics are reset with the module.
    """
    fresh = copy.deepcopy(model)
    seed_everything(seed)
    for module in fresh.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()  # type: ignore[operator]
    return fresh


def thief_data(pool: TensorData, images: int, seed: int) -> TensorData:
    """The thief's seeded share of ``pool``: ``images`` samples (all of the pool when it holds fewer).

    Example:
        >>> from modelshield.data import make_synthetic
        >>> len(thief_data(make_synthetic(50, seed=0), 20, seed=0)), len(thief_data(make_synthetic(50, seed=0), 80, seed=0))
        (20, 50)
    """
    if images < 1:
        raise ConfigError(f"the thief needs at least 1 image, got {images}")
    return pool.subset(min(images, len(pool)), seed=seed)


def finetune(model: nn.Module, data: TensorData, *, config: ThiefConfig = ThiefConfig(), seed: int = 0,
             test: TensorData | None = None, from_scratch: bool = False, start: str | None = None,
             repair: RepairStats | None = None, progress: bool = False) -> FinetuneResult:
    """Fine-tune a copy of ``model`` on ``data`` for the fixed budget ``config``; the input is not modified.

    Every parameter trains (train mode, BatchNorm statistics updating), without early stopping: the thief has
    no validation split. ``seed`` seeds the initialisation (``from_scratch``), the shuffling and the torch RNG,
    so every start of one comparison sees the same batches.

    Args:
        model: the start (stolen, repaired or original weights), or the architecture when ``from_scratch``.
        data: the thief's labelled plain images (:func:`thief_data`).
        config: the budget, identical for every start of a comparison.
        seed: seed of this run.
        test: data to score the start and the result on (None: no scores).
        from_scratch: train a fresh initialisation of the architecture (:func:`reinitialised`) instead.
        start: label recorded in the result; default ``scratch`` or ``stolen``.
        repair: what a repair changed, recorded in the result.
        progress: show a progress bar.
    """
    label = start or ("scratch" if from_scratch else "stolen")
    tuned = reinitialised(model, seed) if from_scratch else copy.deepcopy(model)
    for p in tuned.parameters():
        p.requires_grad_(True)
    start_accuracy = evaluate(tuned, test).accuracy if test is not None else None
    seed_everything(seed)
    result = train_model(tuned, data, config=config.train_config(seed), progress=progress, description=f"fine-tune {label}")
    return FinetuneResult(label, len(data), evaluate(tuned, test).accuracy if test is not None else None,
                          start_accuracy, result.epochs_run, result.wall_seconds, repair, tuned)


def finetune_attack(locked: LockedModel, data: TensorData, test: TensorData | None = None, *,
                    config: ThiefConfig = ThiefConfig(), policy: RepairPolicy | None = None,
                    model: nn.Module | None = None, seed: int | None = None, progress: bool = False) -> FinetuneResult:
    """Repair the locked weights (``policy``), then run :func:`finetune` on them.

    Args:
        locked: the locked file the thief holds.
        data: the thief's training data.
        test: data to score the result on.
        config: the budget.
        policy: repair rules (default :class:`RepairPolicy`).
        model: a module of the architecture (re-initialised copy; the thief does not have the victim's
            weights); default: rebuilt from the file's metadata.
        seed: seed of the fine-tuning; default the policy's seed.
        progress: show a progress bar.
    """
    policy = policy or RepairPolicy()
    if model is not None:
        template = reinitialised(model, policy.seed)
    else:
        seed_everything(policy.seed)
        template = build_locked_architecture(locked)
    repaired, stats = repair_weights(locked.attacker_state_dict(), template, policy)
    template.load_state_dict(repaired, strict=True)
    return finetune(template, data, config=config, seed=policy.seed if seed is None else seed, test=test,
                    start="locked", repair=stats, progress=progress)
