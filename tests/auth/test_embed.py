"""AuthNet end to end on a tiny CNN: the keyed/unkeyed gap is real, and nothing but the tail changed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelshield.auth import AuthConfig, KeyGenConfig, embed
from modelshield.auth import AuthKey, independent_key
from modelshield.auth.evaluation import accuracy_with_key, evaluate_auth
from modelshield.errors import ConfigError
from modelshield.models import build_model
from modelshield.training import evaluate

from .conftest import Protected, tiny_cnn


def test_key_opens_the_model_and_plain_inputs_do_not(protected: Protected) -> None:
    clean_acc = evaluate(protected.clean, protected.test).accuracy
    report = evaluate_auth(protected.result.model, protected.result.key, protected.test, random_keys=3, seed=7, verify=True)
    assert clean_acc >= 0.95
    assert report.legit >= clean_acc - 0.05
    assert report.unauthorized <= 0.35  # 4 classes: chance is 0.25; the clean model scores >= 0.95 here
    assert report.legit - report.unauthorized >= 0.5
    assert report.random_mean is not None and report.random_mean <= 0.6


def test_evaluate_auth_refuses_a_key_of_another_model_unless_told(protected: Protected) -> None:
    key = protected.result.key
    with pytest.raises(ConfigError, match="fingerprint"):
        evaluate_auth(protected.clean, key, protected.test, random_keys=0)  # the clean model is not the protected one
    report = evaluate_auth(protected.clean, key, protected.test, random_keys=0, verify=False)  # measured on purpose
    assert report.legit >= 0.8
    unbound = AuthKey(key.mask_raw, key.offset, key.normalization, key.gate)
    with pytest.raises(ConfigError, match="not bound"):
        evaluate_auth(protected.result.model, unbound, protected.test, random_keys=0)


def test_independent_keys_follow_the_public_procedure_on_other_randomness(protected: Protected) -> None:
    result = protected.result
    config = AuthConfig(seed=0, key=KeyGenConfig(epochs=1))
    a, b = (independent_key(result.model, result.key, protected.train, config, seed=s) for s in (1, 2))
    again = independent_key(result.model, result.key, protected.train, config, seed=1)
    assert a == again and a != b and a != result.key
    assert a.gate == result.key.gate and len(a.bits) == len(result.key.bits) and a.model_fingerprint is None
    wide = AuthKey(result.key.mask_raw, result.key.offset, result.key.normalization, result.key.gate, bits=result.key.bits, theta=1.5)
    assert independent_key(result.model, wide, protected.train, config, seed=1).theta == 1.5, "the key's own key space"


def test_the_gap_comes_from_the_tail_training_not_from_the_key(protected: Protected) -> None:
    # the same key on the clean (unprotected) model changes little: the key is not what breaks plain inputs
    key = protected.result.key
    assert accuracy_with_key(protected.clean, key, protected.test) >= 0.8
    assert evaluate(protected.clean, protected.test).accuracy >= 0.95


def test_head_is_frozen_and_architecture_unchanged(protected: Protected) -> None:
    result = protected.result
    clean_state, new_state = protected.clean.state_dict(), result.model.state_dict()
    assert list(clean_state) == list(new_state)
    assert all(clean_state[k].shape == new_state[k].shape for k in clean_state)
    assert result.split.gate == "2" and result.split.head == ("0", "1", "2")
    for name in ("0.weight", "0.bias"):
        assert torch.equal(clean_state[name], new_state[name])
    assert not torch.equal(clean_state["6.weight"], new_state["6.weight"])
    assert all(p.requires_grad for p in result.model.parameters())  # flags restored


def test_key_is_bound_to_the_protected_model(protected: Protected) -> None:
    key = protected.result.key
    key.check_model(protected.result.model)
    with pytest.raises(ConfigError, match="fingerprint"):
        key.check_model(protected.clean)
    with pytest.raises(ConfigError, match="fingerprint"):
        key.bind(protected.clean)
    with pytest.raises(ConfigError, match="must have shape \\(N, 1, 12, 12\\)"):
        key.apply(torch.rand(2, 1, 8, 8))


def test_batchnorm_statistics_in_the_head_stay_frozen() -> None:
    from modelshield.data import make_synthetic

    data = make_synthetic(96, num_classes=3, image_size=12, seed=1)
    model = build_model("vgg", in_channels=1, image_size=12, num_classes=3, widths=(4, 8, 8))
    model.body.block1.bn1.running_mean.fill_(0.3)  # something training would move
    config = AuthConfig(tail_epochs=2, decoy_keys=0, decoy_ratio=0.5, num_bits=2, seed=0, key=KeyGenConfig(seed=0))
    result = embed(model, data[torch.arange(64)], data[torch.arange(64, 96)], config=config, progress=False)
    before, after = model.state_dict(), result.model.state_dict()
    assert result.split.gate == "body.block2"
    head = [k for k in before if k.startswith(("body.block1", "body.block2", "normalize"))]
    assert head and all(torch.equal(before[k], after[k]) for k in head)
    tail = [k for k in before if k.startswith(("body.block3", "body.fc1", "classifier"))]
    assert any(not torch.equal(before[k], after[k]) for k in tail)


def test_seeded_embedding_is_deterministic() -> None:
    from modelshield.data import make_synthetic

    data = make_synthetic(80, num_classes=3, image_size=12, seed=2)
    config = AuthConfig(gate="2", tail_epochs=1, decoy_keys=1, num_bits=1, seed=5, key=KeyGenConfig(seed=5))
    a = embed(tiny_cnn(classes=3), data[torch.arange(60)], data[torch.arange(60, 80)], config=config, progress=False)
    torch.manual_seed(0)
    model = tiny_cnn(classes=3)
    torch.manual_seed(0)
    model_again = tiny_cnn(classes=3)
    b = embed(model, data[torch.arange(60)], data[torch.arange(60, 80)], config=config, progress=False)
    c = embed(model_again, data[torch.arange(60)], data[torch.arange(60, 80)], config=config, progress=False)
    assert b.key == c.key and a.key.bits == b.key.bits


def test_embedding_rejects_bad_inputs() -> None:
    from modelshield.data import make_synthetic

    data = make_synthetic(40, num_classes=6, image_size=12, seed=0)
    with pytest.raises(ConfigError, match="labels go up to"):
        embed(tiny_cnn(classes=4), data[torch.arange(30)], data[torch.arange(30, 40)],
              config=AuthConfig(tail_epochs=1, seed=0), progress=False)
    with pytest.raises(ConfigError, match="not a module"):
        embed(tiny_cnn(classes=6), data[torch.arange(30)], data[torch.arange(30, 40)],
              config=AuthConfig(gate="body.pool9", tail_epochs=1, seed=0), progress=False)
    with pytest.raises(ConfigError, match="decoy_keys needs decoy_ratio"):
        AuthConfig(decoy_ratio=0.0, decoy_keys=2)
    with pytest.raises(ConfigError, match="gamma"):
        AuthConfig(gamma=0)


def test_works_for_other_class_counts_and_colour_inputs() -> None:
    from modelshield.data import make_synthetic

    data = make_synthetic(60, num_classes=7, channels=3, image_size=16, seed=3)
    model = build_model("resnet20", in_channels=3, image_size=16, num_classes=7)
    config = AuthConfig(gate="body.layer3.1", tail_epochs=1, decoy_keys=0, decoy_ratio=0.0, num_bits=2, train_images=40,
                        seed=0, key=KeyGenConfig(seed=0, batch_size=16))
    result = embed(model, data[torch.arange(48)], data[torch.arange(48, 60)], config=config, progress=False)
    assert result.split.gate == "body.layer3.1" and result.key.input_shape == (3, 16, 16)
    assert result.model(result.key.apply(data.x[:2])).shape == (2, 7)
    assert isinstance(result.model, nn.Module)


def test_the_architecture_recipe_fills_only_the_fields_left_open() -> None:
    from modelshield.auth import ARCHITECTURE_RECIPES, GENERIC_RECIPE
    from modelshield.data import make_synthetic

    assert AuthConfig().for_model(tiny_cnn()).tail_epochs == GENERIC_RECIPE["tail_epochs"], "not in the zoo: generic"
    assert AuthConfig(tail_epochs=2).for_model(build_model("resnet20", in_channels=1, image_size=8, num_classes=2)).tail_epochs == 2
    assert AuthConfig().for_model(tiny_cnn()).keyed_weight == GENERIC_RECIPE["keyed_weight"]
    assert AuthConfig(keyed_weight=3.0).for_model(build_model("resnet20", in_channels=1, image_size=8, num_classes=2)).keyed_weight == 3.0
    lenet = build_model("lenet5", in_channels=1, image_size=8, num_classes=2)
    assert AuthConfig().for_model(lenet).key.theta == ARCHITECTURE_RECIPES["LeNet5"]["key.theta"] != GENERIC_RECIPE["key.theta"]
    assert AuthConfig().for_model(tiny_cnn()).key.theta == GENERIC_RECIPE["key.theta"], "key fields fill in as the others"
    assert AuthConfig(key=KeyGenConfig(theta=0.7)).for_model(lenet).key.theta == 0.7, "an explicit theta wins"
    assert AuthConfig().for_model(lenet).tail_lr == ARCHITECTURE_RECIPES["LeNet5"]["tail_lr"] != GENERIC_RECIPE["tail_lr"]
    assert AuthConfig().for_model(tiny_cnn()).tail_lr == GENERIC_RECIPE["tail_lr"]
    assert AuthConfig(tail_lr=5e-4).for_model(lenet).tail_lr == 5e-4
    vgg = build_model("vgg", in_channels=1, image_size=8, num_classes=2)
    assert AuthConfig().for_model(vgg).decoy_keys == ARCHITECTURE_RECIPES["SmallVGG"]["decoy_keys"] != GENERIC_RECIPE["decoy_keys"]
    assert AuthConfig(decoy_ratio=0.0).for_model(vgg).decoy_keys == 0, "no decoy negatives: no decoy keys (the paper)"
    assert AuthConfig(decoy_keys=1).for_model(vgg).decoy_keys == 1
    with pytest.raises(ConfigError, match="tail_epochs"):
        AuthConfig(tail_epochs=0)
    data = make_synthetic(40, num_classes=3, image_size=8, seed=4)
    model = build_model("resnet20", in_channels=1, image_size=8, num_classes=3)
    config = AuthConfig(gate="body.layer3.1", decoy_keys=0, decoy_ratio=0.0, num_bits=2, seed=0, key=KeyGenConfig(seed=0, epochs=1))
    result = embed(model, data[torch.arange(32)], data[torch.arange(32, 40)], config=config, progress=False)
    epochs = ARCHITECTURE_RECIPES["ResNet20"]["tail_epochs"]
    assert result.config.tail_epochs == epochs and len(result.history) == epochs, "embedding ran the architecture's recipe"
    assert result.config.keyed_weight == ARCHITECTURE_RECIPES["ResNet20"]["keyed_weight"] != GENERIC_RECIPE["keyed_weight"]
    assert result.config == config.for_model(model), "the result records the configuration it ran with"


def test_distillation_term_blends_cross_entropy_and_the_teachers_soft_targets() -> None:
    import torch.nn.functional as F

    from modelshield.auth.embedding import _with_distillation

    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(4, 5, generator=gen)  # the first 4 inputs are the keyed ones
    logits = torch.randn(6, 5, generator=gen)
    index = torch.tensor([0, 3, 5, 1, 4, 2])  # positions 2 and 4 of the batch are negatives (inputs 5 and 4)
    labels = torch.randint(0, 5, (6,), generator=gen)
    ce = F.cross_entropy(logits, labels, reduction="none")
    config = AuthConfig(distill=0.25, distill_temperature=2.0)
    total = _with_distillation(ce, logits, index, teacher, config)
    keyed = torch.tensor([True, True, False, True, False, True])
    kl = F.kl_div(F.log_softmax(logits[keyed] / 2, dim=1), F.softmax(teacher[index[keyed]] / 2, dim=1), reduction="none").sum(1) * 4
    assert torch.allclose(total[keyed], 0.75 * ce[keyed] + 0.25 * kl, atol=1e-5)
    assert torch.equal(total[~keyed], ce[~keyed])  # the negatives keep their random-label loss


def test_distillation_runs_end_to_end_and_validates() -> None:
    from modelshield.data import make_synthetic

    data = make_synthetic(80, num_classes=4, image_size=12, seed=1)
    config = AuthConfig(gate="2", tail_epochs=1, decoy_keys=1, distill=0.5, seed=0, key=KeyGenConfig(epochs=1, seed=0))
    result = embed(tiny_cnn(), data[torch.arange(64)], data[torch.arange(64, 80)], config=config, progress=False)
    assert torch.isfinite(torch.tensor(result.history[0]["loss"]))
    with pytest.raises(ConfigError, match="distill"):
        AuthConfig(distill=1.5)
    with pytest.raises(ConfigError, match="distill"):
        AuthConfig(distill_temperature=0)
