"""Model transformations that a thief may apply to a stolen model: pruning, quantization.

Generic helpers: each takes any ``nn.Module`` and returns a modified *copy*; the input is left unchanged.
Fine-tuning a stolen model is :func:`modelshield.attacks.finetune.finetune` (one procedure for every start).
"""

from modelshield.attacks.removal.prune import prune_global_magnitude, sparsity
from modelshield.attacks.removal.quantize import quantize_int8_dynamic

__all__ = ["prune_global_magnitude", "quantize_int8_dynamic", "sparsity"]
