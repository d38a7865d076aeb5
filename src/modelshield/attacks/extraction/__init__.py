"""Model extraction attacks against a black-box :class:`~modelshield.oracle.Oracle`.

KnockoffNets (random and adaptive query selection), JBDA and JBDA-TR (Jacobian-based augmentation from a
small seed set); soft-label or hard-label according to what the server's policy for the client answers; a pirate of the same or
another architecture trained on the answers; query pools from the victim's own distribution or a surrogate.
"""

from modelshield.attacks.extraction.jbda import JBDA, JBDAConfig
from modelshield.attacks.extraction.knockoff import KnockoffConfig, KnockoffNets
from modelshield.attacks.extraction.pirate import PirateConfig, PirateScore, score_pirate, train_pirate
from modelshield.attacks.extraction.pools import POOL_KINDS, SURROGATES, QueryPool, query_pool
from modelshield.attacks.extraction.run import (
    ATTACK_NAMES,
    ExtractionAttack,
    ExtractionResult,
    TranscriptScore,
    build_attack,
    run_extraction,
    score_transcript,
)
from modelshield.attacks.extraction.transcript import Transcript

__all__ = [
    "ATTACK_NAMES",
    "JBDA",
    "POOL_KINDS",
    "SURROGATES",
    "ExtractionAttack",
    "ExtractionResult",
    "JBDAConfig",
    "KnockoffConfig",
    "KnockoffNets",
    "PirateConfig",
    "PirateScore",
    "QueryPool",
    "Transcript",
    "TranscriptScore",
    "build_attack",
    "query_pool",
    "run_extraction",
    "score_pirate",
    "score_transcript",
    "train_pirate",
]
