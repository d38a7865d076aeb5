"""AuthNet: authentication logic inside the model (Cai et al., ECAI 2025).

A protected model gives correct answers only on inputs carrying its secret key (a mask and an offset in
normalised input space); plain inputs get near-random answers. Nothing is added to the architecture.

* :mod:`~modelshield.auth.gate`: the gate by module name (hooks), head/tail split, default gates, candidates.
* :mod:`~modelshield.auth.autogate`: ``gate="auto"``: the gate chosen by full embedding trials scored on validation, cheapest tail first.
* :mod:`~modelshield.auth.bits`: channel statistics and the authentication bits.
* :mod:`~modelshield.auth.key`: :class:`AuthKey` (apply, save/load, versioned 0600 file).
* :mod:`~modelshield.auth.keygen`: key generation by signed-gradient steps.
* :mod:`~modelshield.auth.embedding`: :func:`embed` (bits + key + tail fine-tuning).
* :mod:`~modelshield.auth.evaluation`: accuracies with, without and with random keys; independently generated keys.
"""

from modelshield.auth.bits import AuthBits, channel_means, select_bits
from modelshield.auth.embedding import ARCHITECTURE_RECIPES, GENERIC_RECIPE, AuthConfig, EmbedResult, choose_gate, embed, independent_key, model_normalization
from modelshield.auth.evaluation import AuthEvaluation, accuracy_with_key, evaluate_auth
from modelshield.auth.autogate import AutoGateConfig, GateChoice, GateTrial
from modelshield.auth.gate import AUTO, DEFAULT_GATES, GateSplit, default_gate, gate_candidates, gate_output, trace_gate
from modelshield.auth.key import AUTH_KEY_ENV, AuthKey, KeyedModel
from modelshield.auth.keygen import KeyGenConfig, KeyGenResult, generate_key

__all__ = [
    "ARCHITECTURE_RECIPES",
    "AUTH_KEY_ENV",
    "AUTO",
    "DEFAULT_GATES",
    "AuthBits",
    "AuthConfig",
    "AuthEvaluation",
    "AuthKey",
    "AutoGateConfig",
    "EmbedResult",
    "GENERIC_RECIPE",
    "GateChoice",
    "GateSplit",
    "GateTrial",
    "KeyGenConfig",
    "KeyGenResult",
    "KeyedModel",
    "accuracy_with_key",
    "channel_means",
    "choose_gate",
    "default_gate",
    "embed",
    "evaluate_auth",
    "gate_candidates",
    "gate_output",
    "generate_key",
    "independent_key",
    "model_normalization",
    "select_bits",
    "trace_gate",
]
