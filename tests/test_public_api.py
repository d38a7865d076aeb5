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
}


def test_all_is_pinned() -> None:
    assert set(modelshield.__all__) == EXPECTED


def test_every_public_name_resolves() -> None:
    for name in modelshield.__all__:
        assert getattr(modelshield, name) is not None
