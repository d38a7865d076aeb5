"""The one-sided binomial decision and the null calibration."""

from __future__ import annotations

import pytest
from scipy import stats

from modelshield.errors import ConfigError
from modelshield.watermark import VerifyConfig, binomial_p_value, calibrate_null, clopper_pearson_upper


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
