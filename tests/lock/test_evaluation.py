"""A locked model is useless: a real (tiny) model trained on digits drops to chance as-is and under wrong keys,
and comes back exactly with the right key."""

from __future__ import annotations

import pytest
import torch

from modelshield.data import load_dataset
from modelshield.keys import SecretKey
from modelshield.lock import LockConfig, lock_model
from modelshield.lock.evaluation import attacker_model, evaluate_locked, nonfinite_fraction
from modelshield.models import CheckpointMeta, build_model
from modelshield.training import TrainConfig, evaluate, predict_logits, seed_everything, torch_threads, train_model

CHANCE = 0.10


@pytest.fixture(scope="module")
def trained():
    bundle = load_dataset("digits")
    seed_everything(0)
    model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10, normalization=bundle.info.normalization)
    with torch_threads(1):  # tiny batches: one thread is faster, and robust on a busy machine
        train_model(model, bundle.train, config=TrainConfig(epochs=15, batch_size=64, lr=3e-3, seed=0), progress=False)
    meta = CheckpointMeta.for_model("lenet5", in_channels=1, image_size=8, num_classes=10, dataset="digits",
                                    normalization=bundle.info.normalization)
    return model.eval(), meta, bundle


@pytest.mark.parametrize("scheme", ["ctr", "aes-expansion"])
def test_locked_model_is_at_chance_and_unlocks_exactly(trained, scheme) -> None:
    model, meta, bundle = trained
    original = evaluate(model, bundle.test)
    assert original.accuracy > 0.85  # the model really learned something
    key = SecretKey(bytes(range(32)))
    locked = lock_model(model, key, LockConfig(scheme), meta=meta)

    unlocked = evaluate_locked(locked, bundle.test, key=key)
    assert unlocked.view == "unlocked" and unlocked.correct == original.correct and unlocked.nonfinite_weights == 0.0

    as_is = evaluate_locked(locked, bundle.test)
    assert as_is.view == "as-is"
    assert as_is.accuracy <= CHANCE + 0.05, as_is
    assert as_is.nonfinite_weights > 0.0  # random bit patterns include NaN/Inf exponents

    wrong = [evaluate_locked(locked, bundle.test, key=SecretKey(bytes([i]) * 32), verify=False) for i in range(1, 11)]
    accuracies = [w.accuracy for w in wrong]
    assert all(w.view == "unverified" for w in wrong)
    assert sum(accuracies) / len(accuracies) <= CHANCE + 0.05, accuracies
    assert max(accuracies) <= CHANCE + 0.10, accuracies


def test_unlocked_logits_are_bit_identical(trained) -> None:
    model, meta, bundle = trained
    key = SecretKey.generate()
    from modelshield.lock import unlock_model

    restored = unlock_model(lock_model(model, key, meta=meta), key)
    assert torch.equal(predict_logits(restored, bundle.test.x), predict_logits(model, bundle.test.x))


def test_attacker_model_holds_the_locked_bits(trained) -> None:
    model, meta, _ = trained
    locked = lock_model(model, SecretKey.generate(), meta=meta)
    thief = attacker_model(locked, model)
    state = thief.state_dict()
    assert nonfinite_fraction(state) > 0.0
    assert not torch.equal(state["classifier.weight"], model.state_dict()["classifier.weight"])
    assert thief is not model and torch.isfinite(model.state_dict()["classifier.weight"]).all()
