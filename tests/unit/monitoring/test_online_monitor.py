"""The monitor keeps the champion's online calibration: realised days applied once and in order, from the champion's
own records only, per ticker; a state of another version or a torn one replaced by a neutral one; and the champion's
recorded forecasts corrected by the state, each naming it (as the bento serves them)."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from stockops.core import audit, pointers
from stockops.core.settings import make_settings
from stockops.model.portable.online_calibration import LEVELS, OnlineState
from stockops.monitoring.online import online_summary, quantile_names, update_online_calibration
from stockops.registry.online_states import load_state, save_state

Z = (-2.326, -1.645, -0.674, 0.0, 0.674, 1.645, 2.326)  # per LEVELS
DAYS = pd.bdate_range("2024-03-04", periods=8)
ISO = [d.strftime("%Y-%m-%d") for d in DAYS]


def frame(closes) -> pd.DataFrame:
    return pd.DataFrame({"Date": DAYS[:len(closes)], "Close": np.asarray(closes, dtype=np.float64)})


def record(ticker: str, i: int, close: float, sigma: float, version: str = "2", role: str | None = "champion") -> dict:
    """A forecast-log entry made on day ``i``'s close for day ``i + 1``."""
    entry = {"ticker": ticker, "as_of": ISO[i], "forecast_for": ISO[i + 1], "model_version": version,
             "last_close": close, "point": 0.0, "variance": sigma**2, "forecast": close,
             "quantiles": {q: sigma * z for q, z in zip(quantile_names(), Z, strict=True)}}
    return entry if role is None else {**entry, "role": role}


@pytest.fixture
def home(tmp_path):
    return make_settings(home=tmp_path / "home", tickers="AAA,BBB", ticker="AAA")


@pytest.fixture
def frames():
    rng = np.random.default_rng(4)
    return {"AAA": frame(100 * np.exp(np.cumsum(rng.normal(0, 0.03, len(DAYS))))),
            "BBB": frame(50 * np.exp(np.cumsum(rng.normal(0, 0.01, len(DAYS)))))}


def forecast_log(frames, last: int, sigma: float = 0.01) -> list[dict]:
    """Both tickers' champion forecasts made on days 0..``last`` (the last one's day not in the frames)."""
    return [record(t, i, float(f["Close"].iloc[i]) if i < len(f) else 1.0, sigma)
            for i in range(last + 1) for t, f in frames.items()]


def by_hand(frames, records, days: list[int], version: str = "2") -> OnlineState:
    """What applying target days ``days`` (frame rows) day by day from the records gives."""
    state = OnlineState(model_version=version)
    for i in days:
        rows = [e for e in records if e["forecast_for"] == ISO[i] and e.get("role") != "shadow"]
        rows = [e for e in rows if e["ticker"] in frames and len(frames[e["ticker"]]) > i]
        state.update(ISO[i], [e["ticker"] for e in rows],
                     [math.log(frames[e["ticker"]]["Close"].iloc[i] / e["last_close"]) for e in rows],
                     [e["point"] for e in rows], [e["variance"] for e in rows],
                     [[e["quantiles"][q] for q in quantile_names()] for e in rows])
    return state


def test_realised_days_are_applied_in_order_once_and_survive_a_restart(home, frames):
    published = {t: f.iloc[:5] for t, f in frames.items()}  # days 0..4: targets 1..4 realised, 5 not yet
    records = forecast_log(frames, 4)
    # a shadow record of the same version, logged first, is another role's: never applied
    records.insert(0, {**record("AAA", 0, 1.0, 0.5), "role": "shadow"})
    state = update_online_calibration(settings=home, version="2", records=records, frames=published)
    expected = by_hand(published, records, [1, 2, 3, 4])
    assert (state.days, state.through) == (4, ISO[4])
    assert state.market_log_scale == pytest.approx(expected.market_log_scale)
    assert {t: s.log_scale for t, s in state.tickers.items()} == pytest.approx(
        {t: s.log_scale for t, s in expected.tickers.items()})
    assert state.market_log_scale > 0.1, "AAA moves 3 % a day against a forecast of 1 %: the scale goes up"
    assert load_state(home.online_calibration_path) == state

    stamp = pointers.stamp(home.online_calibration_path)
    again = update_online_calibration(settings=home, version="2", records=records, frames=published)
    assert again == state and pointers.stamp(home.online_calibration_path) == stamp, "a re-run adds nothing"

    # the next day realised: only it is applied, after the rest
    later = update_online_calibration(settings=home, version="2", records=forecast_log(frames, 5),
                                      frames={t: f.iloc[:6] for t, f in frames.items()})
    assert (later.days, later.through) == (5, ISO[5])
    assert later.market_log_scale == pytest.approx(by_hand(frames, records + forecast_log(frames, 5)[-2:],
                                                           [1, 2, 3, 4, 5]).market_log_scale)


def test_only_the_tickers_with_outcomes_move(home, frames):
    published = {"AAA": frames["AAA"].iloc[:4], "BBB": frames["BBB"].iloc[:1]}  # BBB's days not published yet
    state = update_online_calibration(settings=home, version="2", records=forecast_log(frames, 3), frames=published)
    assert set(state.tickers) == {"AAA"} and state.tickers["AAA"].days == 3 and state.through == ISO[3]
    assert state.lineage("BBB")["scope"] == "market" and state.lineage("BBB")["ticker_days"] == 0
    # BBB's outcomes of those days, published late, are dropped (the state's days come in order)
    late = update_online_calibration(settings=home, version="2", records=forecast_log(frames, 3),
                                     frames={t: f.iloc[:4] for t, f in frames.items()})
    assert late == state


def test_another_versions_state_is_replaced_by_a_neutral_one(home, frames, caplog):
    old = OnlineState(model_version="1", market_log_scale=0.9)
    save_state(old, home.online_calibration_path)
    with caplog.at_level(logging.INFO, logger="stockops.monitoring.online"):
        state = update_online_calibration(settings=home, version="2", records=[], frames=frames)
    assert state == OnlineState(model_version="2") and "v1's, not the champion v2's" in caplog.text
    assert load_state(home.online_calibration_path).model_version == "2"
    # the champion's own (warmed, say by training) is continued
    save_state(OnlineState(model_version="2", market_log_scale=0.2, started_from="holdout"), home.online_calibration_path)
    kept = update_online_calibration(settings=home, version="2", records=[], frames=frames)
    assert kept.market_log_scale == 0.2 and kept.started_from == "holdout"


def test_a_new_champion_starts_from_the_state_its_registration_kept(home, frames):
    from stockops.registry.online_states import kept_online_state

    save_state(OnlineState(model_version="1", market_log_scale=0.9), home.online_calibration_path)
    save_state(OnlineState(model_version="3", market_log_scale=-0.3, started_from="holdout 2019..2020"),
               kept_online_state(home, "3"))
    state = update_online_calibration(settings=home, version="3", records=[], frames=frames)
    assert (state.model_version, state.market_log_scale, state.started_from) == ("3", -0.3, "holdout 2019..2020")
    assert load_state(home.online_calibration_path) == state


@pytest.mark.parametrize("other", [{"model_version": "2", "market_": 1}, ["a list"],
                                   {"model_version": "2", "tickers": []}, {"model_version": "2", "market_log_scale": 9}])
def test_a_state_of_another_shape_is_replaced_with_a_warning(home, frames, caplog, other):
    """A record that is not a state (an older version's shape, or out of its bounds)."""
    pointers.write(home.online_calibration_path, other)
    state = update_online_calibration(settings=home, version="2", records=forecast_log(frames, 2), frames=frames)
    assert state.model_version == "2" and state.days == 3  # forecasts of days 1..3
    assert any(r.levelno == logging.WARNING and "unreadable" in r.getMessage() for r in caplog.records)
    assert load_state(home.online_calibration_path) == state


def test_a_state_replaced_meanwhile_is_not_overwritten(home, frames, monkeypatch):
    import stockops.monitoring.online as online

    save_state(OnlineState(model_version="2"), home.online_calibration_path)
    warmed = OnlineState(model_version="3", started_from="holdout")
    apply_days = online.apply_days

    def training_promotes_meanwhile(state, days):
        save_state(warmed, home.online_calibration_path)
        return apply_days(state, days)

    monkeypatch.setattr(online, "apply_days", training_promotes_meanwhile)
    update_online_calibration(settings=home, version="2", records=forecast_log(frames, 2), frames=frames)
    assert load_state(home.online_calibration_path) == warmed


def test_the_summary_says_each_tickers_factors():
    state = OnlineState(model_version="2")
    state.update("2024-03-05", ["AAA"], [0.05], [0.0], [1e-4], [[0.01 * z for z in Z]])
    summary = online_summary(state, "2")
    assert summary["market_variance_factor"] == pytest.approx(math.exp(state.market_log_scale))
    own = summary["per_ticker"]["AAA"]
    assert own["variance_factor"] == pytest.approx(state.lineage("AAA")["variance_factor"], rel=1e-5)
    assert (own["days"], own["through"]) == (1, "2024-03-05")
    d05, d95 = state.tickers["AAA"].offsets[LEVELS.index(0.05)], state.tickers["AAA"].offsets[LEVELS.index(0.95)]
    assert own["interval_90_factor"] == pytest.approx(math.sqrt(own["variance_factor"]) * (3.29 + d95 - d05) / 3.29,
                                                      rel=1e-3)
    assert online_summary(None, "2")["status"] == "none"


# ---- the champion's records, corrected ---------------------------------------------------------------
@pytest.fixture(scope="module")
def harx():
    from stockops.data.sources import shipped_series
    from stockops.model.baselines import fit_harx

    frames = {t: shipped_series(t).iloc[:1200].reset_index(drop=True) for t in ("GOOG", "BAC")}
    return fit_harx(frames, np.datetime64(frames["GOOG"]["Date"].iloc[1100].date(), "D")), frames


def test_forecast_records_carry_the_corrected_forecast_and_the_state(harx):
    from stockops.monitoring.forecasts import forecast_records

    model, frames = harx
    snapshots = {t: (SimpleNamespace(last_date=str(f["Date"].iloc[-1].date()), hash="h"), f) for t, f in frames.items()}
    state = OnlineState(model_version="2", market_log_scale=0.3)
    state.update("2008-01-02", ["GOOG"], [0.08], [0.0], [4e-4], [[0.02 * z for z in Z]])
    raw, _ = forecast_records(model, snapshots, None, "2", made_at="now")
    served, _ = forecast_records(model, snapshots, None, "2", made_at="now", online=state)
    for before, after in zip(raw, served, strict=True):
        factor = math.exp(state.arrays([before.ticker])[0][0])
        assert after.variance == pytest.approx(before.variance * factor)
        assert after.point == before.point and after.forecast == before.forecast
        assert after.calibration == state.lineage(before.ticker) and before.calibration is None
        assert "calibration" not in before.to_record() and after.to_record()["calibration"]["model_version"] == "2"
    goog = next(r for r in served if r.ticker == "GOOG")
    assert goog.calibration["scope"] == "ticker" and next(r for r in served if r.ticker == "BAC").calibration[
        "scope"] == "market"


def test_score_watchlist_updates_the_state_first_then_records_what_it_serves(harx, tmp_path, monkeypatch):
    """The whole step with a stand-in registry: yesterday's record realised today moves the state, today's records
    are corrected by the state after it, the shadow's are not."""
    import stockops.registry
    import stockops.registry.changes
    from stockops.data import store_for
    from stockops.monitoring.forecasts import forecast_records, score_watchlist

    model, frames = harx
    settings = make_settings(home=tmp_path / "home", tickers="GOOG,BAC", ticker="GOOG")
    for ticker, f in frames.items():
        store_for(settings, ticker).publish(f, logical_date=str(f["Date"].iloc[-1].date()), source="made")
    monkeypatch.setattr(stockops.registry, "setup", lambda s: "")
    monkeypatch.setattr(stockops.registry, "champion_version", lambda s: SimpleNamespace(version=2))
    monkeypatch.setattr(stockops.registry, "load_forecaster", lambda uri: model)
    monkeypatch.setattr(stockops.registry.changes, "previous_champion", lambda s, v: "1")
    # yesterday's forecasts of today (the snapshots' last day), as served with a neutral state; and the shadow's
    day, before = (str(frames["GOOG"]["Date"].iloc[i].date()) for i in (-1, -2))
    for ticker, f in frames.items():
        entry = record(ticker, 0, float(f["Close"].iloc[-2]), 0.002)  # far too narrow: the scale must go up
        audit.record(settings.forecast_log, "forecast", **{**entry, "as_of": before, "forecast_for": day})
    save_state(OnlineState(model_version="2", through=before, days=30), settings.online_calibration_path)

    scored = score_watchlist(dag_run_id="r1", settings=settings)
    state = load_state(settings.online_calibration_path)
    assert (state.through, state.days) == (day, 31) and state.market_log_scale > 0
    assert scored.online_calibration == state.lineage(None) and sorted(scored.recorded) == ["BAC", "GOOG"]
    snapshots = {t: (store_for(settings, t).latest(), f) for t, f in frames.items()}
    raw = {r.ticker: r for r in forecast_records(model, snapshots, None, "2", made_at="now")[0]}
    logged = [e for e in audit.read(settings.forecast_log) if e["forecast_for"] > day]
    champion = {e["ticker"]: e for e in logged if e["role"] == "champion"}
    for ticker, entry in champion.items():
        factor = state.lineage(ticker)["variance_factor"]
        assert entry["variance"] == pytest.approx(raw[ticker].variance * factor, rel=1e-5)
        assert entry["calibration"] == state.lineage(ticker)
    shadow = [e for e in logged if e["role"] == "shadow"]
    assert len(shadow) == 2 and all("calibration" not in e for e in shadow)
    assert {e["ticker"]: e["variance"] for e in shadow} == pytest.approx({t: r.variance for t, r in raw.items()})

    again = score_watchlist(dag_run_id="r2", settings=settings)
    assert again.recorded == [] and load_state(settings.online_calibration_path) == state
