"""modelshield: protect trained PyTorch models against theft.

Example:
    >>> import modelshield
    >>> bundle = modelshield.load_dataset("digits")
    >>> model = modelshield.build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
    >>> modelshield.evaluate(model, bundle.test).total
    359
"""

from __future__ import annotations

from modelshield._version import __version__
from modelshield.attacks.extraction import build_attack, run_extraction
from modelshield.auth import AuthConfig, AuthKey, evaluate_auth
from modelshield.auth import embed as embed_auth
from modelshield.data import DatasetBundle, DatasetInfo, Normalization, TensorData, load_dataset, make_synthetic
from modelshield.defense import (
    ClientPolicy,
    ProtectedModel,
    QueenConfig,
    QueenDefense,
    QueenFitConfig,
    build_defense,
    fit_queen,
    load_queen_artifacts,
)
from modelshield.errors import (
    BudgetExceeded,
    ConfigError,
    DatasetNotFound,
    FormatError,
    IntegrityError,
    ModelShieldError,
)
from modelshield.keys import SecretKey, load_secret_key
from modelshield.lock import LockConfig, LockedModel, Passphrase, lock_model, lock_state_dict, unlock_model, unlock_state_dict
from modelshield.models import (
    Checkpoint,
    CheckpointMeta,
    build_model,
    load_checkpoint,
    save_checkpoint,
    state_dict_fingerprint,
)
from modelshield.oracle import CallableOracle, ModelOracle, Oracle
from modelshield.training import EvalResult, TrainConfig, TrainResult, evaluate, seed_everything, train_model

__all__ = [
    "AuthConfig",
    "AuthKey",
    "BudgetExceeded",
    "CallableOracle",
    "Checkpoint",
    "CheckpointMeta",
    "ClientPolicy",
    "ConfigError",
    "DatasetBundle",
    "DatasetInfo",
    "DatasetNotFound",
    "EvalResult",
    "FormatError",
    "IntegrityError",
    "LockConfig",
    "LockedModel",
    "ModelOracle",
    "ModelShieldError",
    "Normalization",
    "Oracle",
    "Passphrase",
    "ProtectedModel",
    "QueenConfig",
    "QueenDefense",
    "QueenFitConfig",
    "SecretKey",
    "TensorData",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "build_attack",
    "build_defense",
    "build_model",
    "embed_auth",
    "evaluate",
    "evaluate_auth",
    "fit_queen",
    "load_checkpoint",
    "load_dataset",
    "load_queen_artifacts",
    "load_secret_key",
    "lock_model",
    "lock_state_dict",
    "make_synthetic",
    "run_extraction",
    "save_checkpoint",
    "seed_everything",
    "state_dict_fingerprint",
    "train_model",
    "unlock_model",
    "unlock_state_dict",
]
from modelshield.watermark import VerifyReport, WatermarkConfig, WatermarkKey, embed_watermark, verify_watermark  # noqa: E402

__all__ += ["VerifyReport", "WatermarkConfig", "WatermarkKey", "embed_watermark", "verify_watermark"]
