"""The model zoo, its registry, and safe checkpoint I/O."""

from modelshield.models.checkpoint import (
    Checkpoint,
    CheckpointMeta,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    state_dict_fingerprint,
)
from modelshield.models.registry import MODEL_REGISTRY, build_model
from modelshield.models.zoo import LeNet5, Normalize, ResNet20, SmallVGG, ZooModel

__all__ = [
    "MODEL_REGISTRY",
    "Checkpoint",
    "CheckpointMeta",
    "LeNet5",
    "Normalize",
    "ResNet20",
    "SmallVGG",
    "ZooModel",
    "build_model",
    "load_checkpoint",
    "read_checkpoint_meta",
    "save_checkpoint",
    "state_dict_fingerprint",
]
