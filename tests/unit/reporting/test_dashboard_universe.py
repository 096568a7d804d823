"""The dashboard at universe size: the overview's table of every ticker (its numbers recomputed here from the
records it reads), its cache, the forecast log read fast and read exactly alike, a ticker's page, and both pages
over HTTP behind Airflow's login. A small made universe (``tests/universe.py``) in a home made as the platform
leaves it (``dashboard_home.py``); the browser's view: tests/system/test_local_platform.py."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from stockops.contracts import IngestStatus
from stockops.core import audit
from tests.unit.reporting.dashboard_home import build_home, forecast_lines
from tests.universe import synthetic_universe

MADE = 7
QUARANTINED, HELD, DRIFTED, UNFORECAST, NEVER = "U002", "U003", "U004", "U005", "NEW"


@pytest.fixture(scope="module")
def frames():
    return {t: f.tail(400).reset_index(drop=True) for t, f in synthetic_universe(MADE, seed=27).items()}


@pytest.fixture
def universe(settings, monkeypatch, frames):
    """Seven made tickers (one quarantined, one held for a person, one drifted, one never forecast) and one on the
    watchlist that was never ingested."""
    from stockops.core.settings import get_settings

    monkeypatch.setenv("STOCKOPS_TICKERS", ",".join([*frames, NEVER]))
    monkeypatch.setenv("STOCKOPS_TICKER", "U000")
    current = get_settings()
    build_home(current, frames, statuses={QUARANTINED: IngestStatus.QUARANTINED, HELD: IngestStatus.HELD},
               drifted=(DRIFTED,), forecast=tuple(t for t in frames if t != UNFORECAST))
    return current


def test_overview_rows_say_what_the_records_say(universe, frames):
    from stockops.charts.dashboard import FAN_DAYS
    from stockops.reporting.dashboard.universe import ticker_row, universe_rows

    rows = {r.ticker: r for r in universe_rows(universe)}
    assert list(rows) == [*frames, NEVER]
    assert {t: r.status for t, r in rows.items()} == {**{t: "published" for t in frames}, QUARANTINED: "quarantined",
                                                      HELD: "held", NEVER: "never ingested"}
    assert rows[HELD].status_label == "waiting for a person"
    assert {t for t, r in rows.items() if r.drifted} == {DRIFTED} and rows[NEVER].drifted is None

    one = rows["U001"]
    frame = frames["U001"]
    lines = [json.loads(line) for line in forecast_lines("U001", frame, 60)]
    newest = lines[-1]
    assert (one.last_close, one.close_date) == (pytest.approx(frame["Close"].iloc[-1]), str(frame["Date"].iloc[-1])[:10])
    assert one.forecast_for == newest["forecast_for"] and one.volatility == pytest.approx(math.sqrt(newest["variance"]))
    assert one.low_90 == pytest.approx(newest["last_close"] * math.exp(newest["quantiles"]["q05"]))
    # coverage over the last FAN_DAYS forecast days: the realized closes inside their 90 % interval
    closes = dict(zip(frame["Date"].astype(str).str[:10], frame["Close"], strict=True))
    window = [e for e in lines[-FAN_DAYS:] if e["forecast_for"] in closes]
    inside = [e["last_close"] * math.exp(e["quantiles"]["q05"]) <= closes[e["forecast_for"]]
              <= e["last_close"] * math.exp(e["quantiles"]["q95"]) for e in window]
    assert (one.realized, one.coverage_90, one.source) == (len(window), pytest.approx(np.mean(inside)), "live")
    # the sparkline's series: the last FAN_DAYS closes and the band, one slot more for the day not closed yet
    assert len(one.closes) == FAN_DAYS and len(one.lows) == FAN_DAYS + 1 and not math.isnan(one.lows[-1])

    # a ticker's page computes its row alone: the same
    assert replace(ticker_row(universe, "U001"), lows=(), highs=()) == replace(one, lows=(), highs=())

    assert (rows[UNFORECAST].forecast_for, rows[UNFORECAST].coverage_90, rows[UNFORECAST].source) == (None, None, "none")
    assert rows[UNFORECAST].last_close is not None  # published all the same
    assert (rows[NEVER].last_close, rows[NEVER].closes) == (None, ())


def test_overview_page_is_one_table_with_the_platforms_sections(universe, frames):
    from stockops.reporting.dashboard.page import render_page
    from stockops.reporting.dashboard.table import CONTENT_SECURITY_POLICY

    page = render_page(universe, user="admin", approvals=[])
    rows = re.findall(r'<tr id="row-([^"]+)" data-source="(\w+)"', page)
    assert [t for t, _ in rows] == [*frames, NEVER]
    assert dict(rows)["U001"] == "live" and dict(rows)[UNFORECAST] == "none"
    assert 'href="ticker/U001"' in page and page.count('<svg class="spark"') == MADE
    assert "waiting for a person" in page and "1 waiting for a person" in page and 'class="drifted"' in page
    for element in ('id="search"', 'id="champion"', 'id="gate"', 'id="approvals"', 'id="monitor"', 'id="dora"',
                    'id="links"'):
        assert element in page, element
    # one inline script, the one the Content-Security-Policy allows by its hash; nothing from another host
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in CONTENT_SECURITY_POLICY
    assert not re.search(r'(src|href)="(https?:)?//', page.replace('href="http://127.0.0.1', ""))


def test_overview_is_computed_again_only_when_a_source_changes(universe):
    from stockops.ingest.status import write_status
    from stockops.reporting.dashboard.universe import universe_rows

    first = universe_rows(universe)
    assert universe_rows(universe) is first
    write_status(universe, "U001", "2099-01-02", IngestStatus.QUARANTINED, "a later day failed validation")
    again = universe_rows(universe)
    assert again is not first and again[1].status == "quarantined" and again[1].last_close == first[1].last_close
    audit.append(universe.forecast_log, json.loads(forecast_lines(UNFORECAST, synthetic_universe(1, seed=3)["U000"],
                                                                  3)[-1]))
    assert universe_rows(universe)[5].forecast_for is not None


def test_forecast_log_read_fast_and_read_line_by_line_alike(universe, monkeypatch):
    """Arrow's reader, and audit.read's when Arrow cannot read a record: the same champion forecasts (shadow records
    out, the first record of a day kept), the same as the panels' own champion_forecasts."""
    from stockops.reporting.dashboard import forecast_log
    from stockops.reporting.dashboard.forecast_log import _FORECASTS, forecast_table, ticker_forecasts
    from stockops.reporting.dashboard.panels import champion_forecasts

    first = audit.read(universe.forecast_log)[0]
    audit.append(universe.forecast_log, {**first, "role": "shadow", "forecast_for": "2099-01-05"})
    audit.append(universe.forecast_log, {**first, "last_close": 1.0})  # a second record of a day: the first counts
    fast = forecast_table(universe)
    expected = champion_forecasts(audit.read(universe.forecast_log), "U000")
    pd.testing.assert_frame_equal(ticker_forecasts(universe, "U000"), expected, check_exact=False)
    audit.append(universe.forecast_log, {**first, "forecast_for": "2099-01-06"})

    def unreadable(data):
        raise ValueError("a record Arrow's schema does not fit")

    monkeypatch.setattr(forecast_log, "_arrow_rows", unreadable)
    _FORECASTS.clear()
    slow = forecast_table(universe)
    pd.testing.assert_frame_equal(slow.iloc[:-1], fast, check_exact=False)
    assert slow["forecast_for"].iloc[-1] == "2099-01-06"


def test_ticker_page_draws_its_charts_and_an_unknown_ticker_has_none(universe):
    from stockops.reporting.dashboard.page import render_ticker_page

    page = render_ticker_page(universe, DRIFTED, user="admin")
    for chart in ("fan", "coverage"):
        uri = re.search(fr'<img id="{chart}-{DRIFTED}" class="chart" alt="[^"]*" src="([^"]+)"', page).group(1)
        assert b"<svg" in base64.b64decode(uri.split(",", 1)[1])
    assert 'data-source="live"' in page and "<b>drifted</b>" in page and 'href="../"' in page
    assert f'id="note-{NEVER}"' in render_ticker_page(universe, NEVER, user="admin")  # nothing published yet
    assert render_ticker_page(universe, "NOPE", user="admin") is None


def test_an_unreadable_snapshot_takes_no_page_down(universe):
    from stockops.data import store_for
    from stockops.reporting.dashboard.page import render_page, render_ticker_page

    store = store_for(universe, "U006")
    store.snapshot_path(store.latest().hash).write_bytes(b"not parquet")
    assert 'id="row-U006"' in render_page(universe, user="admin", approvals=[])
    page = render_ticker_page(universe, "U006", user="admin")
    assert "its latest snapshot is unreadable" in page and "re-ingest U006" in page


def test_one_ticker_alone(settings, monkeypatch):
    """STOCKOPS_TICKERS=GOOG: a table of one row, its page."""
    from stockops.core.settings import get_settings
    from stockops.data.sources import shipped_series
    from stockops.reporting.dashboard.page import render_page, render_ticker_page

    monkeypatch.setenv("STOCKOPS_TICKERS", "GOOG")
    monkeypatch.setenv("STOCKOPS_TICKER", "GOOG")
    current = get_settings()
    build_home(current, {"GOOG": shipped_series("GOOG").tail(300).reset_index(drop=True)}, 30)
    page = render_page(current, user="admin", approvals=[])
    assert page.count('<tr id="row-') == 1 and 'id="row-GOOG"' in page
    assert 'id="fan-GOOG"' in render_ticker_page(current, "GOOG", user="admin")


def test_sparkline_draws_the_band_the_closes_and_the_misses():
    from stockops.charts.dashboard import sparkline

    nan = math.nan
    svg = sparkline([10.0, 11.0, 15.0], [9.0, nan, 10.0, 11.0], [11.0, nan, 12.0, 13.0], "X")
    assert svg.startswith('<svg class="spark"') and svg.count("<polyline") == 1
    assert svg.count("<line") == 1 and svg.count("<polygon") == 1  # a lone forecast day, then a run of two
    assert svg.count("<circle") == 1  # 15 is outside 10-12
    assert sparkline([], [], [], "X") == ""


# ---- over HTTP, behind Airflow's login -------------------------------------------------------------


@pytest.fixture
def http(universe, airflow_db):
    from fastapi.testclient import TestClient

    from tests.unit.orchestration.test_plugin import airflow_token, plugin_app

    app = plugin_app()
    with TestClient(app) as anonymous, TestClient(app, headers={"Authorization": f"Bearer {airflow_token()}"}) as client:
        yield anonymous, client


def test_pages_over_http_behind_the_login(http):
    from stockops.reporting.dashboard.table import CONTENT_SECURITY_POLICY

    anonymous, client = http
    for path in ("/stockops/", "/stockops/ticker/U001", "/stockops/ticker/NOPE"):
        assert anonymous.get(path).status_code == 401, path
    page = anonymous.get("/stockops/ticker/U001", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.is_redirect and "next=%2Fstockops%2Fticker%2FU001" in page.headers["location"]

    overview = client.get("/stockops/")
    assert overview.status_code == 200 and overview.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert overview.text.count('<tr id="row-') == MADE + 1
    ticker = client.get("/stockops/ticker/U001")
    assert ticker.status_code == 200 and 'id="fan-U001"' in ticker.text
    missing = client.get("/stockops/ticker/NOPE")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/plain")
    assert "No ticker 'NOPE' on the watchlist" in missing.text


def test_the_online_calibration_shows_on_both_pages_and_its_absence_breaks_none(universe):
    """The state the monitor keeps: its factor in every ticker's row, its lineage on a ticker's page; missing or
    torn, the pages say so."""
    from stockops.core import pointers
    from stockops.model.portable.online_calibration import OnlineState
    from stockops.registry.online_states import save_state
    from stockops.reporting.dashboard.page import render_page, render_ticker_page

    page = render_page(universe, user="admin", approvals=[])
    assert "no online calibration state yet" in page and 'id="online-calibration"' in page
    assert "no online calibration state yet" in render_ticker_page(universe, "U001", user="admin")

    state = OnlineState(model_version="1", market_log_scale=0.2)
    state.update("2020-12-11", ["U001"], [0.1], [0.0], [1e-4], [[0.01 * z for z in (-2.3, -1.6, -.7, 0, .7, 1.6, 2.3)]])
    save_state(state, universe.online_calibration_path)
    page = render_page(universe, user="admin", approvals=[])
    assert "online calibration (σ² factor): v1, through 2020-12-11 (1 realized days" in page
    own, market = state.lineage("U001")["variance_factor"], state.lineage(None)["variance_factor"]
    assert re.search(fr'<tr id="row-U001".*?<td data-v="{own}" class="num"[^>]*>×{own:.2f}</td>', page)
    assert re.search(fr'<tr id="row-U002".*?<td data-v="{market}" class="num"[^>]*>×{market:.2f}</td>', page)
    ticker = render_ticker_page(universe, "U001", user="admin")
    section = re.search(r'<table id="online-U001">.*?</table>', ticker, re.S).group(0)
    assert "v1" in section and "2020-12-11" in section and f"×{own:.3f}" in section and "q05 " in section

    pointers.write(universe.online_calibration_path, {"model_version": "1", "market_": 1})  # not a state
    assert "online calibration state unreadable" in render_page(universe, user="admin", approvals=[])
    assert "online calibration state unreadable" in render_ticker_page(universe, "U001", user="admin")
