"""The outside probe against the monitor: ``POST /predict`` with past ``as_of`` days and made-up closes once
turned its verdict from "live error 0.63x" into "retrain: 42x". The monitor now measures live error on the
platform's own forecasts only; what clients send is traffic.

One module-wide home with a real champion (the small profile, trained once on the replay's 2008-08-07 snapshot
of GOOG and the market reference QQQ; JPM is in the watchlist but never ingested). The forged requests are
written to the prediction log exactly as the bento writes its entries (tests/integration/test_serving.py reads
that format back from a live server); no bento runs here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stockops import registry
from stockops.contracts import MonitorRecord
from stockops.core import audit
from tests.integration.conftest import SMALL_WATCHLIST
from tests.integration.test_monitor_dag import CALM_DAY, make_champion

pytestmark = [pytest.mark.faults, pytest.mark.slow]

LATER_DAYS = ("2026-01-02", "2026-01-05", "2026-01-06")  # the replay's 2008-08-08, -11 and -12
VERDICT = ("triggered", "crossed", "live_rmse_ratio", "persistence_ratio", "drift_share", "live_error_source")


@pytest.fixture(scope="module")
def champion_home(tmp_path_factory):
    """Settings of a home whose champion (v1) was trained on the calm-day snapshots of GOOG and QQQ."""
    mp = pytest.MonkeyPatch()
    mp.setenv("STOCKOPS_HOME", str(tmp_path_factory.mktemp("trust") / "home"))
    mp.setenv("STOCKOPS_SOURCE", "replay")
    mp.setenv("STOCKOPS_TRAIN_PROFILE", "small")
    mp.setenv("STOCKOPS_TICKERS", SMALL_WATCHLIST)
    mp.setenv("STOCKOPS_MONITOR_MIN_FORECAST_DAYS", str(len(LATER_DAYS)))
    # three days of QLIKE are noise: the scorecard is checked here, the retrain it may call for is not the point
    mp.setenv("STOCKOPS_MONITOR_QLIKE_MARGIN", "10")
    # QQQ's summer 2008 really drifted from its training window (3 of 5 features); drift is not the point here
    mp.setenv("STOCKOPS_MONITOR_DRIFT_TICKERS_SHARE", "1")
    from stockops.core.settings import get_settings

    try:
        ingest(CALM_DAY)
        assert str(make_champion(get_settings())) == "1"
        yield get_settings()
    finally:
        mp.undo()


def ingest(day: str) -> None:
    from stockops.core.settings import get_settings
    from stockops.ingest import ingest_day

    settings = get_settings()
    for ticker in (settings.ticker, settings.market):
        ingest_day(day, ticker, settings=settings)


def forge_requests(settings, version: str) -> int:
    """The probe: one request per day of the monitor's window, ``as_of`` that day, closes 42x the real ones."""
    from stockops.data import store_for

    frame = store_for(settings).load()
    day = frame["Date"].dt.strftime("%Y-%m-%d").to_numpy()
    close = frame["Close"].to_numpy()
    settings.prediction_log.parent.mkdir(parents=True, exist_ok=True)
    with open(settings.prediction_log, "a") as log:
        for i in range(len(frame) - settings.monitor_current_days - 1, len(frame) - 1):
            log.write(json.dumps({
                "at": "2026-01-07T09:00:00.000+00:00", "ticker": settings.ticker, "as_of": day[i],
                "forecast_for": day[i + 1], "n_closes": 90, "last_close": 42 * close[i], "forecast": 42 * close[i],
                "q05": 40 * close[i], "q95": 44 * close[i], "volatility": 0.02, "model_version": version,
                "bento_tag": "goog_forecast:forged"}) + "\n")
    return settings.monitor_current_days


def verdict(decision: MonitorRecord) -> dict:
    return {k: getattr(decision, k) for k in VERDICT}


def test_scoring_the_watchlist_twice_records_each_forecast_once(champion_home):
    from stockops.monitoring.forecasts import score_watchlist

    first = score_watchlist(dag_run_id="first", settings=champion_home)
    again = score_watchlist(dag_run_id="retry", settings=champion_home)
    assert first.model_version == "1" and sorted(first.recorded) == ["GOOG", "QQQ"]
    assert first.skipped == {"JPM": "no published snapshot yet"}
    assert again.recorded == [] and sorted(again.already_recorded) == ["GOOG", "QQQ"]
    records = audit.read(champion_home.forecast_log)
    assert len(records) == 2 and {r["dag_run_id"] for r in records} == {"first"}
    goog = next(r for r in records if r["ticker"] == "GOOG")
    assert goog["as_of"] == "2008-08-07" and goog["forecast_for"] == "2008-08-08" and goog["model_version"] == "1"
    assert goog["quantiles"]["q05"] < goog["point"] < goog["quantiles"]["q95"] and goog["variance"] > 0
    assert goog["forecast"] == pytest.approx(goog["last_close"] * np.exp(goog["point"]))


def test_forged_requests_leave_the_verdict_alone_before_and_after_own_forecasts_take_over(champion_home):
    from stockops.data import store_for
    from stockops.monitoring import run_monitor
    from stockops.monitoring.forecasts import market_closes, market_series, score_watchlist
    from stockops.monitoring.live_error import replay_forecasts

    settings = champion_home
    # A fresh champion has no realized forecast of its own: the monitor replays it, and says so.
    score_watchlist(settings=settings)
    replayed = run_monitor(settings=settings, dry_run=True)
    assert replayed.live_error_source == "replay" and replayed.live_error["days"] == settings.monitor_current_days
    assert "from the champion replayed on the snapshot's last 60 days" in replayed.reason
    forged = forge_requests(settings, "1")
    probed = run_monitor(settings=settings, dry_run=True)
    assert verdict(probed) == verdict(replayed) and probed.reason == replayed.reason
    assert probed.traffic_requests == forged

    # Three trading days later, each scored as stock_monitor does after every ingest: the platform's own
    # forecasts of 08-08, 08-11 and 08-12 are realized, and live error is measured on them alone.
    for day in LATER_DAYS:
        ingest(day)
        score_watchlist(settings=settings)
    own = run_monitor(settings=settings, dry_run=True)
    assert own.live_error_source == "own" and own.live_error["days"] == 3
    assert [own.live_error["first_day"], own.live_error["last_day"]] == ["2008-08-08", "2008-08-12"]
    assert "from the platform's own forecasts of 3 days" in own.reason
    # the calibration scorecard joins every ticker's own forecasts (GOOG and QQQ, 3 days each) with what followed,
    # HARX-GKO on the same pairs
    card = own.scorecard
    assert card["status"] == "ok" and card["days"] == 3 and sorted(card["per_ticker"]) == ["GOOG", "QQQ"]
    assert card["pooled"]["pairs"] == 6 and card["pooled"]["harx_gko_pairs"] == 6
    assert [card["pooled"]["first_day"], card["pooled"]["last_day"]] == ["2008-08-08", "2008-08-12"]
    assert card["model_version"] == "1" and 0 <= card["pooled"]["coverage_90"] <= 1
    assert "QLIKE vs HARX-GKO" in own.reason and "≤ margin 10)" in own.reason
    assert registry.get_run(own.mlflow_run_id).data.metrics["scorecard_pairs"] == 6
    forged += forge_requests(settings, "1")
    probed = run_monitor(settings=settings, dry_run=True)
    assert verdict(probed) == verdict(own) and probed.live_error == own.live_error
    assert probed.scorecard == own.scorecard
    assert probed.traffic_requests == forged

    # The records are what the champion says on the published data, corrected by the online calibration state they
    # name: its replay on the same days, corrected with the record's factor and offsets, agrees.
    frame = store_for(settings).load()
    realized = [r for r in audit.read(settings.forecast_log) if r["ticker"] == settings.ticker][:3]
    ends = np.flatnonzero(frame["Date"].dt.strftime("%Y-%m-%d").isin([r["as_of"] for r in realized]))
    replay = replay_forecasts(registry.model_uri(settings.model_name, "1"), frame,
                              market_closes(market_series(settings), frame), ends)
    assert replay["forecast_for"].tolist() == [r["forecast_for"] for r in realized]
    np.testing.assert_allclose(replay["point"], [r["point"] for r in realized], rtol=1e-4, atol=1e-7)
    factor = np.array([r["calibration"]["variance_factor"] for r in realized])
    sd = np.sqrt([r["variance"] for r in realized])
    point = replay["point"].to_numpy()
    for level, q in ((1, "q05"), (2, "q25"), (4, "q75"), (5, "q95")):
        offset = np.array([r["calibration"]["quantile_offsets"][level] for r in realized])
        served = point + np.sqrt(factor) * (replay[q].to_numpy() - point) + sd * offset
        np.testing.assert_allclose(served, [r["quantiles"][q] for r in realized], rtol=1e-4, atol=1e-7)
