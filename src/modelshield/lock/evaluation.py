"""Evaluate a locked model as its holder would: with the key, with a wrong key, or as-is (the thief's view).

"As-is" loads the locked bytes reinterpreted as weights of the declared dtypes into the architecture (what
a thief who copied the file can run). Outputs with any NaN/Inf logit are scored as wrong predictions
(:func:`modelshield.training.score_logits`), so ``argmax`` of NaN never lands on the right class by luck.

Example:
    >>> import torch
    >>> from modelshield.data import make_synthetic
    >>> from modelshield.keys import SecretKey
    >>> from modelshield.lock import lock_model
    >>> from modelshield.models import build_model
    >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=4)
    >>> locked = lock_model(model, SecretKey.generate())
    >>> result = evaluate_locked(locked, make_synthetic(64, num_classes=4, seed=0), model=model)
    >>> result.view, result.nonfinite_rows + result.correct <= result.total
    ('as-is', True)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from modelshield.data.types import TensorData
from modelshield.lock.locked import LockedModel, LockKey, build_locked_architecture, load_into
from modelshield.training import evaluate

__all__ = ["LockedEvaluation", "attacker_model", "evaluate_locked", "nonfinite_fraction"]


@dataclass(frozen=True)
class LockedEvaluation:
    """Accuracy of one view of a locked model.

    Attributes:
        view: ``unlocked`` (right key, MAC checked), ``unverified`` (a key used with the MAC check bypassed,
            e.g. a wrong key), or ``as-is`` (locked bits used as weights, no key).
        accuracy: correct / total; rows with a non-finite logit count as wrong.
        correct: correct predictions.
        total: samples.
        nonfinite_rows: samples whose logits held NaN or Inf.
        nonfinite_weights: fraction of the floating weights that are NaN or Inf in the evaluated model.
    """

    view: str
    accuracy: float
    correct: int
    total: int
    nonfinite_rows: int
    nonfinite_weights: float


def nonfinite_fraction(state_dict: dict[str, torch.Tensor]) -> float:
    """Fraction of floating elements that are NaN or Inf.

    Example:
        >>> nonfinite_fraction({"a": torch.tensor([1.0, float("nan")]), "n": torch.tensor(3)})
        0.5
    """
    bad = total = 0
    for tensor in state_dict.values():
        if tensor.is_floating_point():
            bad += int((~torch.isfinite(tensor)).sum())
            total += tensor.numel()
    return bad / total if total else 0.0


def attacker_model(locked: LockedModel, model: nn.Module | None = None) -> nn.Module:
    """The architecture loaded with the locked bits as weights (a copy of ``model`` if given; eval mode)."""
    target = copy.deepcopy(model) if model is not None else build_locked_architecture(locked)
    return load_into(target, locked.attacker_state_dict(), locked.source)


def evaluate_locked(locked: LockedModel, data: TensorData, *, key: LockKey | None = None, model: nn.Module | None = None,
                    verify: bool = True, batch_size: int = 1024) -> LockedEvaluation:
    """Accuracy of a locked model on ``data``, unlocked with ``key`` or (without a key) as-is.

    Args:
        locked: the locked model.
        data: images and labels.
        key: the key to unlock with; None evaluates the locked bits as weights.
        model: the module to load into (copied, never modified); default: rebuilt from the file's metadata.
        verify: check the MAC when a key is given. ``False`` measures what any key (e.g. a wrong one) produces;
            it is for evaluation only.
        batch_size: evaluation batch size.

    Raises:
        IntegrityError: ``verify`` and the key is wrong or the file was modified.
    """
    if key is None:
        state, view = locked.attacker_state_dict(), "as-is"
    else:
        state, view = locked.unlock(key, verify=verify), "unlocked" if verify else "unverified"
    target = copy.deepcopy(model) if model is not None else build_locked_architecture(locked)
    load_into(target, state, locked.source)
    with torch.no_grad():
        result = evaluate(target, data, batch_size=batch_size)
    return LockedEvaluation(view, result.accuracy, result.correct, result.total, result.nonfinite, nonfinite_fraction(state))
