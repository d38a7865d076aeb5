"""Fine-tuning a stolen model on plain inputs with true labels (every parameter trainable).

Example:
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.models import build_model
    >>> from modelshield.training import TrainConfig
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> tuned = finetune_model(model, make_synthetic(64, seed=0), config=TrainConfig(epochs=1), progress=False)
    >>> tuned is model
    False
"""

from __future__ import annotations

import copy

from torch import nn

from modelshield.data.types import TensorData
from modelshield.training import TrainConfig, train_model

__all__ = ["finetune_model"]


def finetune_model(model: nn.Module, data: TensorData, *, val: TensorData | None = None,
                   config: TrainConfig | None = None, progress: bool = True) -> nn.Module:
    """A copy of ``model`` fine-tuned on ``data`` (all parameters, train mode, BatchNorm statistics updating).

    Args:
        model: the stolen model.
        data: the thief's labelled plain images.
        val: optional validation split for keeping the best epoch (a thief usually has none).
        config: training hyperparameters (default :class:`~modelshield.training.TrainConfig`).
        progress: show a progress bar.
    """
    tuned = copy.deepcopy(model)
    for p in tuned.parameters():
        p.requires_grad_(True)
    train_model(tuned, data, val=val, config=config or TrainConfig(), progress=progress, description="fine-tune")
    return tuned.eval()
