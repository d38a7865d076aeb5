"""Post-training int8 dynamic quantization, as a thief compressing a stolen model would apply it.

Uses ``torch.ao.quantization.quantize_dynamic`` with ``qint8`` weights. Dynamic quantization in PyTorch
covers ``nn.Linear`` (and recurrent) layers only: **convolutions stay float32**. Activations are quantised
on the fly per batch. PyTorch marks this API deprecated in favour of torchao; its deprecation warnings are
silenced here.

Example:
    >>> import torch
    >>> from torch import nn
    >>> q = quantize_int8_dynamic(nn.Sequential(nn.Linear(4, 3)))
    >>> quantized_linear_count(q), q(torch.rand(2, 4)).shape
    (1, torch.Size([2, 3]))
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

__all__ = ["quantize_int8_dynamic", "quantized_linear_count"]


def quantize_int8_dynamic(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) whose ``nn.Linear`` layers hold int8 weights (dynamic quantization)."""
    source = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(source, {nn.Linear}, dtype=torch.qint8)
    return quantized.eval()


def quantized_linear_count(model: nn.Module) -> int:
    """Number of dynamically quantised linear layers in ``model``."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return sum(1 for m in model.modules() if isinstance(m, DynamicQuantizedLinear))
