"""Deep-Lock: every weight's bits locked with the AES S-box under key material expanded from one master key.

Lock a trained model so that a copied file is useless without the key, and unlock it bit-exactly with it.
The file format is specified in ``docs/lock-format.md``; the method in ``shared/specs/deep-lock.md``
(Alam et al., "Deep-Lock", arXiv 2008.05966).

Example:
    >>> import torch
    >>> from modelshield.keys import SecretKey
    >>> from modelshield.lock import LockConfig, lock_state_dict, unlock_state_dict
    >>> key = SecretKey.generate()
    >>> weights = {"fc.weight": torch.randn(4, 4, dtype=torch.float64)}
    >>> locked = lock_state_dict(weights, key, LockConfig(scheme="aes-expansion", rounds=2))
    >>> torch.equal(unlock_state_dict(locked, key)["fc.weight"], weights["fc.weight"])
    True
"""

from __future__ import annotations

from modelshield.lock.evaluation import LockedEvaluation, attacker_model, evaluate_locked
from modelshield.lock.locked import (
    LockConfig,
    LockedModel,
    LockKey,
    Passphrase,
    checkpoint_meta,
    is_locked_file,
    lock_model,
    lock_state_dict,
    unlock_model,
    unlock_state_dict,
)

__all__ = [
    "LockConfig",
    "LockedEvaluation",
    "LockKey",
    "LockedModel",
    "Passphrase",
    "attacker_model",
    "checkpoint_meta",
    "evaluate_locked",
    "is_locked_file",
    "lock_model",
    "lock_state_dict",
    "unlock_model",
    "unlock_state_dict",
]
