"""Model transformations that a thief may apply to a stolen model: pruning, quantization.

Generic helpers: each takes any ``nn.Module`` and returns a modified *copy*; the input is left unchanged.
Fine-tuning a stolen model is :func:`modelshield.attacks.finetune.finetune` (one procedure for every start).
"""

from modelshield.attacks.removal.prune import prune_global_magnitude, sparsity
from modelshield.attacks.removal.quantize import quantize_int8_dynamic

__all__ = ["prune_global_magnitude", "quantize_int8_dynamic", "sparsity"]
from modelshield.attacks.removal.fine_pruning import FinePruningConfig, FinePruningResult, fine_prune
from modelshield.attacks.removal.trigger_inversion import (
    TriggerInversionConfig,
    TriggerInversionResult,
    remove_by_trigger_inversion,
    reverse_trigger,
)

__all__ += ["FinePruningConfig", "FinePruningResult", "TriggerInversionConfig", "TriggerInversionResult", "fine_prune",
            "remove_by_trigger_inversion", "reverse_trigger"]
