"""HARX-GKO as a servable model: the champion while no LSTM passes the gate must forecast exactly what the gate
compared the candidate with, through the same interface as the LSTM (real shipped series, no network)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockops.data.sources import shipped_series
from stockops.model.baselines import fit_harx, holdout
from stockops.model.portable.forecaster import (
    HARX_GKO,
    WARMUP,
    HarxCalibration,
    HarxForecaster,
    feature_matrix,
    load_forecaster,
    read_calibration,
    windows,
)

TICKERS = ("GOOG", "BAC", "QQQ")


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {t: shipped_series(t).iloc[:1500].reset_index(drop=True) for t in TICKERS}


@pytest.fixture(scope="module")
def first_target(frames) -> np.datetime64:
    return np.datetime64(frames["GOOG"]["Date"].iloc[1300].date(), "D")


@pytest.fixture(scope="module")
def model(frames, first_target) -> HarxForecaster:
    return fit_harx(frames, first_target)


def served_forecasts(model: HarxForecaster, frame: pd.DataFrame, first_target, ticker: str | None) -> dict:
    """The model's forecasts of every day from ``first_target`` on, each from the feature row of the day before
    (what the bento, the monitor and the evaluation compute)."""
    dates = frame["Date"].to_numpy(dtype="datetime64[D]")
    ends = np.arange(int(np.searchsorted(dates, first_target)) - 1, len(frame) - 1)
    rows = windows(feature_matrix(frame), ends, model.calibration.window)
    return model.predict_windows(rows, None if ticker is None else np.full(len(ends), ticker, dtype=object))


def test_its_forecasts_are_the_gates_reference_to_the_bit(model, frames, first_target):
    for ticker, frame in frames.items():
        reference = holdout(frame, None, first_target).forecasts[HARX_GKO]
        served = served_forecasts(model, frame, first_target, ticker)
        np.testing.assert_array_equal(served["variance"], reference.variance)
        np.testing.assert_array_equal(served["quantiles"], reference.quantiles)
        assert (served["point"] == 0).all()  # a risk model: no view on the direction


def test_a_series_it_was_not_fitted_on_gets_the_pooled_fit(model, frames, first_target):
    pooled = served_forecasts(model, frames["BAC"], first_target, None)
    unknown = served_forecasts(model, frames["BAC"], first_target, "NVDA")
    own = served_forecasts(model, frames["BAC"], first_target, "BAC")
    np.testing.assert_array_equal(pooled["variance"], unknown["variance"])
    assert not np.allclose(pooled["variance"], own["variance"])  # BAC's own fit differs from the pooled one
    # the pooled fit is a real fit over every ticker's training days: its variance is of the right size
    realized = np.log(frames["BAC"]["Close"]).diff().to_numpy()[-len(pooled["variance"]):]
    assert 0.3 < np.mean(realized**2) / np.mean(pooled["variance"]) < 3
    assert model.calibration.pooled.days == sum(p.days for p in model.calibration.tickers.values())


def test_saved_and_loaded_as_its_kind(model, tmp_path, frames, first_target):
    folder = model.save(tmp_path / "baseline")
    assert isinstance(read_calibration(folder), HarxCalibration)
    loaded = load_forecaster(folder)
    assert isinstance(loaded, HarxForecaster) and loaded.kind == HARX_GKO
    assert loaded.calibration == model.calibration
    assert loaded.calibration.history == 1 + WARMUP and loaded.calibration.fitted_before == str(first_target)
    np.testing.assert_array_equal(served_forecasts(loaded, frames["GOOG"], first_target, "GOOG")["variance"],
                                  served_forecasts(model, frames["GOOG"], first_target, "GOOG")["variance"])


def test_the_pyfunc_contract_picks_each_series_fit(model, frames):
    need = model.calibration.history
    tails = pd.concat([frames[t].iloc[-need:].assign(ticker=t) for t in TICKERS], ignore_index=True)
    out = model.predict_frame(tails)
    assert out["ticker"].tolist() == list(TICKERS)
    for ticker in TICKERS:
        alone = model.predict_frame(frames[ticker].iloc[-need:].assign(ticker=ticker))
        assert out.loc[out["ticker"] == ticker, "variance"].item() == alone["variance"].item()
    row = out.iloc[0]
    assert row["q01"] < row["q05"] < row["q50"] < row["q95"] < row["q99"] and row["volatility"] > 0
    assert row["forecast_close"] == row["last_close"]  # point 0: the close is the point forecast
    with pytest.raises(ValueError, match="needs at least 24 daily OHLCV rows"):
        model.predict_frame(frames["GOOG"].iloc[-(need - 1):])


def test_a_ticker_with_too_little_history_is_served_by_the_pooled_fit(frames, first_target):
    short = {**frames, "NEW": frames["GOOG"].iloc[1000:].reset_index(drop=True)}  # 300 days before the holdout: few
    model = fit_harx(short, first_target)
    assert "NEW" not in model.calibration.tickers and set(TICKERS) <= set(model.calibration.tickers)
    with pytest.raises(ValueError, match="no ticker has 300 days"):
        fit_harx({"NEW": short["NEW"]}, first_target)
