"""Trigger inversion and unlearning (Neural Cleanse, Wang et al. 2019) against a stolen, watermarked model.

1. **Reverse engineering.** For a candidate class ``t``, optimise a mask ``m = sigmoid(theta_m)`` (1 x H x W)
   and a pattern ``p = sigmoid(theta_p)`` (C x H x W) so that ``x' = (1 - m) * x + m * p`` is classified as
   ``t`` for the thief's clean images, with an L1 penalty ``lam * sum(m)`` (Adam, fixed ``lam``; Neural
   Cleanse adapts ``lam`` during the search, which is not done here). Without a known target the attacker
   reverses every class and flags the one whose mask L1 norm is the low outlier (Neural Cleanse's anomaly
   index: ``(median - norm) / (1.4826 * MAD)``; the smallest norm wins).
2. **Unlearning.** Fine-tune the model on the thief's clean images where ``unlearn_fraction`` of them carry
   the reversed trigger, all with their true labels (Neural Cleanse's 20%).

The input model is left unchanged; the result holds the cleaned copy, the reversed trigger and the scan.

Example:
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.models import build_model
    >>> from modelshield.training import TrainConfig
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> cfg = TriggerInversionConfig(target=1, steps=5, unlearn=TrainConfig(epochs=1))
    >>> r = remove_by_trigger_inversion(model, make_synthetic(64, seed=0), config=cfg, progress=False)
    >>> r.target, tuple(r.mask.shape), tuple(r.pattern.shape)
    (1, (1, 8, 8), (1, 8, 8))
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from modelshield.data.types import TensorData
from modelshield.errors import ConfigError
from modelshield.training import TrainConfig, predict_logits, train_model

__all__ = ["ReversedTrigger", "TriggerInversionConfig", "TriggerInversionResult", "apply_trigger", "remove_by_trigger_inversion",
           "reverse_trigger"]


@dataclass(frozen=True)
class TriggerInversionConfig:
    """Settings of the attack (the defaults follow Neural Cleanse where it gives one; nothing was tuned).

    Attributes:
        target: class to reverse; None = scan every class and take the anomaly (the attacker does not know it).
        steps: optimisation steps per class (minibatches of ``batch_size``).
        lr: Adam step size on the mask and pattern logits.
        lam: weight of the mask's L1 norm (Neural Cleanse's initial cost, 1e-3).
        batch_size: images per step.
        unlearn_fraction: share of the unlearning images that carry the reversed trigger (Neural Cleanse: 20%).
        unlearn: fine-tuning settings of the unlearning (default 5 epochs, Adam 5e-4, cosine).
        seed: seed of the initialisation, batches and the choice of triggered images.
    """

    target: int | None = None
    steps: int = 300
    lr: float = 0.1
    lam: float = 1e-3
    batch_size: int = 128
    unlearn_fraction: float = 0.2
    unlearn: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=5e-4, schedule="cosine"))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0 or self.lam < 0:
            raise ConfigError("trigger inversion: steps and batch_size must be >= 1, lr > 0, lam >= 0")
        if not 0.0 <= self.unlearn_fraction <= 1.0:
            raise ConfigError(f"trigger inversion: unlearn_fraction must be in [0, 1], got {self.unlearn_fraction}")


@dataclass(frozen=True)
class ReversedTrigger:
    """A reversed trigger for one class and how well it works on the images it was fitted on."""

    target: int
    mask: torch.Tensor
    pattern: torch.Tensor
    mask_l1: float
    success_rate: float


@dataclass
class TriggerInversionResult:
    """The cleaned copy and the attack's record.

    Attributes:
        model: the unlearned copy.
        target: class whose trigger was unlearned.
        mask, pattern: the reversed trigger.
        mask_l1: per scanned class, the L1 norm of its reversed mask.
        anomaly_index: Neural Cleanse's anomaly index of the chosen class (None when the target was given).
        trigger_success: fraction of the thief's images sent to ``target`` by the reversed trigger.
    """

    model: nn.Module
    target: int
    mask: torch.Tensor
    pattern: torch.Tensor
    mask_l1: dict[int, float]
    anomaly_index: float | None
    trigger_success: float


def apply_trigger(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """``(1 - mask) * x + mask * pattern``."""
    return (1 - mask) * x + mask * pattern


def reverse_trigger(model: nn.Module, data: TensorData, target: int, *, config: TriggerInversionConfig | None = None) -> ReversedTrigger:
    """Neural Cleanse's mask + pattern optimisation towards ``target`` on clean images (the model is not changed)."""
    config = config or TriggerInversionConfig()
    model = model.eval()
    _, c, h, w = data.x.shape
    gen = torch.Generator().manual_seed(config.seed + 1000 * target)
    theta_m = (torch.randn(1, h, w, generator=gen) * 0.1 - 2.0).requires_grad_(True)  # start with a small mask
    theta_p = (torch.randn(c, h, w, generator=gen) * 0.1).requires_grad_(True)
    opt = torch.optim.Adam([theta_m, theta_p], lr=config.lr)
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    labels = torch.full((config.batch_size,), target, dtype=torch.long)
    try:
        for _ in range(config.steps):
            index = torch.randint(len(data), (config.batch_size,), generator=gen)
            m, p = torch.sigmoid(theta_m), torch.sigmoid(theta_p)
            loss = F.cross_entropy(model(apply_trigger(data.x[index], m, p)), labels) + config.lam * m.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p, flag in zip(model.parameters(), frozen):
            p.requires_grad_(flag)
    mask, pattern = torch.sigmoid(theta_m).detach(), torch.sigmoid(theta_p).detach()
    hits = predict_logits(model, apply_trigger(data.x, mask, pattern)).argmax(dim=1) == target
    return ReversedTrigger(target, mask, pattern, float(mask.sum()), float(hits.float().mean()))


def remove_by_trigger_inversion(model: nn.Module, data: TensorData, *, num_classes: int | None = None,
                                config: TriggerInversionConfig | None = None, progress: bool = True) -> TriggerInversionResult:
    """Reverse a trigger (for ``config.target`` or the anomalous class) and unlearn it on a copy of ``model``.

    Args:
        model: the stolen model.
        data: the thief's labelled clean images (a few percent of a training set).
        num_classes: classes to scan when ``config.target`` is None (default: the model's output width).
        config: settings.
        progress: show a progress bar while unlearning.

    Raises:
        ConfigError: empty data or a target outside the model's classes.
    """
    config = config or TriggerInversionConfig()
    if len(data) == 0:
        raise ConfigError("trigger inversion needs some clean images")
    k = num_classes or int(predict_logits(model, data.x[:1]).shape[1])
    if config.target is not None and not 0 <= config.target < k:
        raise ConfigError(f"trigger inversion target must be in [0, {k}), got {config.target}")
    scan = [config.target] if config.target is not None else list(range(k))
    triggers = {t: reverse_trigger(model, data, t, config=config) for t in scan}
    norms = {t: r.mask_l1 for t, r in triggers.items()}
    anomaly = None
    chosen = scan[0]
    if config.target is None:
        chosen = min(norms, key=lambda t: norms[t])
        med = statistics.median(norms.values())
        mad = statistics.median(abs(v - med) for v in norms.values()) * 1.4826
        anomaly = (med - norms[chosen]) / mad if mad > 0 else float("inf")
    trig = triggers[chosen]
    cleaned = copy.deepcopy(model)
    for p in cleaned.parameters():
        p.requires_grad_(True)
    gen = torch.Generator().manual_seed(config.seed)
    pick = torch.randperm(len(data), generator=gen)[: int(round(config.unlearn_fraction * len(data)))]
    x = data.x.clone()
    x[pick] = apply_trigger(x[pick], trig.mask, trig.pattern)
    train_model(cleaned, TensorData(x, data.y), config=config.unlearn, progress=progress, description="unlearn")
    return TriggerInversionResult(cleaned.eval(), chosen, trig.mask, trig.pattern, norms, anomaly, trig.success_rate)
