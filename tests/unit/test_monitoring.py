"""The monitor's parts on the real GOOG series: features, Evidently drift, live error, the debounced decision."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from stockops.config import get_settings
from stockops.monitoring import (
    FEATURES,
    assess_drift,
    current_features,
    decide,
    last_trigger,
    live_error,
    monitor_features,
    served_forecasts,
)

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
    """The drifted list is ours, the share Evidently's: they must agree at any threshold."""
    for threshold in (0.2, 0.6, 1.5):
        drift, _ = assess_drift(window(features, CALM_REFERENCE), window(features, CALM_NEXT), threshold, 0.5)
        expected = [c for c in FEATURES if drift["distances"][c] >= threshold]
        assert drift["drifted_columns"] == expected
        assert drift["drift_share"] == pytest.approx(len(expected) / len(FEATURES))


# ---- live error --------------------------------------------------------------------------------
def test_live_error_prefers_served_forecasts_and_replays_the_rest(goog, tmp_path):
    frame = goog.iloc[:1074]  # up to 2008-11-20
    dates = frame["Date"].dt.strftime("%Y-%m-%d").to_numpy()
    closes = frame["Close"].to_numpy()
    log_path = tmp_path / "predictions.jsonl"
    served = {dates[-2]: closes[-2] * 1.01, dates[-3]: closes[-3] * 0.99}  # as_of -> forecast of the next day
    with open(log_path, "w") as out:
        for as_of, forecast in served.items():
            out.write(json.dumps({"as_of": as_of, "forecast": forecast, "model_version": "3"}) + "\n")
        out.write(json.dumps({"as_of": dates[-4], "forecast": 1.0, "model_version": "2"}) + "\n")  # not the champion
        out.write('{"as_of": "cut short by a cra')
    replayed = []

    def persistence_replay(ends):
        replayed.extend(ends.tolist())
        return closes[ends]

    error = live_error(frame, 10, "3", log_path, replay=persistence_replay)
    assert error["days"] == 10 and error["from_log"] == 2 and error["replayed"] == 8
    assert len(replayed) == 8 and len(frame) - 3 not in replayed  # the served days were not replayed
    assert error["last_day"] == "2008-11-20"
    ends = np.arange(len(frame) - 11, len(frame) - 1)
    forecasts = closes[ends].copy()
    forecasts[-1], forecasts[-2] = served[dates[-2]], served[dates[-3]]
    expected_rmse = np.sqrt(np.mean((forecasts - closes[ends + 1]) ** 2))
    assert error["rmse"] == pytest.approx(expected_rmse)
    assert error["persistence_rmse"] == pytest.approx(np.sqrt(np.mean((closes[ends] - closes[ends + 1]) ** 2)))
    assert error["persistence_ratio"] == pytest.approx(expected_rmse / error["persistence_rmse"])


def test_served_forecasts_without_a_log_is_empty(tmp_path):
    assert served_forecasts(tmp_path / "missing.jsonl", "1", {"2008-01-02"}) == {}


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
    from stockops import audit

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

    decision = run_monitor()
    assert decision["triggered"] is False
    assert decision["reason"].startswith("no champion yet")
    from stockops import audit

    (logged,) = audit.read(settings.monitor_log)
    assert logged["reason"] == decision["reason"] and logged["mlflow_run_id"] == decision["mlflow_run_id"]
