"""Fine-pruning (Liu et al. 2018): prune the last convolution's dormant channels, then fine-tune.

Dormancy is measured on the thief's clean images: the mean ReLU activation of each output channel of the
last ``nn.Conv2d`` in the model. Channels are pruned from the least active up, one at a time, for as long as
accuracy on a held-out part of the thief's data stays within ``max_accuracy_drop`` of the unpruned model
(Liu et al.'s stopping rule, 4 points), and at most ``max_fraction`` of the channels. The model is then
fine-tuned on the thief's data with the pruned channels held at zero; finally their weights and biases are
zeroed, so the result is an ordinary module whose pruned channels output exactly zero (before the ReLU).

Example:
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.models import build_model
    >>> from modelshield.training import TrainConfig
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> r = fine_prune(model, make_synthetic(120, seed=0), config=FinePruningConfig(finetune=TrainConfig(epochs=1)), progress=False)
    >>> r.layer, r.channels
    ('body.conv2', 16)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from modelshield.data.types import TensorData
from modelshield.errors import ConfigError
from modelshield.training import TrainConfig, evaluate, train_model

__all__ = ["FinePruningConfig", "FinePruningResult", "fine_prune"]


@dataclass(frozen=True)
class FinePruningConfig:
    """Settings of fine-pruning.

    Attributes:
        max_accuracy_drop: stop pruning before held-out accuracy falls by more than this (0.04: Liu et al.).
        max_fraction: never prune more than this fraction of the channels.
        holdout_fraction: share of the thief's data kept aside to measure accuracy while pruning.
        finetune: fine-tuning after pruning (default 5 epochs, Adam 1e-4, cosine; not tuned).
        seed: split seed.
    """

    max_accuracy_drop: float = 0.04
    max_fraction: float = 0.9
    holdout_fraction: float = 0.2
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=1e-4, schedule="cosine"))
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_accuracy_drop < 1.0 or not 0.0 < self.max_fraction < 1.0:
            raise ConfigError(f"fine-pruning: max_accuracy_drop in [0, 1) and max_fraction in (0, 1) expected, got "
                              f"{self.max_accuracy_drop}, {self.max_fraction}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(f"fine-pruning: holdout_fraction must be in (0, 1), got {self.holdout_fraction}")


@dataclass
class FinePruningResult:
    """The fine-pruned copy and what was done.

    Attributes:
        model: the fine-pruned copy (the input model is unchanged).
        layer: name of the pruned convolution.
        channels: its channel count.
        pruned: indices of the pruned channels, least active first.
        accuracy_before, accuracy_pruned, accuracy_after: held-out accuracy before pruning, after pruning,
            after fine-tuning.
    """

    model: nn.Module
    layer: str
    channels: int
    pruned: list[int]
    accuracy_before: float
    accuracy_pruned: float
    accuracy_after: float

    @property
    def fraction(self) -> float:
        """Fraction of the layer's channels pruned."""
        return len(self.pruned) / self.channels


def _last_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"fine-pruning needs a convolution, {type(model).__name__} has none")
    return convs[-1]


def fine_prune(model: nn.Module, data: TensorData, *, config: FinePruningConfig | None = None,
               progress: bool = True) -> FinePruningResult:
    """Fine-prune a copy of ``model`` with the thief's labelled clean images ``data``.

    Raises:
        ConfigError: a model without a convolution, or too little data to hold some out.
    """
    config = config or FinePruningConfig()
    pruned_model = copy.deepcopy(model).eval()
    name, conv = _last_conv(pruned_model)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(config.seed))
    n_hold = int(round(config.holdout_fraction * len(data)))
    if n_hold < 1 or n_hold >= len(data):
        raise ConfigError(f"fine-pruning needs more data to hold {config.holdout_fraction:.0%} out, got {len(data)} images")
    holdout, train = data[order[:n_hold]], data[order[n_hold:]]
    acts: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda _m, _i, out: acts.append(out.detach().relu().mean(dim=(0, 2, 3))))
    with torch.no_grad():
        for i in range(0, len(train), 1024):
            pruned_model(train.x[i : i + 1024])
    handle.remove()
    activity = torch.stack(acts).mean(dim=0)
    channels = int(activity.numel())
    mask = torch.ones(channels)
    handle = conv.register_forward_hook(lambda _m, _i, out: out * mask.view(1, -1, 1, 1).to(out.dtype))
    before = evaluate(pruned_model, holdout).accuracy
    pruned: list[int] = []
    current = before
    for c in activity.argsort().tolist():
        if len(pruned) + 1 > config.max_fraction * channels:
            break
        mask[c] = 0.0
        acc = evaluate(pruned_model, holdout).accuracy
        if before - acc > config.max_accuracy_drop:
            mask[c] = 1.0
            break
        pruned.append(c)
        current = acc
    train_model(pruned_model, train, val=None, config=config.finetune, progress=progress, description="fine-prune")
    handle.remove()
    with torch.no_grad():
        conv.weight[pruned] = 0.0
        if conv.bias is not None:
            conv.bias[pruned] = 0.0
    pruned_model.eval()
    return FinePruningResult(pruned_model, name, channels, pruned, before, current, evaluate(pruned_model, holdout).accuracy)
