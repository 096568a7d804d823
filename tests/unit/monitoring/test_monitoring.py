"""The monitor's parts on the real GOOG series: features, Evidently drift, the platform's own forecasts and the
live error measured on them (never on what clients send), the debounced decision."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from stockops.contracts import ForecastRecord
from stockops.core import audit
from stockops.core.settings import get_settings
from stockops.model.drift_features import FEATURES, current_features, monitor_features
from stockops.monitoring.decision import decide, last_trigger
from stockops.monitoring.drift import assess_drift
from stockops.monitoring.forecasts import (
    forecast_records,
    next_session,
    own_forecasts,
    record_forecasts,
    traffic_requests,
)
from stockops.monitoring.live_error import live_error

CALM_REFERENCE = ("2006-05-01", "2008-05-01")  # two years, training-window sized
CALM_NEXT = ("2008-05-01", "2008-07-25")  # the 59 trading days right after it
CRASH = ("2008-09-15", "2008-12-09")  # autumn 2008: Lehman to the December lows


@pytest.fixture(scope="module")
def features(goog):
    return monitor_features(goog)


def window(features, bounds):
    first, last = bounds
    return features[(features["Date"] >= first) & (features["Date"] < last)]


@pytest.fixture(scope="module")
def thresholds():
    return get_settings()


def test_features_are_scale_free_and_use_no_future(goog):
    features = monitor_features(goog)
    assert list(features.columns) == ["Date", *FEATURES]
    assert not features[list(FEATURES)].isna().any().any()
    # the first complete row needs the 50-day volume mean: day index 49
    assert features["Date"].iloc[0] == goog["Date"].iloc[49]
    # a day's features do not change when later days are cut off (no look-ahead)
    cut = monitor_features(goog.iloc[:1200])
    np.testing.assert_allclose(cut[list(FEATURES)].to_numpy(), features[list(FEATURES)].iloc[: len(cut)].to_numpy())
    # and a price level change (e.g. a split-adjusted series ×10) changes nothing
    scaled = goog.assign(**{c: goog[c] * 10 for c in ("Open", "High", "Low", "Close")})
    np.testing.assert_allclose(monitor_features(scaled)[list(FEATURES)].to_numpy(),
                               features[list(FEATURES)].to_numpy(), rtol=1e-9, atol=1e-12)


def test_current_features_refuses_a_window_longer_than_the_data(goog):
    with pytest.raises(ValueError, match="fewer than the 200 the monitor compares"):
        current_features(goog.iloc[:220], 200)
    assert len(current_features(goog, 60)) == 60


def test_autumn_2008_against_a_calm_reference_drifts(features, thresholds, tmp_path):
    drift, snapshot = assess_drift(window(features, CALM_REFERENCE), window(features, CRASH),
                                   thresholds.monitor_drift_threshold, thresholds.monitor_drift_share)
    assert drift["drift_share"] >= thresholds.monitor_drift_share
    assert {"log_return", "abs_return", "volatility_20d", "range_pct"} <= set(drift["drifted_columns"])
    assert drift["distances"]["volatility_20d"] > 2.0  # the crash is far outside the reference
    decision = decide(drift, None, thresholds)
    assert decision["triggered"] and decision["reason"].startswith("retrain: data drift")
    snapshot.save_html(str(tmp_path / "report.html"))
    assert "<html" in (tmp_path / "report.html").read_text()[:5000].lower()


@pytest.mark.parametrize("reference,current", [
    (CALM_REFERENCE, CALM_NEXT),
    (("2010-06-01", "2012-06-01"), ("2012-06-01", "2012-08-24")),
], ids=["2008-summer", "2012-summer"])
def test_adjacent_calm_windows_do_not_drift(features, thresholds, reference, current):
    drift, _ = assess_drift(window(features, reference), window(features, current),
                            thresholds.monitor_drift_threshold, thresholds.monitor_drift_share)
    assert drift["drift_share"] < thresholds.monitor_drift_share, drift
    decision = decide(drift, None, thresholds)
    assert not decision["triggered"] and decision["reason"].startswith("nothing crossed")


def test_evidently_counts_what_the_distances_say(features):
    """The drifted list and the share (and the report's plots, checked against Evidently's numbers) agree at any
    threshold."""
    for threshold in (0.2, 0.6, 1.5):
        drift, _ = assess_drift(window(features, CALM_REFERENCE), window(features, CALM_NEXT), threshold, 0.5)
        expected = [c for c in FEATURES if drift["distances"][c] >= threshold]
        assert drift["drifted_columns"] == expected
        assert drift["drift_share"] == pytest.approx(len(expected) / len(FEATURES))


# ---- the platform's own forecasts and the live error -----------------------------------------------
Z = {"q01": -2.326, "q05": -1.645, "q25": -0.674, "q50": 0.0, "q75": 0.674, "q95": 1.645, "q99": 2.326}
CALM_END = "2008-08-07"  # the replay's last day on 2026-01-01: a calm summer
HOLDOUT_RMSPE = 2.5  # % of price: about GOOG's daily move that summer


def own_record(frame, i: int, forecast: float, sigma: float = 0.025, version: str = "3") -> ForecastRecord:
    """What score_watchlist records for a forecast made on row ``i``'s close, for row ``i + 1``."""
    day = frame["Date"].dt.strftime("%Y-%m-%d").to_numpy()
    last = float(frame["Close"].iloc[i])
    point = math.log(forecast / last)
    return ForecastRecord(ticker="GOOG", as_of=day[i], forecast_for=day[i + 1], model_version=version,
                          snapshot_hash="abc", last_close=last, point=point, forecast=forecast,
                          quantiles={q: point + sigma * z for q, z in Z.items()}, variance=sigma**2,
                          made_at="2026-01-01T22:30:00+00:00")


def no_replay(ends):
    pytest.fail(f"the champion was replayed on {len(ends)} days although the platform's own forecasts cover them")


@pytest.fixture
def calm(goog):
    return goog[goog["Date"] <= CALM_END].reset_index(drop=True)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The settings of a fresh home (only its paths are used: no server, no registry)."""
    monkeypatch.setenv("STOCKOPS_HOME", str(tmp_path / "home"))
    return get_settings()


def test_live_error_comes_from_the_platforms_own_forecasts(goog, tmp_path):
    frame = goog.iloc[:1074]  # up to 2008-11-20
    closes = frame["Close"].to_numpy()
    n = len(frame)
    log_path = tmp_path / "forecasts.jsonl"
    record_forecasts(log_path, [own_record(frame, i, closes[i] * 1.01) for i in range(n - 11, n - 1)]
                     + [own_record(frame, n - 12, 1.0),  # outside the window
                        own_record(frame, n - 2, 1.0, version="2")])  # not the champion
    with open(log_path, "a") as out:
        out.write('{"ticker": "GOOG", "as_of": "cut short by a cra')
    error = live_error(frame, 10, own_forecasts(log_path, "GOOG", "3"), min_own_days=10, replay=no_replay)
    assert error["source"] == "own" and error["days"] == 10 and error["own_days"] == 10 and error["replayed"] == 0
    assert error["first_day"] == "2008-11-07" and error["last_day"] == "2008-11-20"
    assert error["basis"] == "the platform's own forecasts of 10 days"
    ends = np.arange(n - 11, n - 1)
    expected_rmse = np.sqrt(np.mean((closes[ends] * 1.01 - closes[ends + 1]) ** 2))
    assert error["rmse"] == pytest.approx(expected_rmse)
    assert error["persistence_rmse"] == pytest.approx(np.sqrt(np.mean((closes[ends] - closes[ends + 1]) ** 2)))
    assert error["persistence_ratio"] == pytest.approx(expected_rmse / error["persistence_rmse"])
    returns = np.log(closes[ends + 1] / closes[ends])
    point = math.log(1.01)
    for name, z in (("coverage_50", Z["q75"]), ("coverage_90", Z["q95"])):
        assert error[name] == pytest.approx(np.mean(np.abs(returns - point) <= 0.025 * z))


def test_too_few_own_forecasts_fall_back_to_the_replay_and_the_reason_says_so(calm, tmp_path):
    closes = calm["Close"].to_numpy()
    n = len(calm)
    log_path = tmp_path / "forecasts.jsonl"
    record_forecasts(log_path, [own_record(calm, i, closes[i]) for i in range(n - 4, n - 1)])
    replayed = []

    def persistence_replay(ends):
        replayed.extend(ends.tolist())
        day = calm["Date"].dt.strftime("%Y-%m-%d").to_numpy()
        return pd.DataFrame({"as_of": day[ends], "forecast_for": day[ends + 1], "last_close": closes[ends],
                             "point": 0.0, **{q: 0.025 * Z[q] for q in ("q05", "q25", "q75", "q95")}})

    error = live_error(calm, 20, own_forecasts(log_path, "GOOG", "3"), min_own_days=5, replay=persistence_replay)
    assert replayed == list(range(n - 21, n - 1)), "all days of the window are replayed, none mixed in"
    assert error["source"] == "replay" and error["days"] == error["replayed"] == 20 and error["own_days"] == 3
    assert error["persistence_ratio"] == pytest.approx(1.0)
    decision = decide(None, {**error, "rmse_ratio": error["rmspe"] / HOLDOUT_RMSPE}, get_settings())
    assert "from the champion replayed on the snapshot's last 20 days: only 3 of the platform's own forecasts " \
           "are realized there, fewer than 5" in decision["reason"]


def test_forged_client_requests_move_neither_the_live_error_nor_the_decision(calm, home):
    """The probe: POST /predict with past ``as_of`` days and made-up closes, as the endpoint logs them. The monitor
    counts them as traffic; own forecasts with a big error, on the other hand, do call for a retrain."""
    closes = calm["Close"].to_numpy()
    n, days = len(calm), home.monitor_current_days
    record_forecasts(home.forecast_log, [own_record(calm, i, closes[i]) for i in range(n - days - 1, n - 1)])

    def check(version: str = "3") -> tuple[dict, dict]:
        error = live_error(calm, days, own_forecasts(home.forecast_log, home.ticker, version),
                           home.monitor_min_forecast_days, replay=no_replay)
        error["rmse_ratio"] = error["rmspe"] / HOLDOUT_RMSPE
        return error, decide(None, error, home, now=datetime(2026, 1, 2, tzinfo=UTC))

    honest_error, honest = check()
    assert honest_error["source"] == "own" and not honest["triggered"], honest["reason"]
    day = calm["Date"].dt.strftime("%Y-%m-%d").to_numpy()
    forged = [{"at": "2026-01-02T10:00:00.000+00:00", "ticker": "GOOG", "as_of": day[i], "forecast_for": day[i + 1],
               "n_closes": 90, "last_close": 42 * closes[i], "forecast": 42 * closes[i], "q05": 40 * closes[i],
               "q95": 44 * closes[i], "volatility": 0.02, "model_version": "3", "bento_tag": "goog_forecast:x"}
              for i in range(n - days - 1, n - 1)]
    home.prediction_log.parent.mkdir(parents=True)
    home.prediction_log.write_text("".join(json.dumps(entry) + "\n" for entry in forged))
    assert check() == (honest_error, honest)
    assert traffic_requests(home.prediction_log, "3") == days and traffic_requests(home.prediction_log, "2") == 0

    # a champion (v4) whose own forecasts are far off
    record_forecasts(home.forecast_log, [own_record(calm, i, closes[i] * 1.2, version="4")
                                         for i in range(n - days - 1, n - 1)])
    wrong_error, wrong = check("4")
    assert wrong["triggered"] and wrong["live_rmse_ratio"] > 5, wrong["reason"]
    assert wrong["reason"].startswith("retrain: live error") and "from the platform's own forecasts" in wrong["reason"]


def test_a_forecast_is_recorded_once_per_ticker_day_and_version(calm, tmp_path):
    log_path = tmp_path / "forecasts.jsonl"
    first = [own_record(calm, i, 500.0) for i in (900, 901)]
    assert [e["as_of"] for e in record_forecasts(log_path, first)] == ["2008-03-18", "2008-03-19"]
    assert record_forecasts(log_path, [own_record(calm, 901, 600.0)]) == [], "a re-run of the same day adds nothing"
    assert len(record_forecasts(log_path, [own_record(calm, 901, 600.0, version="4")])) == 1  # a new champion's
    assert [e["event"] for e in audit.read(log_path)] == ["forecast"] * 3
    # A duplicate that got in anyway (two writers at once) counts once, the first one.
    audit.record(log_path, "forecast", **own_record(calm, 900, 700.0).to_record())
    table = own_forecasts(log_path, "GOOG", "3")
    assert table["as_of"].tolist() == ["2008-03-18", "2008-03-19"]
    assert table["last_close"].to_numpy() * np.exp(table["point"].to_numpy()) == pytest.approx([500.0, 500.0])


def test_next_session_skips_weekends_and_nyse_holidays():
    assert next_session("2008-08-07") == "2008-08-08"
    assert next_session("2008-08-08") == "2008-08-11"  # a Friday
    assert next_session("2008-07-03") == "2008-07-07"  # Independence Day on a Friday


def test_forecast_records_say_what_was_forecast_from_which_snapshot(calm):
    """The record's fields, from a stand-in for the champion (the real one: tests/faults/test_monitor_trust.py)."""
    def predict_frame(batch):
        assert set(batch["ticker"]) == {"GOOG"} and len(batch) == 50
        assert batch["Market"].tolist() == [7.0] * 50, "the market reference's closes ride along"
        return pd.DataFrame({"ticker": ["GOOG"], "point": [0.001], **{q: [0.001 + 0.02 * z] for q, z in Z.items()},
                             "variance": [0.0004], "volatility": [0.02], "last_close": [500.0],
                             "forecast_close": [500.5]})

    model = SimpleNamespace(calibration=SimpleNamespace(history=50), predict_frame=predict_frame)
    snapshot = SimpleNamespace(last_date=CALM_END, hash="h1")
    market = pd.Series(7.0, index=calm["Date"])
    records, skipped = forecast_records(model, {"GOOG": (snapshot, calm), "JPM": (snapshot, calm.iloc[:49])},
                                        market, "3", made_at="2026-01-01T22:30:00+00:00")
    assert skipped == {"JPM": "49 published days, the model needs 50"}
    (record,) = records
    assert record.to_record() == {"ticker": "GOOG", "as_of": "2008-08-07", "forecast_for": "2008-08-08", "model_version": "3",
                      "snapshot_hash": "h1", "last_close": 500.0, "point": 0.001, "forecast": 500.5,
                      "quantiles": {q: pytest.approx(0.001 + 0.02 * z) for q, z in Z.items()},
                      "variance": 0.0004, "made_at": "2026-01-01T22:30:00+00:00"}


# ---- the decision and its debounce ---------------------------------------------------------------
DRIFTED = {"drift_share": 0.8, "drifted_columns": ["log_return", "abs_return", "volatility_20d", "range_pct"]}
CALM = {"drift_share": 0.2, "drifted_columns": ["volatility_20d"]}
OK_ERROR = {"rmse_ratio": 0.9, "persistence_ratio": 1.0}


def test_each_threshold_triggers_on_its_own(thresholds):
    assert decide(DRIFTED, OK_ERROR, thresholds)["triggered"]
    high_error = decide(CALM, {"rmse_ratio": 1.6, "persistence_ratio": 1.0}, thresholds)
    assert high_error["triggered"] and "live error 1.60×" in high_error["reason"]
    losing = decide(CALM, {"rmse_ratio": 1.0, "persistence_ratio": 1.2}, thresholds)
    assert losing["triggered"] and "1.200× persistence" in losing["reason"]
    calm = decide(CALM, OK_ERROR, thresholds)
    assert not calm["triggered"] and calm["crossed"] == []
    assert set(calm) >= {"drift_share", "drifted_columns", "live_rmse_ratio", "persistence_ratio", "triggered",
                         "reason"}


def test_thresholds_come_from_the_settings(thresholds):
    strict = replace(thresholds, monitor_drift_share=0.2)
    assert not decide(CALM, OK_ERROR, thresholds)["triggered"]
    assert decide(CALM, OK_ERROR, strict)["triggered"]


def test_a_queued_or_running_training_run_blocks_the_trigger(thresholds):
    decision = decide(DRIFTED, OK_ERROR, thresholds, active_training_runs=1)
    assert not decision["triggered"]
    assert "stock_train already has 1 run(s) queued or running" in decision["reason"]
    assert decision["crossed"], "what crossed is still reported"


def test_a_second_drift_within_the_cool_down_does_not_trigger(thresholds, tmp_path):
    from stockops.core import audit

    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    log_path = tmp_path / "decisions.jsonl"
    assert last_trigger(log_path) is None
    first = decide(DRIFTED, OK_ERROR, thresholds, previous_trigger=last_trigger(log_path), now=now)
    assert first["triggered"]
    entry = audit.record(log_path, "monitor", **first)
    audit.record(log_path, "monitor", **decide(CALM, OK_ERROR, thresholds))  # a calm day in between
    assert last_trigger(log_path) == entry
    at = datetime.fromisoformat(entry["at"])
    soon = decide(DRIFTED, OK_ERROR, thresholds, previous_trigger=last_trigger(log_path),
                  now=at + timedelta(hours=thresholds.monitor_cooldown_h - 1))
    assert not soon["triggered"] and "cool-down" in soon["reason"]
    later = decide(DRIFTED, OK_ERROR, thresholds, previous_trigger=last_trigger(log_path),
                   now=at + timedelta(hours=thresholds.monitor_cooldown_h + 1))
    assert later["triggered"]


def test_no_champion_ends_green_without_a_trigger(settings):
    from stockops.monitoring import run_monitor

    decision = run_monitor(settings=settings)
    assert decision.triggered is False
    assert decision.reason.startswith("no champion yet")
    from stockops.core import audit

    (logged,) = audit.read(settings.monitor_log)
    assert logged["reason"] == decision.reason and logged["mlflow_run_id"] == decision.mlflow_run_id
    # the line holds what a check without a champion knows, no empty champion fields
    assert set(logged) == {"at", "event", "checked_at", "ticker", "dag_run_id", "dry_run", "drift_share",
                           "drifted_columns", "live_rmse_ratio", "persistence_ratio", "triggered", "reason", "crossed",
                           "debounced_by", "scorecard", "rollback", "mlflow_run_id"}
    assert decision.decision().rollback.propose is False and decision.decision().champion_version is None


# ---- the live calibration scorecard ---------------------------------------------------------------
SIGMA = 0.02  # the synthetic path's true daily volatility


def synthetic_path(seed: int, days: int = 500) -> pd.DataFrame:
    """OHLCV whose log returns are N(0, SIGMA²): a 30 % overnight gap share, a range consistent with it."""
    rng = np.random.default_rng(seed)
    gap = rng.normal(0, SIGMA * math.sqrt(0.09), days)
    intraday = rng.normal(0, SIGMA * math.sqrt(0.91), days)
    close = 100 * np.exp(np.cumsum(gap + intraday))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(gap)
    wick = np.abs(rng.normal(0, SIGMA / 2, (2, days)))
    return pd.DataFrame({"Date": pd.bdate_range("2024-01-02", periods=days), "Open": open_,
                         "High": np.maximum(open_, close) * np.exp(wick[0]),
                         "Low": np.minimum(open_, close) * np.exp(-wick[1]), "Close": close,
                         "Volume": rng.integers(1_000_000, 2_000_000, days).astype("float64")})


def scorecard_records(frames: dict, scale: float = 1.0, variance_scale: float = 1.0, days: int = 60,
                      version: str = "3") -> list[dict]:
    """Own records for each ticker's last ``days`` days: normal quantiles of ``scale * SIGMA``, variance
    ``variance_scale * SIGMA²`` (1, 1: the calibrated forecaster that knows the truth)."""
    out = []
    for ticker, frame in frames.items():
        day = frame["Date"].dt.strftime("%Y-%m-%d").to_numpy()
        for k in range(len(frame) - days, len(frame)):
            out.append({"ticker": ticker, "as_of": day[k - 1], "forecast_for": day[k], "model_version": version,
                        "last_close": float(frame["Close"].iloc[k - 1]), "point": 0.0,
                        "quantiles": {q: scale * SIGMA * z for q, z in Z.items()},
                        "variance": variance_scale * SIGMA**2})
    return out


@pytest.fixture(scope="module")
def paths():
    return {"AAA": synthetic_path(1), "BBB": synthetic_path(2)}


def test_a_calibrated_forecaster_scores_near_nominal_and_triggers_nothing(paths, thresholds):
    from stockops.monitoring.scorecard import calibration_scorecard

    records = scorecard_records(paths)
    noise = [{**records[0], "model_version": "2", "variance": 1.0},  # an earlier champion's
             {**records[-1], "as_of": "2025-12-01", "forecast_for": "2099-01-02"}]  # not realized yet
    card = calibration_scorecard(records + noise, paths, "3", days=60, min_days=20)
    pooled = card["pooled"]
    assert card["status"] == "ok" and card["days"] == 60 and pooled["pairs"] == 120
    assert set(card["per_ticker"]) == {"AAA", "BBB"} and card["per_ticker"]["AAA"]["pairs"] == 60
    assert pooled["coverage_50"] == pytest.approx(0.5, abs=0.1) and pooled["coverage_90"] == pytest.approx(0.9, abs=0.07)
    assert pooled["kupiec95_p"] > 0.01 and pooled["kupiec99_p"] > 0.01
    assert pooled["harx_gko_pairs"] == 120, "HARX-GKO is scored on the same (ticker, day) pairs"
    assert abs(pooled["qlike_minus_harx_gko"]) < 0.05
    returns = np.concatenate([np.diff(np.log(f["Close"].to_numpy()))[-60:] for f in paths.values()])
    assert pooled["coverage_90"] == pytest.approx(np.mean(np.abs(returns) <= SIGMA * Z["q95"]))
    decision = decide(CALM, OK_ERROR, thresholds, scorecard=card)
    assert not decision["triggered"], decision["reason"]
    assert "calibration: 99 % VaR breached on" in decision["reason"] and "QLIKE vs HARX-GKO" in decision["reason"]
    assert decision["scorecard"] is card
    json.dumps(card)  # plain data, written beside the decision


def test_an_overconfident_forecaster_is_rejected_by_kupiec_and_triggers(paths, thresholds):
    from stockops.monitoring.scorecard import calibration_scorecard

    card = calibration_scorecard(scorecard_records(paths, scale=1 / 3, variance_scale=1 / 9), paths, "3", 60, 20)
    pooled = card["pooled"]
    assert pooled["var99_breach_rate"] > 0.1 and pooled["kupiec99_p"] < 1e-6 and pooled["coverage_90"] < 0.6
    decision = decide(CALM, OK_ERROR, thresholds, scorecard=card)
    assert decision["triggered"]
    assert (f"calibration rejected: 99 % VaR breached on {pooled['var99_breaches']} of 120 ticker-days"
            in decision["reason"]) and "over 60 realized days" in decision["reason"]


def test_a_forecaster_losing_to_harx_gko_on_qlike_triggers(paths, thresholds):
    from stockops.monitoring.scorecard import calibration_scorecard

    card = calibration_scorecard(scorecard_records(paths, variance_scale=5.0), paths, "3", 60, 20)
    pooled = card["pooled"]
    assert pooled["qlike_minus_harx_gko"] > 0.5  # log 5 + 1/5 - 1 ≈ 0.81 nats/day in expectation
    decision = decide(CALM, OK_ERROR, thresholds, scorecard=card)
    assert decision["triggered"] and decision["reason"].startswith("retrain: losing to HARX-GKO: champion's QLIKE")
    assert f"({pooled['qlike_minus_harx_gko']:+.3f} nats/day > margin 0.05)" in decision["reason"]
    assert "calibration rejected" not in decision["reason"], "its quantiles are calibrated"
    lenient = replace(thresholds, monitor_qlike_margin=1.0)
    assert not decide(CALM, OK_ERROR, lenient, scorecard=card)["triggered"]


def test_too_few_realized_days_make_the_scorecard_insufficient_and_trigger_nothing(paths, thresholds):
    from stockops.monitoring.scorecard import calibration_scorecard

    card = calibration_scorecard(scorecard_records(paths, scale=1 / 3, days=10), paths, "3", 60, 20)
    assert card["status"] == "insufficient" and card["days"] == 10 and card["pooled"]["kupiec99_p"] < 0.01
    decision = decide(CALM, OK_ERROR, thresholds, scorecard=card)
    assert not decision["triggered"] and "calibration scorecard insufficient" in decision["reason"]
    assert "fewer than 20 days" in decision["reason"]
    empty = calibration_scorecard([], paths, "3", 60, 20)
    assert empty["status"] == "insufficient" and empty["pooled"] == {}
    assert not decide(CALM, OK_ERROR, thresholds, scorecard=empty)["triggered"]


def test_harx_gko_is_fitted_on_the_days_before_the_window_only(paths):
    from stockops.monitoring.scorecard import benchmark_forecasts

    frame = paths["AAA"]
    dates = frame["Date"].dt.strftime("%Y-%m-%d").tolist()
    table, fit = benchmark_forecasts(frame, dates[-60:])
    assert fit == f"fitted on 439 days through {dates[439]}" and table["forecast_for"].tolist() == dates[-60:]
    shocked = frame.copy()
    shocked.loc[len(frame) - 30:, ["High", "Close"]] *= 1.5  # the future changes...
    again, _ = benchmark_forecasts(shocked, dates[-60:])
    # ...not the forecasts made before it (the fit included)
    np.testing.assert_allclose(again["variance"].to_numpy()[:30], table["variance"].to_numpy()[:30])
    assert not np.allclose(again["variance"].to_numpy()[30:], table["variance"].to_numpy()[30:])
    short, why = benchmark_forecasts(frame.iloc[:300], dates[290:300])
    assert short is None and why == f"289 days before {dates[290]}, fewer than the 300 a fit needs"


# ---- the watchlist's drift in one Evidently report -------------------------------------------------
def test_every_tickers_drift_is_one_report_and_one_bad_ticker_alone_does_not_retrain(features, thresholds, tmp_path):
    from stockops.data.sources import shipped_series
    from stockops.monitoring.drift import assess_watchlist_drift

    ko = monitor_features(shipped_series("KO"))
    # KO's own calm pair (its summer 2008 was already restless: 3 of 5 features moved)
    references = {"GOOG": window(features, CALM_REFERENCE), "KO": window(ko, ("2009-06-01", "2012-06-01"))}
    assert len(references["GOOG"]) != len(references["KO"]), "tickers of different lengths share one table"
    calm_ko = window(ko, ("2012-06-01", "2012-08-24"))
    drift, snapshot = assess_watchlist_drift(references, {"GOOG": window(features, CRASH), "KO": calm_ko},
                                             thresholds.monitor_drift_threshold, thresholds.monitor_drift_share,
                                             thresholds.monitor_drift_tickers_share)
    assert drift["tickers_checked"] == ["GOOG", "KO"] and drift["drifted_tickers"] == ["GOOG"]
    assert drift["per_ticker"]["GOOG"]["drift_share"] >= thresholds.monitor_drift_share
    assert drift["per_ticker"]["KO"]["drifted"] is False and drift["drift_share"] == 0.5
    assert all(c.startswith("GOOG:") for c in drift["drifted_columns"])
    # one ticker's share is what the single-series check (the thresholds' bench) says on its own
    alone, _ = assess_drift(references["GOOG"], window(features, CRASH), thresholds.monitor_drift_threshold,
                            thresholds.monitor_drift_share)
    assert alone["distances"] == drift["per_ticker"]["GOOG"]["distances"]
    snapshot.save_html(str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    assert "GOOG:volatility_20d" in page and "KO:volatility_20d" in page, "both tickers in the one report"

    half = decide(drift, None, thresholds)
    assert half["triggered"], "1 of 2 tickers is the default share (0.5)"
    assert "1 of 2 tickers drifted (share 0.50 ≥ 0.50" in half["reason"] and "GOOG (" in half["reason"]
    strict = replace(thresholds, monitor_drift_tickers_share=0.6)
    calm = decide(drift, None, strict)
    assert not calm["triggered"] and "1 of 2 tickers drifted (share 0.50 < 0.60" in calm["reason"]


def test_drift_inputs_skip_tickers_the_champion_never_saw_and_read_old_references(features, goog):
    from stockops.monitoring.drift import drift_inputs

    reference = window(features, CALM_REFERENCE)
    frames = {"GOOG": goog, "NEW": goog.iloc[:-5]}
    refs, currents, skipped = drift_inputs(reference.assign(ticker="GOOG"), frames, 60, "GOOG")
    assert set(refs) == set(currents) == {"GOOG"} and "training window holds 0 days" in skipped["NEW"]
    old, _, _ = drift_inputs(reference, frames, 60, "GOOG")  # an older champion: the model ticker's alone
    assert list(old) == ["GOOG"] and len(old["GOOG"]) == len(reference)
    _, _, short = drift_inputs(reference.assign(ticker="GOOG"), {"GOOG": goog.iloc[:80]}, 60, "GOOG")
    assert "fewer than the 60 the monitor compares" in short["GOOG"]


# ---- the champion against the previous one: the rollback proposal -----------------------------------
def test_a_champion_clearly_worse_than_the_previous_one_is_proposed_for_rollback(paths, thresholds, tmp_path):
    from stockops.monitoring.decision import last_proposal, rollback_proposal
    from stockops.monitoring.scorecard import compare_versions

    previous = scorecard_records(paths, version="2")  # knows the truth
    worse = scorecard_records(paths, scale=3.0, variance_scale=9.0, version="3")
    comparison = compare_versions(previous + worse, paths, "3", "2", 60, 20)
    assert comparison["status"] == "ok" and comparison["pairs"] == 120 and comparison["days"] == 60
    assert comparison["qlike_gap"] > 0.5 and comparison["dm_qlike_t"] <= -2
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    proposal = rollback_proposal(comparison, thresholds, now=now)
    assert proposal["propose"] and (proposal["from_version"], proposal["to_version"]) == ("3", "2")
    assert proposal["reason"].startswith("rollback proposed: champion clearly worse than the previous one: v3's QLIKE")

    # the other way round, and on too few days: nothing is proposed
    better = compare_versions(previous + worse, paths, "2", "3", 60, 20)
    assert better["qlike_gap"] < 0 and not rollback_proposal(better, thresholds)["propose"]
    few = compare_versions(scorecard_records(paths, version="2", days=10) + worse, paths, "3", "2", 60, 20)
    assert few["status"] == "insufficient" and few["days"] == 10
    assert not rollback_proposal(few, thresholds)["propose"]
    assert not rollback_proposal(None, thresholds)["propose"], "no previous champion"

    # asked once: not while a proposal waits, not again within the cool-down for the same pair
    log_path = tmp_path / "decisions.jsonl"
    entry = audit.record(log_path, "monitor", rollback=proposal)
    assert last_proposal(log_path, comparison) == entry
    waiting = rollback_proposal(comparison, thresholds, active_proposals=1)
    assert not waiting["propose"] and waiting["clearly_worse"] and "still wait for an answer" in waiting["reason"]
    at = datetime.fromisoformat(entry["at"])
    soon = rollback_proposal(comparison, thresholds, previous_proposal=entry, now=at + timedelta(hours=1))
    assert not soon["propose"] and "cool-down" in soon["reason"]
    later = rollback_proposal(comparison, thresholds, previous_proposal=entry,
                              now=at + timedelta(hours=thresholds.monitor_cooldown_h + 1))
    assert later["propose"]


def test_report_folders_are_pruned_by_count_and_age_and_the_newest_stays(tmp_path):
    from stockops.monitoring import prune_reports, report_folders

    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    names = [f"{(now - timedelta(days=d)).strftime('%Y%m%dT%H%M%S%fZ')}-2026-05-29" for d in (200, 100, 30, 20, 10, 1)]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "decision.json").write_text("{}")
    (tmp_path / "decisions.jsonl").write_text("")
    (tmp_path / "notes").mkdir()  # not a report folder: left alone
    pruned = prune_reports(tmp_path, keep=4, keep_days=90, now=now)
    assert sorted(p.name for p in pruned) == sorted(names[:2])
    assert [p.name for p in report_folders(tmp_path)] == names[2:] and (tmp_path / "notes").is_dir()
    assert [p.name for p in prune_reports(tmp_path, keep=2, keep_days=90, now=now)] == names[2:4]
    assert [p.name for p in prune_reports(tmp_path, keep=5, keep_days=0.5, now=now)] == [names[4]]
    assert [p.name for p in report_folders(tmp_path)] == [names[5]], "the newest stays, however old"
    assert prune_reports(tmp_path, keep=1, keep_days=0, now=now + timedelta(days=9)) == []
