"""Fine-tuning attack on a locked model: repair the locked bits, then train on a little data.

The thief holds the locked file (the architecture is known from it) and a fraction of the training data.
The locked bits, read as floats, are uniformly random bit patterns: about 1 in 256 float32 values is NaN or
Inf, and the magnitudes span every exponent from 1e-38 to 3e38. A sensible thief *repairs* them first
(:func:`repair_weights`): non-finite values and values beyond ``max_abs`` are replaced (by a fresh default
initialisation's values, or by zero), subnormal values are flushed to zero (they are zero in effect and make
CPU arithmetic crawl), BatchNorm running statistics are reset, and the input normalisation buffers get the
public dataset statistics. Then it fine-tunes (:func:`finetune`).

The attack succeeds if the locked start beats training from scratch on the same data with the same budget;
Deep-Lock's claim is that it does not. Fine-tuning the original weights is the upper bound.

Example:
    >>> import torch
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.keys import SecretKey
    >>> from modelshield.lock import lock_model
    >>> from modelshield.models import build_model
    >>> from modelshield.training import TrainConfig
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> locked = lock_model(model, SecretKey.generate())
    >>> data = make_synthetic(64, num_classes=4, seed=0)
    >>> result = finetune_attack(locked, data, data, config=TrainConfig(epochs=1), model=model)
    >>> result.start, result.repair.replaced > 0
    ('locked', True)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from modelshield.data.types import Normalization, TensorData
from modelshield.errors import ConfigError
from modelshield.lock.locked import LockedModel, build_locked_architecture
from modelshield.training import TrainConfig, TrainResult, evaluate, seed_everything, train_model

__all__ = ["FILLS", "FinetuneResult", "RepairPolicy", "RepairStats", "finetune", "finetune_attack", "repair_weights"]

FILLS = ("init", "zero")


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
        start: ``locked`` (repaired locked bits), ``scratch`` (fresh initialisation) or ``original`` (the
            victim's weights), or any label the caller gave.
        train_size: training images used.
        accuracy: test accuracy after training (non-finite outputs scored wrong).
        start_accuracy: test accuracy of the starting point, before training.
        epochs: epochs trained (the budget).
        wall_seconds: training time.
        repair: what the repair changed (locked starts only).
    """

    start: str
    train_size: int
    accuracy: float
    start_accuracy: float
    epochs: int
    wall_seconds: float
    repair: RepairStats | None = None


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


def finetune(model: nn.Module, train: TensorData, test: TensorData, *, config: TrainConfig, start: str,
             repair: RepairStats | None = None, progress: bool = False) -> FinetuneResult:
    """Train ``model`` in place for the fixed budget ``config`` (no early stopping) and score it on ``test``."""
    if config.patience is not None:
        raise ConfigError("fine-tuning budgets are fixed: use a TrainConfig with patience=None")
    start_accuracy = evaluate(model, test).accuracy
    result: TrainResult = train_model(model, train, config=config, progress=progress, description=f"fine-tune {start}")
    return FinetuneResult(start, len(train), evaluate(model, test).accuracy, start_accuracy, result.epochs_run,
                          result.wall_seconds, repair)


def finetune_attack(locked: LockedModel, train: TensorData, test: TensorData, *, config: TrainConfig,
                    policy: RepairPolicy | None = None, model: nn.Module | None = None, progress: bool = False) -> FinetuneResult:
    """Repair the locked weights and fine-tune them on the thief's data.

    Args:
        locked: the locked file the thief holds.
        train: the thief's training data.
        test: data to score the result on.
        config: the training budget.
        policy: repair rules (default :class:`RepairPolicy`).
        model: a module of the architecture (deep-copied); default: rebuilt from the file's metadata.
        progress: show a progress bar.
    """
    policy = policy or RepairPolicy()
    seed_everything(policy.seed)
    template = copy.deepcopy(model) if model is not None else build_locked_architecture(locked)
    if model is not None:  # re-initialise the copy: the thief does not have the victim's weights
        for module in template.modules():
            if hasattr(module, "reset_parameters") and module is not template:
                module.reset_parameters()  # type: ignore[operator]
    repaired, stats = repair_weights(locked.attacker_state_dict(), template, policy)
    target = copy.deepcopy(template)
    target.load_state_dict(repaired, strict=True)
    return finetune(target, train, test, config=config, start="locked", repair=stats, progress=progress)
