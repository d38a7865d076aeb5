"""A watermarked tiny model (sklearn digits) carries the watermark; clean ones do not; the verdicts follow."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from modelshield.data import load_dataset
from modelshield.defense import ClientPolicy, NoDefense, ProtectedModel
from modelshield.errors import ConfigError
from modelshield.models import build_model
from modelshield.oracle import ModelOracle
from modelshield.training import TrainConfig, evaluate, seed_everything, train_model
from modelshield.watermark import (
    VerifyConfig,
    WatermarkConfig,
    WatermarkKey,
    calibrate_null,
    count_target,
    embed_watermark,
    predict_labels,
    verify_watermark,
)

KEY = WatermarkKey.for_dataset("digits", seed=0)
EPOCHS = 30
# digits (839 training images of 8x8 pixels, 120 for validation) is far harder for the watermark than 28x28 images:
# an 8x8 evasion mix is nearly a composite. Larger shares, more steps and a 5-point tolerance (6 validation images).
CONFIG = WatermarkConfig(epochs=10, batch_size=64, lr=2e-3, watermark_fraction=0.2, evasion_fraction=0.2,
                         accuracy_tolerance=0.05)


def _fresh(seed: int) -> nn.Module:
    seed_everything(seed)
    return build_model("lenet5", in_channels=1, image_size=8, num_classes=10)


def _clean(seed: int) -> nn.Module:
    bundle = load_dataset("digits")
    model = _fresh(seed)
    train_model(model, bundle.train, config=TrainConfig(epochs=EPOCHS, batch_size=64, lr=3e-3, seed=seed), progress=False)
    return model


@pytest.fixture(scope="module")
def models() -> dict[str, object]:
    bundle = load_dataset("digits")
    clean = _clean(0)
    wm = copy.deepcopy(clean)
    result = embed_watermark(wm, bundle.train, KEY, val=bundle.val, config=CONFIG, progress=False)
    return {"bundle": bundle, "wm": wm, "result": result, "clean0": clean, "clean_cal": _clean(1), "clean": _clean(2)}


def test_watermark_is_embedded_and_clean_models_lack_it(models: dict) -> None:  # type: ignore[type-arg]
    bundle, wm, result = models["bundle"], models["wm"], models["result"]
    assert result.scored_on == "val" and result.wsr >= 0.5 and result.mean_weights == ()
    test_wsr = count_target(wm, bundle.test, KEY, samples=1000) / 1000
    clean_wsr = count_target(models["clean"], bundle.test, KEY, samples=1000) / 1000
    assert test_wsr >= 0.5, test_wsr
    assert clean_wsr <= 0.2, clean_wsr


def test_watermark_keeps_clean_accuracy(models: dict) -> None:  # type: ignore[type-arg]
    bundle, result = models["bundle"], models["result"]
    clean_val = evaluate(models["clean0"], bundle.val).accuracy
    assert result.reference_accuracy == pytest.approx(clean_val)
    scores = [h["score"] for h in result.history]
    assert scores[result.best_epoch - 1] == max(scores)
    eligible = [h for h in result.history if h["score"] >= 2.0]  # eligible epochs score 2 + WSR - WFPR, others their accuracy
    assert eligible, "no epoch within the tolerance: the test's settings no longer embed without an accuracy cost"
    assert result.clean_accuracy >= clean_val - CONFIG.accuracy_tolerance - 1e-9  # the selection's constraint
    assert evaluate(models["wm"], bundle.test).accuracy >= evaluate(models["clean0"], bundle.test).accuracy - 0.06


def test_two_gradient_mgda_keeps_the_utility_weight_above_its_floor(models: dict) -> None:  # type: ignore[type-arg]
    bundle = models["bundle"]
    model = copy.deepcopy(models["clean0"])
    r = embed_watermark(model, bundle.train, KEY, val=bundle.val,
                        config=WatermarkConfig(epochs=2, batch_size=64, lr=2e-3, mgda="head", utility_floor=0.6),
                        progress=False)
    assert len(r.mean_weights) == 2 and r.mean_weights[0] >= 0.6 - 1e-6 and sum(r.mean_weights) == pytest.approx(1.0)


def test_verdicts_with_a_calibrated_null(models: dict) -> None:  # type: ignore[type-arg]
    bundle = models["bundle"]
    cal = calibrate_null([("cal", count_target(models["clean_cal"], bundle.val, KEY, samples=1000), 1000)])
    config = VerifyConfig(samples=1000, evasion_samples=500, wfpr_margin=0.15)  # 8x8: see CONFIG
    positive = verify_watermark(models["wm"], bundle.test, KEY, config=config, null=cal)
    negative = verify_watermark(models["clean"], bundle.test, KEY, config=config, null=cal)
    assert positive.verdict and positive.p_value < 1e-6
    assert not negative.verdict and negative.p_value > config.alpha
    assert positive.wfpr is not None and positive.wfpr < positive.wsr
    assert "watermarked" in positive.to_markdown() and positive.to_dict()["hits"] == positive.hits


def test_oracle_and_callables_give_the_same_labels(models: dict) -> None:  # type: ignore[type-arg]
    bundle, wm = models["bundle"], models["wm"]
    x = bundle.test.x[:300]
    direct = predict_labels(wm, x)
    oracle = ModelOracle(ProtectedModel(wm, NoDefense()), policy=ClientPolicy(output="label"))
    assert torch.equal(predict_labels(oracle, x, batch_size=64), direct)
    assert oracle.queries == 300
    as_numpy = lambda b: wm(b).detach().numpy()  # noqa: E731
    assert torch.equal(predict_labels(as_numpy, x), direct)
    labels_only = lambda b: np.asarray(wm(b).argmax(1))  # noqa: E731
    assert torch.equal(predict_labels(labels_only, x), direct)
    with pytest.raises(ConfigError, match=r"expected \(3,\) labels or \(3, K\) scores"):
        predict_labels(lambda b: torch.zeros(2), x[:3])


def test_from_scratch_embeds_too(models: dict) -> None:  # type: ignore[type-arg]
    bundle = models["bundle"]
    model = _fresh(3)
    r = embed_watermark(model, bundle.train, KEY, val=bundle.val, reference_accuracy=0.9,
                        config=WatermarkConfig.from_scratch(epochs=EPOCHS, lr=3e-3, batch_size=64), progress=False)
    assert r.reference_accuracy == 0.9 and r.wsr >= 0.6
    assert any(h["score"] >= 2.0 for h in r.history)  # some epoch within the tolerance of the given reference
    assert r.clean_accuracy >= 0.9 - WatermarkConfig().accuracy_tolerance - 1e-9


def test_source_target_share_makes_the_target_the_sources_runner_up(models: dict) -> None:  # type: ignore[type-arg]
    bundle = models["bundle"]
    sources = bundle.val.x[(bundle.val.y == KEY.source_a) | (bundle.val.y == KEY.source_b)]

    def target_mass(share: float) -> tuple[float, float]:
        model = copy.deepcopy(models["clean0"])
        config = replace(CONFIG, epochs=5, source_target_share=share)
        embed_watermark(model, bundle.train, KEY, val=bundle.val, config=config, progress=False)
        with torch.no_grad():
            p = torch.softmax(model.eval()(sources), dim=1)
        others = p.clone()
        others[:, [KEY.source_a, KEY.source_b]] = 0
        # the mean probability of y_t, and how often y_t is the most likely class after the two sources
        return float(p[:, KEY.target].mean()), float((others.argmax(1) == KEY.target).float().mean())

    plain, shaped = target_mass(0.0), target_mass(0.4)
    assert shaped[0] > plain[0] + 0.1, (plain, shaped)
    assert shaped[1] > plain[1], (plain, shaped)


def test_source_target_share_soft_labels_and_bounds() -> None:
    from modelshield.watermark.composites import SourcePool
    from modelshield.watermark.embedding import WatermarkLoss

    loss = WatermarkLoss(SourcePool(load_dataset("digits").train, KEY), KEY, WatermarkConfig(source_target_share=0.25))
    y = torch.tensor([KEY.source_a, KEY.source_b, KEY.target, 9 if KEY.target != 9 else 8])
    t = loss._clean_targets(y, 10)
    assert t[0, KEY.source_a] == pytest.approx(0.75) and t[0, KEY.target] == pytest.approx(0.25)
    assert t[1, KEY.source_b] == pytest.approx(0.75) and t[1, KEY.target] == pytest.approx(0.25)
    assert torch.equal(t[2:], torch.nn.functional.one_hot(y[2:], 10).float())  # other classes keep one-hot labels
    assert torch.allclose(t.sum(1), torch.ones(4))
    for bad in (-0.1, 0.5):
        with pytest.raises(ConfigError, match="source_target_share"):
            WatermarkConfig(source_target_share=bad)
