import pytest
import torch

from modelshield.data import make_synthetic
from modelshield.errors import ConfigError
from modelshield.models import build_model
from modelshield.training import TrainConfig, evaluate, score_logits, seed_everything, train_model


def _model(classes=4):
    seed_everything(0)
    return build_model("lenet5", in_channels=1, image_size=8, num_classes=classes)


def _data():
    full = make_synthetic(600, num_classes=4, seed=5)
    return full[:400], full[400:500], full[500:]


def test_training_learns_and_is_deterministic() -> None:
    train, val, test = _data()
    config = TrainConfig(epochs=4, batch_size=32, lr=3e-3, seed=1)
    a = _model()
    before = evaluate(a, test).accuracy
    train_model(a, train, val=val, config=config, progress=False)
    b = _model()
    train_model(b, train, val=val, config=config, progress=False)
    assert evaluate(a, test).accuracy > max(0.9, before + 0.3)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


def test_early_stopping_keeps_best_epoch() -> None:
    train, val, _ = _data()
    result = train_model(_model(), train, val=val, config=TrainConfig(epochs=30, batch_size=32, lr=3e-3, patience=2), progress=False)
    assert result.epochs_run < 30
    assert result.val_accuracy == max(h["val_accuracy"] for h in result.history)
    assert result.epochs_run - result.best_epoch == 2


def test_soft_targets_train_towards_the_given_distribution() -> None:
    train, _, test = _data()
    targets = torch.nn.functional.one_hot(train.y, 4).float() * 0.9 + 0.025
    model = _model()
    train_model(model, train, soft_targets=targets, config=TrainConfig(epochs=4, batch_size=32, lr=3e-3), progress=False)
    assert evaluate(model, test).accuracy > 0.9
    with pytest.raises(ConfigError, match="soft_targets"):
        train_model(model, train, soft_targets=targets[:5], progress=False)


def test_frozen_parameters_do_not_move() -> None:
    train, _, _ = _data()
    model = _model()
    for p in model.body.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in model.body.state_dict().items()}
    train_model(model, train, config=TrainConfig(epochs=1, batch_size=64), progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.body.state_dict().items())


def test_nonfinite_rows_score_wrong() -> None:
    logits = torch.tensor([[float("nan")] * 3, [float("inf"), 0.0, 0.0], [0.0, 1.0, 0.0]])
    result = score_logits(logits, torch.tensor([0, 0, 1]))
    assert (result.correct, result.nonfinite) == (1, 2)


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"lr": -1.0}, {"optimizer": "rmsprop"}, {"schedule": "linear"},
                                    {"augment": "mixup"}, {"patience": 0}])
def test_config_validation(kwargs) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(**kwargs)


def test_shift_augmentation_is_an_integer_translation() -> None:
    from modelshield.training import _augment

    x = torch.rand(6, 1, 10, 10)
    out = _augment(x, "shift", torch.Generator().manual_seed(0))
    assert torch.equal(_augment(x, "none", torch.Generator()), x)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        windows = [padded[i, :, 2 + dy : 12 + dy, 2 + dx : 12 + dx] for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(torch.equal(out[i], w) for w in windows)
