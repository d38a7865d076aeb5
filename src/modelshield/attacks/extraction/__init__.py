"""Model extraction attacks against a black-box :class:`~modelshield.oracle.Oracle`.

KnockoffNets (random and adaptive query selection), JBDA and JBDA-TR (Jacobian-based augmentation from a
small seed set); soft-label or hard-label according to what the server's policy for the client answers; a pirate of the same or
another architecture trained on the answers; query pools from the victim's own distribution, a surrogate or
noise. Against per-client defenses: queries spread over several accounts (:class:`SybilOracle`) or paced in
time (:class:`PacedOracle`), and an attacker that drops answers it believes QUEEN reversed
(:class:`FilteringAttack`).
"""

from modelshield.attacks.extraction.filtering import (
    FILTER_METHODS,
    FilterConfig,
    FilteringAttack,
    FilterResult,
    filter_transcript,
)
from modelshield.attacks.extraction.jbda import JBDA, JBDAConfig
from modelshield.attacks.extraction.knockoff import KnockoffConfig, KnockoffNets
from modelshield.attacks.extraction.pirate import PirateConfig, PirateScore, score_pirate, train_pirate
from modelshield.attacks.extraction.pools import (
    NOISE_POOL_SIZE,
    POOL_KINDS,
    SURROGATES,
    QueryPool,
    noise_pool,
    query_pool,
)
from modelshield.attacks.extraction.run import (
    ATTACK_NAMES,
    ExtractionAttack,
    ExtractionResult,
    TranscriptScore,
    build_attack,
    run_extraction,
    score_transcript,
)
from modelshield.attacks.extraction.sybil import SYBIL_MODES, PacedOracle, SybilOracle
from modelshield.attacks.extraction.transcript import Transcript

__all__ = [
    "ATTACK_NAMES",
    "FILTER_METHODS",
    "JBDA",
    "NOISE_POOL_SIZE",
    "POOL_KINDS",
    "SURROGATES",
    "SYBIL_MODES",
    "ExtractionAttack",
    "ExtractionResult",
    "FilterConfig",
    "FilterResult",
    "FilteringAttack",
    "JBDAConfig",
    "KnockoffConfig",
    "KnockoffNets",
    "PacedOracle",
    "PirateConfig",
    "PirateScore",
    "QueryPool",
    "SybilOracle",
    "Transcript",
    "TranscriptScore",
    "build_attack",
    "filter_transcript",
    "noise_pool",
    "query_pool",
    "run_extraction",
    "score_pirate",
    "score_transcript",
    "train_pirate",
]
