import modelshield

EXPECTED = {
    # AuthNet
    "AuthConfig", "AuthKey", "embed_auth", "evaluate_auth",
    "BudgetExceeded", "Checkpoint", "CheckpointMeta", "ConfigError", "DatasetBundle", "DatasetInfo", "DatasetNotFound",
    "EvalResult", "FormatError", "IntegrityError", "ModelShieldError", "Normalization", "SecretKey", "TensorData",
    "TrainConfig", "TrainResult", "__version__", "build_model", "evaluate", "load_checkpoint", "load_dataset",
    "load_secret_key", "make_synthetic", "save_checkpoint", "seed_everything", "state_dict_fingerprint", "train_model",
    # Deep-Lock
    "LockConfig", "LockedModel", "Passphrase", "lock_model", "lock_state_dict", "unlock_model", "unlock_state_dict",
    # extraction and QUEEN
    "CallableOracle", "ClientPolicy", "ModelOracle", "Oracle", "ProtectedModel", "QueenConfig", "QueenDefense", "QueenFitConfig", "build_attack", "build_defense", "fit_queen",
    "load_queen_artifacts", "run_extraction",
    # MEA-Defender watermark
    "VerifyReport", "WatermarkConfig", "WatermarkKey", "embed_watermark", "verify_watermark",
}


def test_all_is_pinned() -> None:
    assert set(modelshield.__all__) == EXPECTED


def test_every_public_name_is_documented_modelshield_api() -> None:
    """Each exported name resolves to an object defined in modelshield (not a re-exported third-party name) with a
    docstring, so ``help(modelshield.X)`` always says something."""
    undocumented, foreign = [], []
    for name in sorted(set(modelshield.__all__) - {"__version__"}):
        obj = getattr(modelshield, name)
        if not (getattr(obj, "__module__", "") or "").startswith("modelshield."):
            foreign.append(name)
        if not (obj.__doc__ or "").strip():
            undocumented.append(name)
    assert (foreign, undocumented) == ([], [])
    assert isinstance(modelshield.__version__, str) and modelshield.__version__.count(".") == 2
