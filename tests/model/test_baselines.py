"""Classical risk baselines: recursions, no look-ahead, sensible quantiles (synthetic data, fast)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockops.model.baselines import BASELINES, ewma, ewma_variance, garch, log_har, walk_forward
from stockops.model.portable.risk_inputs import daily_inputs


def synthetic_ohlcv(start: str = "2017-01-02", end: str = "2019-12-31", seed: int = 0) -> pd.DataFrame:
    """Daily OHLCV whose volatility switches between calm and wild regimes (log-AR(1) variance)."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, end)
    n = len(dates)
    log_var = np.empty(n)
    log_var[0] = np.log(1e-4)
    for t in range(1, n):
        log_var[t] = np.log(1e-4) + 0.97 * (log_var[t - 1] - np.log(1e-4)) + 0.25 * rng.standard_normal()
    sigma = np.exp(log_var / 2)
    gap, intraday = 0.4 * sigma * rng.standard_normal(n), 0.9 * sigma * rng.standard_normal(n)
    close = 100 * np.exp(np.cumsum(gap + intraday))
    open_ = close * np.exp(-intraday)
    spread = np.exp(np.abs(sigma * rng.standard_normal(n)))
    return pd.DataFrame({"Date": dates, "Open": open_, "High": np.maximum(open_, close) * spread,
                         "Low": np.minimum(open_, close) / spread, "Close": close,
                         "Volume": rng.integers(1_000_000, 2_000_000, n)})


@pytest.fixture(scope="module")
def inputs() -> pd.DataFrame:
    return daily_inputs(synthetic_ohlcv()).iloc[1:].reset_index(drop=True)


def test_ewma_recursion_by_hand():
    # lam 0.9, h0 = 1e-4: h1 = 0.9e-4 + 0.1 * 1e-4 = 1e-4; h2 = 0.9e-4 + 0.1 * 4e-4 = 1.3e-4; h3 = 0.9 * 1.3e-4 = 1.17e-4
    np.testing.assert_allclose(ewma_variance(np.array([0.01, -0.02, 0.0]), lam=0.9, h0=1e-4), [1e-4, 1.3e-4, 1.17e-4])


def test_ewma_forecast_for_a_day_uses_the_day_before(inputs):
    f = ewma(inputs.iloc[:300], train_end=250)
    r = inputs["ret"].to_numpy()[:300]
    h = ewma_variance(r, 0.94, h0=float(np.mean(r[:250] ** 2)))
    assert len(f.variance) == 50
    assert f.variance[0] == pytest.approx(h[249]) and f.variance[-1] == pytest.approx(h[298])


def test_harx_gko_forecasts_less_variance_after_calmer_days(inputs):
    n, train_end = 700, 600
    calm, wild = inputs.iloc[:n].copy(), inputs.iloc[:n].copy()
    recent = slice(n - 23, n - 1)  # the 22 days that feed the forecast of the last day
    for frame, scale in ((calm, 0.2), (wild, 5.0)):
        frame.loc[recent, ["gk", "gko"]] = inputs.loc[recent, ["gk", "gko"]].to_numpy() * scale ** 2
        frame.loc[recent, "ret"] = inputs.loc[recent, "ret"].to_numpy() * scale
    calm_forecast, wild_forecast = log_har(calm, train_end), log_har(wild, train_end)
    # the days before the changed ones (and the fit, on training days only) are the same
    np.testing.assert_allclose(calm_forecast.variance[:n - 24 - train_end], wild_forecast.variance[:n - 24 - train_end])
    assert calm_forecast.variance[-1] < 0.2 * wild_forecast.variance[-1]


def test_garch_forecast_uses_no_future_data(inputs):
    train_end, t = 500, 520
    changed = inputs.iloc[:600].copy()
    changed.loc[t + 1:, "ret"] *= 3.0  # returns after day t
    before, after = garch(inputs.iloc[:600], train_end), garch(changed, train_end)
    same = t + 1 - train_end + 1  # targets train_end .. t + 1 (the forecast of t + 1 is made on day t)
    np.testing.assert_allclose(before.variance[:same], after.variance[:same])
    np.testing.assert_allclose(before.quantiles[:same], after.quantiles[:same])
    assert not np.allclose(before.variance[same:], after.variance[same:])  # the test would notice a leak


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_quantiles_do_not_cross(inputs, name):
    f = BASELINES[name](inputs.iloc[:650], 550)
    assert f.variance.shape == (100,) and np.all(f.variance > 0)
    assert np.all(np.diff(f.quantiles, axis=1) > 0)
    assert np.all(f.quantile(0.05) < 0) and np.all(f.quantile(0.95) > 0)


def test_walk_forward_covers_each_test_year():
    frame = synthetic_ohlcv(end="2018-12-31")
    w = walk_forward(frame, frame["Close"] * 2, years=[2018], models={"ewma": ewma})
    in_2018 = frame["Date"].dt.year.to_numpy() == 2018
    np.testing.assert_array_equal(w.dates, frame["Date"].to_numpy()[in_2018])
    np.testing.assert_allclose(w.returns, np.log(frame["Close"] / frame["Close"].shift(1)).to_numpy()[in_2018])
    assert len(w.forecasts["ewma"].variance) == in_2018.sum()
