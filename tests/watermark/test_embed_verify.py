"""A watermarked tiny model (sklearn digits) carries the watermark; clean ones do not; the verdicts follow."""

from __future__ import annotations

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
    wm = _fresh(0)
    result = embed_watermark(wm, bundle.train, KEY, val=bundle.val,
                             config=WatermarkConfig(epochs=EPOCHS, batch_size=64, lr=3e-3), progress=False)
    return {"bundle": bundle, "wm": wm, "result": result, "clean_cal": _clean(1), "clean": _clean(2)}


def test_watermark_is_embedded_and_clean_models_lack_it(models: dict) -> None:  # type: ignore[type-arg]
    bundle, wm, result = models["bundle"], models["wm"], models["result"]
    assert result.scored_on == "val" and result.wsr >= 0.8 and len(result.mean_weights) == 3
    test_wsr = count_target(wm, bundle.test, KEY, samples=1000) / 1000
    clean_wsr = count_target(models["clean"], bundle.test, KEY, samples=1000) / 1000
    assert test_wsr >= 0.85, test_wsr
    assert clean_wsr <= 0.25, clean_wsr


@pytest.mark.xfail(strict=True, reason="known defect: the default embedding costs the digits model most of its accuracy "
                   "(validation: 32-79% vs ~95% clean depending on the MGDA mode); see docs/watermark.md")
def test_watermark_keeps_clean_accuracy(models: dict) -> None:  # type: ignore[type-arg]
    bundle = models["bundle"]
    assert evaluate(models["wm"], bundle.test).accuracy >= evaluate(models["clean"], bundle.test).accuracy - 0.06


def test_verdicts_with_a_calibrated_null(models: dict) -> None:  # type: ignore[type-arg]
    bundle = models["bundle"]
    cal = calibrate_null([("cal", count_target(models["clean_cal"], bundle.val, KEY, samples=1000), 1000)])
    config = VerifyConfig(samples=1000, evasion_samples=500)
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


def test_finetuning_an_existing_model_embeds_too(models: dict) -> None:  # type: ignore[type-arg]
    bundle = models["bundle"]
    model = _clean(3)
    before = count_target(model, bundle.val, KEY, samples=500) / 500
    r = embed_watermark(model, bundle.train, KEY, val=bundle.val,
                        config=WatermarkConfig.for_finetuning(epochs=15, lr=2e-3, batch_size=64), progress=False)
    assert r.wsr >= 0.8 > before + 0.3
