"""The one-sided binomial decision and the null calibration."""

from __future__ import annotations

import pytest
from scipy import stats

from modelshield.errors import ConfigError
from modelshield.watermark import VerifyConfig, binomial_p_value, calibrate_null, clopper_pearson_upper, decide


def test_p_value_is_the_binomial_tail() -> None:
    assert binomial_p_value(0, 1000, 0.01) == 1.0
    assert binomial_p_value(30, 1000, 0.01) == pytest.approx(sum(stats.binom.pmf(k, 1000, 0.01) for k in range(30, 1001)))
    # more hits, smaller p-value
    ps = [binomial_p_value(h, 1000, 0.05) for h in (40, 60, 80, 120)]
    assert ps == sorted(ps, reverse=True) and ps[-1] < 1e-10


def test_clopper_pearson_bound_covers_the_rate() -> None:
    assert clopper_pearson_upper(10, 1000) > 0.01
    assert clopper_pearson_upper(0, 1000) == pytest.approx(1 - 0.05 ** (1 / 1000))
    assert clopper_pearson_upper(5, 5) == 1.0


def test_calibration_takes_the_worst_model() -> None:
    cal = calibrate_null([("a", 2, 1000), ("b", 40, 1000), ("c", 0, 500)])
    assert cal.rate == pytest.approx(clopper_pearson_upper(40, 1000))
    assert cal.to_dict()["wsr"][1] == 0.04
    with pytest.raises(ConfigError):
        calibrate_null([])


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        VerifyConfig(alpha=0.0)
    with pytest.raises(ConfigError, match="samples"):
        VerifyConfig(samples=0)


def test_a_collapsed_model_is_negative() -> None:
    # the prior report's case: an 80%-pruned pirate predicting the target for everything (WSR 96.6%, WFPR 98.1%)
    p, verdict = decide(966, 1000, 981, 1000, 0.03, alpha=1e-3, wfpr_margin=VerifyConfig().wfpr_margin)
    assert p < 1e-100 and verdict is False
    # the same WSR with a low WFPR is positive; without the margin the collapsed model would be too
    assert decide(966, 1000, 30, 1000, 0.03, alpha=1e-3, wfpr_margin=0.3)[1] is True
    assert decide(966, 1000, 981, 1000, 0.03, alpha=1e-3, wfpr_margin=0.0)[1] is True
    # the gap must reach the margin; significance against r0 is still required
    assert decide(500, 1000, 210, 1000, 0.03, alpha=1e-3, wfpr_margin=0.3)[1] is False
    assert decide(500, 1000, 200, 1000, 0.03, alpha=1e-3, wfpr_margin=0.3)[1] is True
    assert decide(40, 1000, 0, 1000, 0.03, alpha=1e-3, wfpr_margin=0.0)[1] is False


def test_a_model_predicting_the_target_for_everything_is_not_watermarked() -> None:
    import torch

    from modelshield.data import TensorData
    from modelshield.watermark import WatermarkKey, verify_watermark

    key = WatermarkKey(0, 1, 2, 3, (1, 8, 8), jitter=1, offset=0, seed=0)
    data = TensorData(torch.rand(60, 1, 8, 8), torch.arange(60) % 3)
    report = verify_watermark(lambda x: torch.full((len(x),), 2), data, key,
                              config=VerifyConfig(samples=300, evasion_samples=300))
    assert report.wsr == 1.0 and report.wfpr == 1.0 and report.p_value < 1e-12 and not report.verdict
    assert "WSR must exceed it by 30 points" in report.to_markdown()


def test_margin_needs_evasion_samples() -> None:
    with pytest.raises(ConfigError, match="wfpr_margin > 0 needs evasion_samples"):
        VerifyConfig(evasion_samples=0)
    assert VerifyConfig(evasion_samples=0, wfpr_margin=0.0).wfpr_margin == 0.0
    with pytest.raises(ConfigError, match="wfpr_margin"):
        VerifyConfig(wfpr_margin=1.0)
