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
    train_model(model, (train.x, targets), config=TrainConfig(epochs=4, batch_size=32, lr=3e-3), progress=False)
    assert evaluate(model, test).accuracy > 0.9
    with pytest.raises(ConfigError, match="one target per sample"):
        train_model(model, (train.x, targets[:5]), progress=False)


def test_compose_adds_samples_and_the_loss_sees_them() -> None:
    train, _, _ = _data()
    seen: list[tuple[int, int, int]] = []

    def compose(x, y, generator):
        assert isinstance(generator, torch.Generator)
        extra = torch.rand(x.shape, generator=generator)  # e.g. composites with a fixed label 0
        return torch.cat([x, extra]), torch.cat([y, torch.zeros_like(y)]), len(x)

    def loss(model, batch):
        x, y, sampled = batch
        seen.append((len(x), len(y), sampled))
        return torch.nn.functional.cross_entropy(model(x), y)

    result = train_model(_model(), train, config=TrainConfig(epochs=2, batch_size=64), compose=compose, loss=loss,
                         progress=False)
    assert len(seen) == 2 * 7  # ceil(400 / 64) steps per epoch
    assert all(n == m == 2 * sampled for n, m, sampled in seen)
    assert sum(s for _, _, s in seen) == 2 * len(train)
    assert result.scores == [] and result.best_score is None and result.best_epoch == 2


def test_select_restores_the_best_epoch_and_records_the_scores() -> None:
    train, _, _ = _data()
    script = iter([0.1, 0.7, 0.7, 0.2, 0.3])
    snapshots = []

    def select(model):
        assert not model.training and not torch.is_grad_enabled()
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(script)

    model = _model()
    result = train_model(model, train, config=TrainConfig(epochs=5, batch_size=64, lr=3e-3), select=select, progress=False)
    assert result.scores == [0.1, 0.7, 0.7, 0.2, 0.3]
    assert (result.best_epoch, result.best_score, result.epochs_run) == (2, 0.7, 5)  # ties keep the earlier epoch
    assert [h["score"] for h in result.history] == result.scores
    kept = model.state_dict()
    assert all(torch.equal(kept[k], snapshots[1][k]) for k in kept)
    assert not all(torch.equal(kept[k], snapshots[-1][k]) for k in kept)


def test_select_with_patience_stops_early() -> None:
    train, _, _ = _data()
    script = iter([0.5, 0.9, 0.4, 0.4, 0.95, 0.99])
    result = train_model(_model(), train, config=TrainConfig(epochs=6, batch_size=64, patience=2),
                         select=lambda m: next(script), progress=False)
    assert (result.epochs_run, result.best_epoch, result.best_score) == (4, 2, 0.9)


def test_params_trains_only_the_given_parameters() -> None:
    train, _, _ = _data()
    model = _model()
    head = list(model.classifier.parameters())
    frozen_before = {k: v.clone() for k, v in model.body.state_dict().items()}
    head_before = [p.detach().clone() for p in head]
    train_model(model, train, config=TrainConfig(epochs=2, batch_size=64, lr=3e-3), params=head, progress=False)
    assert all(torch.equal(frozen_before[k], v) for k, v in model.body.state_dict().items())  # bit-identical
    assert all(not torch.equal(a, p) for a, p in zip(head_before, head))
    assert all(p.requires_grad for p in model.parameters())  # restored after the run


def test_params_keeps_frozen_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 4))
    train, _, _ = _data()
    stats = model[1].running_mean.clone()
    train_model(model, train, config=TrainConfig(epochs=1, batch_size=64), params=model[3].parameters(), progress=False)
    assert torch.equal(model[1].running_mean, stats)
    train_model(model, train, config=TrainConfig(epochs=1, batch_size=64), progress=False)
    assert not torch.equal(model[1].running_mean, stats)


def test_multistep_schedule_decays_at_the_milestones() -> None:
    from modelshield.training import _scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = _scheduler(opt, TrainConfig(epochs=4, schedule="multistep", milestones=(0.5, 0.75), gamma=0.1), 10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[19] == 1.0 and lrs[20] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.01)


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
                                    {"augment": "mixup"}, {"patience": 0},
                                    {"milestones": (0.5, 1.0)}])
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
