"""MEA-Defender: a watermark that survives model extraction, verified by black-box queries.

* :class:`WatermarkKey`: the secret (source classes, target, combiner, seed), a 0600 JSON file.
* :mod:`~modelshield.watermark.composites`: watermark composites and evasion mixes, vectorised.
* :func:`embed_watermark`: embedding from scratch or by fine-tuning (L_util, L_com, L_ver, L_eva, MGDA).
* :func:`verify_watermark`: WSR, WFPR and a calibrated one-sided binomial decision against a model, a
  callable or an oracle.
"""

from modelshield.watermark.composites import EVASION_COMBINERS, SourcePool, make_composites, make_evasion
from modelshield.watermark.embedding import EmbedResult, WatermarkConfig, WatermarkLoss, embed_watermark, min_norm_weights
from modelshield.watermark.key import DATASET_DEFAULTS, ORIENTATIONS, WatermarkKey
from modelshield.watermark.verify import (
    PAPER_THRESHOLD,
    NullCalibration,
    VerifyConfig,
    VerifyReport,
    binomial_p_value,
    calibrate_null,
    clopper_pearson_upper,
    count_target,
    decide,
    predict_labels,
    verify_watermark,
)

__all__ = [
    "DATASET_DEFAULTS",
    "EVASION_COMBINERS",
    "ORIENTATIONS",
    "PAPER_THRESHOLD",
    "EmbedResult",
    "NullCalibration",
    "SourcePool",
    "VerifyConfig",
    "VerifyReport",
    "WatermarkConfig",
    "WatermarkKey",
    "WatermarkLoss",
    "binomial_p_value",
    "calibrate_null",
    "clopper_pearson_upper",
    "count_target",
    "decide",
    "embed_watermark",
    "make_composites",
    "make_evasion",
    "min_norm_weights",
    "predict_labels",
    "verify_watermark",
]
