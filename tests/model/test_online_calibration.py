"""The online calibration: coverage back on target after a regime change, per ticker, a state that survives a
restart and never applies a day twice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from stockops.model.portable import forecaster
from stockops.model.portable.online_calibration import LEVELS, OnlineState, run_online

Z = stats.norm.ppf(LEVELS)


def test_levels_are_the_forecasters():
    assert LEVELS == forecaster.LEVELS


def _panel(days: int, tickers: int, sd, seed: int = 0):
    """Fat-tailed (t5) returns with the daily sd ``sd(day)``, and a model that always forecasts a 1 % sd, normal."""
    rng = np.random.default_rng(seed)
    scale = np.asarray([sd(d) for d in range(days)])[:, None]
    returns = rng.standard_t(5, (days, tickers)) / np.sqrt(5 / 3) * scale
    variance = np.full(days * tickers, 1e-4)
    forecast = {"variance": variance, "point": np.zeros(variance.size),
                "quantiles": np.sqrt(variance)[:, None] * Z[None, :]}
    dates = np.datetime64("2020-01-01") + np.repeat(np.arange(days), tickers).astype("timedelta64[D]")
    names = np.tile(np.array([f"T{i}" for i in range(tickers)]), days)
    return forecast, returns.ravel(), names, dates


def _coverage(out: dict, returns: np.ndarray, rows: np.ndarray) -> float:
    q = out["quantiles"][rows]
    return float(np.mean((returns[rows] >= q[:, 1]) & (returns[rows] <= q[:, 5])))


def test_coverage_returns_to_target_after_the_variance_quadruples():
    days, tickers = 900, 40
    forecast, returns, names, dates = _panel(days, tickers, lambda d: 0.01 if d < 300 else 0.02)
    out = run_online(OnlineState("1"), forecast, returns, names, dates)
    day = np.repeat(np.arange(days), tickers)
    raw = _coverage(forecast, returns, day >= 300)
    assert raw < 0.7  # the model's own intervals, at twice the sd they were made for (0.67)
    assert 0.87 <= _coverage(out, returns, day < 300) <= 0.93
    assert 0.87 <= _coverage(out, returns, (day >= 400)) <= 0.93  # ~0.905 measured
    shock = (day >= 300) & (day < 330)
    assert _coverage(out, returns, shock) > raw + 0.1  # the market-wide scale moves within days
    var99 = np.mean(returns[day >= 400] < out["quantiles"][day >= 400, 0])
    assert var99 < 0.02


def test_each_ticker_keeps_its_own_state():
    state = OnlineState("3")
    forecast = {"variance": np.array([1e-4, 1e-4]), "point": np.zeros(2), "quantiles": 1e-2 * np.vstack([Z, Z])}
    for day in range(1, 30):
        # A is under-forecast every day (a 5 % loss), B exactly calibrated (no move)
        state.update(f"2020-01-{day:02d}", ["A", "B"], [-0.05, 0.0], forecast["point"], forecast["variance"],
                     forecast["quantiles"])
    a, b = state.tickers["A"], state.tickers["B"]
    assert a.log_scale > b.log_scale
    assert a.offsets[0] < b.offsets[0]  # A's 1 % quantile moved down; B's up (no breach)
    adjusted = state.adjust(forecast, ["A", "B"])
    assert adjusted["variance"][0] > adjusted["variance"][1]
    assert np.all(np.diff(adjusted["quantiles"], axis=1) >= 0)
    alone = state.adjust({k: v[:1] for k, v in forecast.items()}, [None])  # a series of no known ticker
    assert alone["variance"][0] == pytest.approx(1e-4 * np.exp(state.market_log_scale))
    assert state.lineage("A")["scope"] == "ticker" and state.lineage("ZZZ")["scope"] == "market"
    assert state.lineage("A")["ticker_through"] == "2020-01-29"


def test_a_day_is_applied_once_and_in_order():
    state = OnlineState("1")
    args = (["A"], [0.03], [0.0], [1e-4], 1e-2 * Z[None, :])
    assert state.update("2020-01-02", *args) == 1
    before = state.to_json()
    assert state.update("2020-01-02", *args) == 0  # a re-run of the same day
    assert state.update("2020-01-01", *args) == 0  # an older day arriving late
    assert state.to_json() == before
    assert state.update("2020-01-03", ["A"], [np.nan], [0.0], [1e-4], 1e-2 * Z[None, :]) == 0  # not realised


def test_state_survives_a_restart(tmp_path):
    days, tickers = 120, 5
    forecast, returns, names, dates = _panel(days, tickers, lambda d: 0.015)
    whole = OnlineState("7")
    expected = run_online(whole, forecast, returns, names, dates)
    first = OnlineState("7")
    half = days // 2 * tickers
    part = lambda rows: {k: v[rows] for k, v in forecast.items()}  # noqa: E731
    a = run_online(first, part(slice(0, half)), returns[:half], names[:half], dates[:half])
    path = first.save(tmp_path / "state.json")
    restarted = OnlineState.load(path)  # a new process
    b = run_online(restarted, part(slice(half, None)), returns[half:], names[half:], dates[half:])
    assert np.array_equal(np.concatenate([a["variance"], b["variance"]]), expected["variance"])
    assert np.array_equal(np.concatenate([a["quantiles"], b["quantiles"]]), expected["quantiles"])
    assert restarted.to_json() | {"updated_at": None} == whole.to_json() | {"updated_at": None}
    assert not list(tmp_path.glob("*.partial"))


def test_a_torn_state_is_refused_with_its_path(tmp_path):
    path = OnlineState("1").save(tmp_path / "state.json")
    path.write_text(path.read_text()[:40])
    with pytest.raises(ValueError, match="state.json"):
        OnlineState.load(path)


@pytest.mark.parametrize("change", [{"market_log_scale": float("nan")}, {"market_log_scale": 9.0},
                                    {"tickers": {"A": {"log_scale": 0.0, "offsets": [0.0] * 3}}},
                                    {"tickers": {"A": {"log_scale": 0.0, "offsets": [7.0] * 7}}}])
def test_numbers_out_of_bounds_are_refused(tmp_path, change):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(OnlineState("1").to_json() | change))
    with pytest.raises(ValueError, match="state.json"):
        OnlineState.load(path)


def test_a_rate_this_code_does_not_know_is_left_out(tmp_path):
    data = OnlineState("1", market_log_scale=0.3).to_json()
    data["rates"]["residual_cap"] = 4.0  # written by an earlier version of the code
    path = tmp_path / "state.json"
    path.write_text(json.dumps(data))
    assert OnlineState.load(path).market_log_scale == 0.3
