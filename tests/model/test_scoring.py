"""Risk scores against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from stockops.model.scoring import (
    LEVELS,
    RiskForecast,
    coverage,
    date_average,
    diebold_mariano,
    kupiec,
    newey_west_variance,
    pinball,
    qlike,
    score,
    score_panel,
    var_breach_rate,
)

# one row of quantiles at LEVELS (1, 5, 25, 50, 75, 95, 99 %), in log-return units
ROW = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]) / 100


def flat(variance: float, point: np.ndarray) -> RiskForecast:
    n = len(point)
    return RiskForecast(np.full(n, variance), np.tile(ROW, (n, 1)), np.asarray(point, dtype=np.float64))


def test_qlike_in_percent_units():
    # h = 1e-4 -> 1 %^2, r = 1 % -> log 1 + 1/1 = 1;  h = 4e-4 -> 4, r = 2 % -> log 4 + 4/4;  r = 0 -> log 1 + 0
    got = qlike(np.array([1e-4, 4e-4, 1e-4]), np.array([0.01, -0.02, 0.0]))
    np.testing.assert_allclose(got, [1.0, np.log(4) + 1, 0.0])


def test_pinball_of_a_known_case():
    # levels 10 / 90 %, quantiles -1 % / +1 %.  r = +2 %: 0.1 * (2 + 1) = 0.3 and 0.9 * (2 - 1) = 0.9 -> mean 0.6
    # r = -2 %: (0.1 - 1) * (-2 + 1) = 0.9 and (0.9 - 1) * (-2 - 1) = 0.3 -> 0.6;  r = 0: 0.1 * 1, 0.1 * 1 -> 0.1
    q = np.array([[-0.01, 0.01]] * 3)
    np.testing.assert_allclose(pinball(q, np.array([0.02, -0.02, 0.0]), levels=(0.1, 0.9)), [0.6, 0.6, 0.1])


def test_coverage_and_breaches():
    r = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert coverage(np.full(5, -1.0), np.full(5, 1.0), r) == pytest.approx(3 / 5)  # bounds count as inside
    assert var_breach_rate(np.full(5, -1.0), r) == pytest.approx(1 / 5)  # only a return strictly below breaches


def test_kupiec_against_hand_computed_lr():
    # 2 breaches in 100 days at p = 5 %: LR = -2 [98 ln .95 + 2 ln .05 - (98 ln .98 + 2 ln .02)]
    #   = -2 [(-5.02675 - 5.99146) - (-1.97987 - 7.82405)] = -2 (-11.01821 + 9.80391) = 2.42859
    lr, p = kupiec(2, 100, 0.05)
    assert lr == pytest.approx(2.42859, abs=1e-4)
    assert p == pytest.approx(0.11914, abs=1e-4)
    assert kupiec(5, 100, 0.05) == pytest.approx((0.0, 1.0))  # exactly the expected rate
    assert kupiec(0, 100, 0.01)[0] == pytest.approx(-200 * np.log(0.99))  # 0 breaches: 2.01007
    assert kupiec(10, 10, 0.5)[0] == pytest.approx(-20 * np.log(0.5))  # every day a breach: 13.86294


def test_newey_west_variance():
    x = np.array([0.3, -1.2, 2.5, 0.1, -0.7])
    assert newey_west_variance(x, lags=0) == pytest.approx(np.var(x) / len(x))
    # x = 1, -1, 1, -1: gamma0 = 1, gamma1 = -3/4, Bartlett weight 1/2 -> (1 + 2 * 0.5 * -0.75) / 4 = 0.0625
    assert newey_west_variance(np.array([1.0, -1.0, 1.0, -1.0]), lags=1) == pytest.approx(0.0625)


def test_diebold_mariano_positive_when_a_is_better():
    # d = loss_b - loss_a = 1, 2, 1, 2: mean 1.5, variance of the mean 0.25 / 4 -> t = 1.5 / 0.25 = 6
    a, b = np.zeros(4), np.array([1.0, 2.0, 1.0, 2.0])
    t, p = diebold_mariano(a, b, lags=0)
    assert t == pytest.approx(6.0)
    assert p < 1e-6
    assert diebold_mariano(b, a, lags=0)[0] == pytest.approx(-6.0)
    # the same model twice (a retrain on the same data with the same seed): no difference, not NaN
    assert diebold_mariano(b, b.copy())[0] == 0.0


def test_date_average():
    dates = np.array(["2020-01-03", "2020-01-02", "2020-01-03", "2020-01-02"], dtype="datetime64[D]")
    unique, mean = date_average(np.array([1.0, 2.0, 3.0, 4.0]), dates)
    np.testing.assert_array_equal(unique, np.array(["2020-01-02", "2020-01-03"], dtype="datetime64[D]"))
    np.testing.assert_allclose(mean, [3.0, 2.0])


def test_score_of_a_small_forecast():
    r = np.array([0.02, 0.01, 0.0, 0.01])
    s = score(flat(1e-4, np.array([0.01, -0.01, 0.0, 0.01])), r)
    assert s["qlike"] == pytest.approx((4 + 1 + 0 + 1) / 4)  # h = 1 %^2: log 1 + r%^2
    assert s["coverage_50"] == pytest.approx(1 / 4)  # only r = 0 lies in [-0.5 %, 0.5 %]
    assert s["coverage_90"] == pytest.approx(3 / 4)  # 2 % lies above 1 %
    assert s["var95_breaches"] == 0.0 and s["var99_breaches"] == 0.0
    assert s["kupiec95_p"] == pytest.approx(kupiec(0, 4, 0.05)[1])
    # errors in %: -1, -2, 0, 0 -> sqrt(5/4); persistence (0): 2, 1, 0, 1 -> sqrt(6/4)
    assert s["rmse"] == pytest.approx(np.sqrt(1.25))
    assert s["rmse_ratio"] == pytest.approx(np.sqrt(5 / 6))
    # hit, miss (wrong sign), no hit (point 0, although r is 0 too), hit
    assert s["directional_accuracy"] == pytest.approx(0.5)
    assert s["days"] == 4


def test_score_panel_prefers_the_true_variance():
    rng = np.random.default_rng(0)
    days, tickers = 300, ("A", "B")
    sigma = np.tile(np.where(np.arange(days) % 50 < 25, 0.005, 0.03), len(tickers))
    r = sigma * rng.standard_normal(len(sigma))
    z = np.array([-2.326, -1.645, -0.674, 0.0, 0.674, 1.645, 2.326])

    def normal(s: np.ndarray) -> RiskForecast:
        return RiskForecast(s ** 2, s[:, None] * z[None, :], np.zeros_like(s))

    panel = score_panel({"const": normal(np.full_like(sigma, sigma.mean())), "true": normal(sigma)}, r,
                        np.repeat(tickers, days), np.tile(np.arange(days), len(tickers)), reference="const")
    assert set(panel["const"]["by_ticker"]) == set(tickers) and "qlike_ratio" not in panel["const"]
    assert panel["true"]["qlike_ratio"] < 1
    assert panel["true"]["dm_qlike_vs_const"] > 2 and panel["true"]["dm_pinball_vs_const"] > 2
    assert panel["true"]["pooled"]["days"] == 2 * days


def test_risk_forecast_checks_shapes():
    with pytest.raises(ValueError, match="shapes disagree"):
        RiskForecast(np.ones(3), np.zeros((3, len(LEVELS) - 1)), np.zeros(3))
    with pytest.raises(ValueError, match="shapes disagree"):
        RiskForecast(np.ones(3), np.zeros((3, len(LEVELS))), np.zeros(2))
