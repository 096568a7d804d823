"""The stockops Airflow plugin, as Airflow loads it from the plugins folder.

Discovery and mounting go through Airflow's own plugins manager and the api-server's
``init_plugins``; the listener gets real ``DagRun`` objects; the web app is called over HTTP
(``TestClient``) on a fresh stockops home, mounted beside Airflow's own auth manager (its
``/auth`` app and middlewares, as the api-server has them), with tokens that Airflow issued.
The dashboard is assembled from real series and real HARX-GKO forecasts written through
``record_forecasts``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import struct
import sys
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stockops.contracts import ForecastRecord
from stockops.core import audit

REPO = Path(__file__).resolve().parents[3]
VIEW_HREFS = {
    "MLflow": "/stockops/mlflow",
    "BentoML API": "/stockops/bentoml",
    "Monitor report (Evidently)": "/stockops/monitor/latest",
    "Data Docs (GX)": "/stockops/gx/",
    "DORA report": "/stockops/dora",
}


@pytest.fixture(scope="module")
def plugin():
    """The plugin instance Airflow loaded from AIRFLOW__CORE__PLUGINS_FOLDER."""
    from airflow import plugins_manager

    plugins, _ = plugins_manager._get_plugins()
    found = [p for p in plugins if p.name == "stockops"]
    assert len(found) == 1, f"stockops plugin not loaded; import errors: {plugins_manager.get_import_errors()}"
    return found[0]


def plugin_app():
    """The api-server's plugin mounting (``init_plugins``) and auth set-up on a bare FastAPI app."""
    from airflow.api_fastapi.app import init_auth_manager, init_plugins
    from airflow.api_fastapi.core_api.app import init_middlewares
    from fastapi import FastAPI

    app = FastAPI()
    init_plugins(app)
    init_auth_manager(app)
    init_middlewares(app)
    return app


@pytest.fixture
def app(settings, airflow_db):
    return plugin_app()


def airflow_token(username: str = "admin", role: str | None = "admin", **kwargs) -> str:
    """A JWT issued by Airflow's auth manager, as its login would issue it."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role), **kwargs)


@pytest.fixture
def anonymous(app):
    """A client without any Airflow session."""
    from fastapi.testclient import TestClient

    with TestClient(app) as http:
        yield http


@pytest.fixture
def client(app):
    """A client that sends an admin's bearer token, as a REST API caller does."""
    from fastapi.testclient import TestClient

    with TestClient(app, headers={"Authorization": f"Bearer {airflow_token()}"}) as http:
        yield http


def dag_run(dag_id: str = "stock_train", **kwargs):
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType

    fields = {"run_id": "manual__2026-01-05T10:00:00+00:00", "run_type": DagRunType.MANUAL,
              "logical_date": datetime(2026, 1, 5, 10, tzinfo=UTC), "start_date": datetime(2026, 1, 5, 10, 0, 3, tzinfo=UTC),
              "conf": {"reason": "drift"}} | kwargs
    return DagRun(dag_id=dag_id, **fields)


def png_bytes() -> bytes:
    """A real 1x1 PNG (white pixel)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\xff\xff")) + chunk(b"IEND", b"")


# ---- discovery ---------------------------------------------------------------------------


def test_airflow_loads_the_plugin_from_the_plugins_folder(plugin):
    from airflow import plugins_manager, settings

    assert Path(settings.PLUGINS_FOLDER) == REPO / "plugins"
    assert plugin.source.path == "stockops_plugin.py"  # relative to the plugins folder
    assert Path(sys.modules[type(plugin).__module__].__file__) == REPO / "plugins" / "stockops_plugin.py"
    assert not [path for path in plugins_manager.get_import_errors() if "stockops" in path]


def test_plugin_registers_the_listener_for_dag_run_hooks(plugin, settings):
    from airflow.listeners.listener import ListenerManager
    from airflow.listeners.spec import dagrun
    from airflow.plugins_manager import integrate_listener_plugins

    manager = ListenerManager()
    manager.add_hookspecs(dagrun)
    integrate_listener_plugins(manager)
    assert manager.has_listeners
    # through pluggy, as the scheduler calls it
    manager.hook.on_dag_run_success(dag_run=dag_run(), msg="success")
    assert [e["state"] for e in audit.read(settings.dag_run_log)] == ["success"]


def test_plugin_links_pass_the_api_servers_schema(plugin):
    from airflow import plugins_manager
    from airflow.api_fastapi.core_api.datamodels.plugins import PluginResponse

    info = next(i for i in plugins_manager.get_plugin_info() if i["name"] == "stockops")
    views = PluginResponse.model_validate(info).external_views  # what GET /api/v2/plugins returns to the UI
    assert {v.name: v.href for v in views} == VIEW_HREFS
    assert {v.destination for v in views} == {"nav"}
    # framed in the UI: the files served by the plugin's app; MLflow and BentoML open in a new tab
    framed, _ = plugins_manager._get_ui_plugins()
    assert {v["url_route"] for v in framed if v in plugin.external_views} == {
        "stockops-monitor", "stockops-data-docs", "stockops-dora"}


def test_plugin_app_is_mounted_at_stockops(plugin):
    from airflow import plugins_manager
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES

    apps, _ = plugins_manager.get_fastapi_plugins()
    mine = [a for a in apps if a["name"] == "stockops"]
    assert [a["url_prefix"] for a in mine] == ["/stockops"]
    assert not any(mine[0]["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)


# ---- the listener ------------------------------------------------------------------------


def test_listener_records_each_state_of_a_stockops_run(plugin, settings):
    recorder = plugin.listeners[0]
    run = dag_run()
    recorder.on_dag_run_running(dag_run=run, msg="started")
    run.end_date = datetime(2026, 1, 5, 10, 4, tzinfo=UTC)
    recorder.on_dag_run_failed(dag_run=run, msg="task_failure")
    retry = dag_run(run_id="manual__retry", conf=None, logical_date=None)
    recorder.on_dag_run_success(dag_run=retry, msg="success")

    running, failed, success = audit.read(settings.dag_run_log)
    assert running == {
        "at": running["at"], "event": "dag_run", "dag_id": "stock_train", "run_id": "manual__2026-01-05T10:00:00+00:00",
        "state": "running", "run_type": "manual", "logical_date": "2026-01-05T10:00:00+00:00",
        "start_date": "2026-01-05T10:00:03+00:00", "end_date": None, "reason": "drift", "msg": "started"}
    assert (failed["state"], failed["end_date"], failed["msg"]) == ("failed", "2026-01-05T10:04:00+00:00", "task_failure")
    assert (success["state"], success["run_id"], success["reason"], success["logical_date"]) == (
        "success", "manual__retry", None, None)


def test_listener_ignores_other_dags(plugin, settings):
    plugin.listeners[0].on_dag_run_success(dag_run=dag_run("example_bash_operator"), msg="success")
    assert audit.read(settings.dag_run_log) == []


def test_listener_never_raises_into_airflow(plugin, settings, caplog, monkeypatch):
    recorder = plugin.listeners[0]
    with caplog.at_level(logging.WARNING):
        recorder.on_dag_run_failed(dag_run=object(), msg="task_failure")  # no dag_id, run_id, ...
    assert "could not record" in caplog.text
    # the log cannot be written: its database cannot be opened (its folder is a file)
    (settings.home / "not-a-folder").parent.mkdir(parents=True, exist_ok=True)
    (settings.home / "not-a-folder").write_text("a file")
    monkeypatch.setenv("STOCKOPS_STATE_DB", f"sqlite:///{settings.home / 'not-a-folder' / 'state.db'}")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        recorder.on_dag_run_success(dag_run=dag_run(), msg="success")
    assert "could not record" in caplog.text


# ---- the web app -------------------------------------------------------------------------


def test_app_says_what_is_missing_before_anything_exists(client):
    assert client.get("/stockops/").status_code == 200
    for path in ("/stockops/monitor/latest", "/stockops/monitor/latest.json", "/stockops/gx/",
                 "/stockops/dora", "/stockops/dora.json"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/plain")
        assert "yet" in response.text
    assert "run .venv/bin/stockops dora" in client.get("/stockops/dora").text


def test_app_index_and_redirects(client, settings):
    index = client.get("/stockops/")
    assert index.headers["content-type"].startswith("text/html")
    for href in (f'href="{settings.mlflow_ui_url}"', f'href="{settings.serve_url}/"', 'href="monitor/latest"',
                 'href="gx/"', 'href="dora"'):
        assert href in index.text
    mlflow = client.get("/stockops/mlflow", follow_redirects=False)
    assert mlflow.is_redirect and mlflow.headers["location"] == settings.mlflow_ui_url
    bento = client.get("/stockops/bentoml", follow_redirects=False)
    assert bento.is_redirect and bento.headers["location"] == f"http://127.0.0.1:{settings.serve_port}/"


def test_app_serves_the_latest_monitor_report(client, settings):
    first = settings.monitoring_dir / "20260105T100000" / "drift_report.html"
    second = settings.monitoring_dir / "20260106T100000" / "drift_report.html"
    for report in (first, second):
        report.parent.mkdir(parents=True)
        report.write_text(f"<html><body>Evidently report {report.parent.name}</body></html>")
    audit.record(settings.monitor_log, "monitor", decision="ok", triggered=False, report=str(first))
    audit.record(settings.monitor_log, "monitor", decision="retrain", triggered=True, report=str(second))
    audit.record(settings.monitor_log, "monitor", decision="skip", triggered=False, report=None)  # kept no report

    page = client.get("/stockops/monitor/latest")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Evidently report 20260106T100000" in page.text
    decision = client.get("/stockops/monitor/latest.json").json()
    assert (decision["decision"], decision["report"]) == ("retrain", str(second))

    second.unlink()  # the decision names a report that is gone
    assert client.get("/stockops/monitor/latest").status_code == 404


def test_app_serves_the_dora_report(client, settings):
    """(The Data Docs pages, drawn from real GX results: tests/unit/data/test_data_docs_offline.py.)"""
    settings.reports_dir.mkdir(parents=True)
    (settings.reports_dir / "dora.png").write_bytes(png_bytes())
    numbers = {"deployment_frequency_per_week": 2.0, "change_failure_rate": 0.25}
    (settings.reports_dir / "dora.json").write_text(json.dumps(numbers))

    chart = client.get("/stockops/dora")
    assert chart.headers["content-type"] == "image/png" and chart.content == png_bytes()
    assert client.get("/stockops/dora.json").json() == numbers


def test_app_serves_nothing_outside_the_home(client, settings, tmp_path):
    secret = tmp_path / "secret.txt"  # beside the home, not in it
    secret.write_text("TOP SECRET")
    docs = settings.data_docs_dir
    docs.mkdir(parents=True)
    (docs / "index.html").write_text("<html>GX Data Docs index</html>")
    (docs / "leak.html").symlink_to(secret)
    up = "../" * 8
    for path in (f"/stockops/gx/{up}secret.txt", "/stockops/gx/" + up.replace("/", "%2F") + "secret.txt",
                 "/stockops/gx/leak.html"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "TOP SECRET" not in response.text
    # a monitor decision that names a file outside the home, directly or through a link under it
    audit.record(settings.monitor_log, "monitor", decision="ok", report=str(secret))
    assert "TOP SECRET" not in client.get("/stockops/monitor/latest").text
    settings.monitoring_dir.mkdir(parents=True, exist_ok=True)
    (settings.monitoring_dir / "report.html").symlink_to(secret)
    audit.record(settings.monitor_log, "monitor", decision="ok", report=str(settings.monitoring_dir / "report.html"))
    response = client.get("/stockops/monitor/latest")
    assert response.status_code == 404 and "TOP SECRET" not in response.text


# ---- behind Airflow's login --------------------------------------------------------------

APP_PATHS = ("/stockops/", "/stockops/ticker/GOOG", "/stockops/mlflow", "/stockops/bentoml", "/stockops/monitor/latest",
             "/stockops/monitor/latest.json", "/stockops/gx/", "/stockops/gx/index.html", "/stockops/dora",
             "/stockops/dora.json")
PAGE = {"Accept": "text/html,application/xhtml+xml"}  # what a browser sends for a page


def refused(response) -> bool:
    return response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_every_route_refuses_a_request_without_a_session(anonymous, settings):
    from airflow.api_fastapi.app import get_auth_manager

    docs = settings.data_docs_dir
    docs.mkdir(parents=True)
    (docs / "index.html").write_text("<html>GX Data Docs index</html>")
    for path in APP_PATHS:
        response = anonymous.get(path, follow_redirects=False)
        assert refused(response), path
        assert "GX Data Docs" not in response.text
        page = anonymous.get(path, headers=PAGE, follow_redirects=False)  # a browser: to Airflow's login, and back
        assert page.status_code == 307, path
        assert page.headers["location"] == get_auth_manager().get_url_login(next_url=path)
        assert page.headers["location"].startswith("/auth/login?next=%2Fstockops%2F")
    assert refused(anonymous.post("/stockops/", headers=PAGE))  # only a page request is redirected


def test_invalid_expired_and_revoked_tokens_are_refused(anonymous):
    import jwt
    from airflow.api_fastapi.app import get_auth_manager

    forged = jwt.encode({"sub": "admin", "role": "admin", "aud": "apache-airflow"}, "not Airflow's secret",
                        algorithm="HS512")
    expired = airflow_token(expiration_time_in_seconds=-60)
    revoked = airflow_token()
    get_auth_manager().revoke_token(revoked)  # what the UI's logout does
    for token in ("not-a-jwt", forged, expired, revoked):
        assert refused(anonymous.get("/stockops/dora.json", headers={"Authorization": f"Bearer {token}"}))
        anonymous.cookies.set("_token", token)
        page = anonymous.get("/stockops/", headers=PAGE, follow_redirects=False)
        anonymous.cookies.clear()
        assert page.status_code == 307 and page.headers["location"].startswith("/auth/login")


def test_an_airflow_session_opens_every_route(anonymous):
    """The UI's cookie and the REST API's bearer token, both from Airflow's own login endpoint."""
    from airflow.configuration import conf

    passwords = json.loads(Path(conf.get("core", "simple_auth_manager_passwords_file")).read_text())
    login = anonymous.post("/auth/token", json={"username": "admin", "password": passwords["admin"]})
    assert login.status_code == 201, login.text
    token = login.json()["access_token"]
    for path in APP_PATHS:
        answer = anonymous.get(path, headers={"Authorization": f"Bearer {token}"}, follow_redirects=False)
        assert answer.status_code in (200, 307, 404), path  # 307: /mlflow and /bentoml; 404: nothing made yet
        assert answer.status_code != 307 or "/auth/" not in answer.headers["location"], path
    anonymous.cookies.set("_token", token)  # the session cookie the UI's login sets
    page = anonymous.get("/stockops/", headers=PAGE)
    assert page.status_code == 200 and "signed in as admin" in page.text


def test_a_user_who_may_not_see_plugins_is_forbidden(anonymous):
    viewer, nobody = airflow_token("viewer", role="viewer"), airflow_token("nobody", role=None)
    assert anonymous.get("/stockops/", headers={"Authorization": f"Bearer {viewer}"}).status_code == 200
    answer = anonymous.get("/stockops/", headers={"Authorization": f"Bearer {nobody}"})
    assert answer.status_code == 403 and "nobody may not see plugin views" in answer.text


# ---- the dashboard's data ----------------------------------------------------------------


def baseline_forecast_records(ticker: str, frame, days: int = 60) -> list[ForecastRecord]:
    """HARX-GKO's one-day-ahead forecasts of ``frame``'s last ``days`` days, as forecast-log records.

    Real forecasts of a real model (the benchmark the monitor scores the champion against), fitted once
    on the days before the first of them; all of them realized in ``frame``.
    """
    from stockops.monitoring.scorecard import QUANTILES, benchmark_forecasts

    dates = frame["Date"].astype(str).str[:10].tolist()
    closes = frame["Close"].astype(float).tolist()
    table, _ = benchmark_forecasts(frame, dates[-days:])
    if table is None:  # too few days before them to fit on
        return []
    records = []
    for row in table.itertuples(index=False):
        day = dates.index(row.forecast_for)
        quantiles = {q: float(getattr(row, q)) for q in QUANTILES}
        records.append(ForecastRecord(
            ticker=ticker, as_of=dates[day - 1], forecast_for=row.forecast_for, model_version="harx_gko",
            snapshot_hash="", last_close=closes[day - 1], point=quantiles["q50"],
            forecast=closes[day - 1] * math.exp(quantiles["q50"]), quantiles=quantiles, variance=float(row.variance),
            made_at=f"{dates[day - 1]}T21:00:00+00:00", role="baseline"))
    return records


@pytest.fixture
def watchlist(settings, monkeypatch):
    """GOOG and JPM published (real series, 2004..2010) with 60 realized HARX-GKO forecasts each; KO published
    without forecasts; QQQ not published at all."""
    from stockops.core.settings import get_settings
    from stockops.data import store_for
    from stockops.data.sources import shipped_series
    from stockops.monitoring.forecasts import record_forecasts

    monkeypatch.setenv("STOCKOPS_TICKERS", "GOOG,JPM,KO,QQQ")
    current = get_settings()
    records = []
    for ticker in ("GOOG", "JPM", "KO"):
        frame = shipped_series(ticker).iloc[:1500].reset_index(drop=True)
        store_for(current, ticker).publish(frame, logical_date=str(frame["Date"].iloc[-1])[:10], source="test")
        if ticker != "KO":
            records += baseline_forecast_records(ticker, frame)
    record_forecasts(current.forecast_log, records)
    return current


def test_dashboard_panels_from_the_forecast_log_and_the_snapshots(watchlist):
    from stockops.charts.dashboard import NO_FORECASTS
    from stockops.data.sources import shipped_series
    from stockops.reporting.dashboard.panels import NO_SNAPSHOT, ticker_panels

    shadow = {**audit.read(watchlist.forecast_log)[-1], "role": "shadow", "model_version": "7",
              "quantiles": {q: 0.0 for q in ("q01", "q05", "q25", "q50", "q75", "q95", "q99")}}
    audit.append(watchlist.forecast_log, shadow)  # the previous champion's forecast of a day: not drawn

    goog, jpm, ko, qqq = ticker_panels(watchlist)
    assert [p.ticker for p in (goog, jpm, ko, qqq)] == ["GOOG", "JPM", "KO", "QQQ"]
    assert (goog.forecasts, goog.realized, goog.note) == (60, 60, None)
    assert goog.fan_chart.startswith("data:image/svg+xml;base64,")
    assert b"<svg" in base64.b64decode(goog.coverage_chart.split(",", 1)[1])
    # coverage: the share of realized closes inside each interval, recomputed here from the records
    closes = shipped_series("GOOG").iloc[:1500].set_index(shipped_series("GOOG").iloc[:1500]["Date"].astype(str)
                                                          .str[:10])["Close"]
    mine = [e for e in audit.read(watchlist.forecast_log) if e["ticker"] == "GOOG" and e["role"] == "baseline"]
    inside = [e["last_close"] * math.exp(e["quantiles"]["q05"]) <= closes[e["forecast_for"]]
              <= e["last_close"] * math.exp(e["quantiles"]["q95"]) for e in mine]
    assert goog.coverage_90 == pytest.approx(sum(inside) / len(inside))
    assert goog.last_forecast["forecast_for"] == mine[-1]["forecast_for"]
    assert goog.last_forecast["median"] == pytest.approx(mine[-1]["last_close"] * math.exp(mine[-1]["quantiles"]["q50"]))
    assert 0.5 < jpm.coverage_90 <= 1 and jpm.realized == 60
    assert (ko.forecasts, ko.note, ko.coverage_chart) == (0, NO_FORECASTS, None)
    assert ko.fan_chart is not None  # its closes, drawn without forecasts
    assert (qqq.note, qqq.fan_chart, qqq.coverage_chart) == (NO_SNAPSHOT, None, None)


def test_dashboard_rolling_coverage_and_prices():
    import pandas as pd

    from stockops.reporting.dashboard.panels import champion_forecasts, rolling_coverage, with_realized

    records = [{"ticker": "X", "as_of": f"2020-01-{d:02d}", "forecast_for": f"2020-01-{d + 1:02d}",
                "model_version": "3", "last_close": 100.0,
                "quantiles": {"q05": -0.1, "q25": -0.01, "q50": 0.0, "q75": 0.01, "q95": 0.1}} for d in range(1, 11)]
    table = champion_forecasts(records + [{**records[0], "last_close": 1.0}], "X")  # the first one counts
    assert len(table) == 10 and table["q50"].tolist() == [100.0] * 10
    assert table["q95"].iloc[0] == pytest.approx(100 * math.exp(0.1))
    # closes: inside both intervals on even days, inside the 90 % one only on odd days, outside both on the 7th;
    # the forecast for the 11th is not realized yet
    frame = pd.DataFrame({"Date": [f"2020-01-{d:02d}" for d in range(1, 11)],
                          "Close": [150.0 if d == 7 else 100.0 if d % 2 == 0 else 105.0 for d in range(1, 11)]})
    realized = with_realized(table, frame)
    assert realized["close"].isna().tolist() == [False] * 9 + [True]
    coverage = rolling_coverage(realized, window=4)
    assert coverage["forecast_for"].tolist() == [f"2020-01-{d:02d}" for d in range(2, 11)]
    assert coverage["coverage_50"].isna().tolist() == [True] * 3 + [False] * 6
    assert coverage["coverage_50"].iloc[3:].tolist() == pytest.approx([0.5] * 6)
    assert coverage["coverage_90"].iloc[3:].tolist() == pytest.approx([1, 1, 0.75, 0.75, 0.75, 0.75])


def test_dashboard_reads_champion_gate_and_monitor_from_the_logs(settings):
    from datetime import timedelta

    from stockops.reporting.dashboard.page import render_page
    from stockops.reporting.dashboard.panels import champion, latest_event

    now = datetime.now(UTC)
    assert champion(settings, now) is None
    audit.record(settings.audit_log, "gate", version="3", decision="promote", reason="beats HARX-GKO")
    audit.record(settings.audit_log, "promotion", from_version=None, to_version="3", reason="gate passed")
    audit.record(settings.audit_log, "gate", version="4", decision="refuse", reason="QLIKE 1.02 x HARX-GKO")
    audit.record(settings.audit_log, "rollback_proposal", from_version="3", to_version="2", decision="rejected")
    current = champion(settings, now + timedelta(hours=3))
    assert (current["version"], current["change"], current["changes"]) == ("3", "promotion", 1)
    assert current["age_s"] == pytest.approx(3 * 3600, abs=5)
    assert latest_event(settings.audit_log, "gate")["decision"] == "refuse"
    page = render_page(settings, user="admin", approvals="could not read the pending approvals: boom")
    assert "QLIKE 1.02 x HARX-GKO" in page and "gate passed" in page and "boom" in page


def test_dashboard_page_over_http(client, watchlist):
    audit.record(watchlist.incident_log, "incident", component="bento", cause="process died", status="recovered",
                 detected_at=datetime.now(UTC).isoformat(), recovered_at=datetime.now(UTC).isoformat(), downtime_s=4.2)
    page = client.get("/stockops/")
    assert page.status_code == 200
    for element in ('id="row-GOOG"', 'id="row-JPM"', 'id="row-KO"', 'id="row-QQQ"', 'href="ticker/GOOG"',
                    'id="champion"', 'id="gate"', 'id="approvals"', 'id="monitor"', 'id="dora"',
                    'id="incidents"', 'id="links"', "process died"):
        assert element in page.text, element
    # everything drawn is inline: the page's one script (sorting, search), nothing loaded from anywhere else
    assert page.text.count("<script") == 1 and 'src="http' not in page.text and '<link rel="stylesheet"' not in page.text
    for ticker, elements in (("GOOG", ('id="fan-GOOG"', 'id="coverage-GOOG"')), ("KO", ('id="fan-KO"', 'id="note-KO"')),
                             ("QQQ", ('id="note-QQQ"',))):
        ticker_page = client.get(f"/stockops/ticker/{ticker}")
        assert ticker_page.status_code == 200
        for element in elements:
            assert element in ticker_page.text, (ticker, element)
    unknown = client.get("/stockops/ticker/NOPE")
    assert unknown.status_code == 404 and "NOPE" in unknown.text


def test_dashboard_draws_a_ticker_again_only_when_its_sources_change(watchlist):
    from stockops.charts.dashboard import NO_FORECASTS
    from stockops.reporting.dashboard.panels import QUANTILES, ticker_panels

    first = ticker_panels(watchlist)
    assert all(a is b for a, b in zip(first, ticker_panels(watchlist), strict=True))
    audit.record(watchlist.forecast_log, "forecast", ticker="KO", as_of="2010-07-30", forecast_for="2010-08-02",
                 model_version="3", last_close=27.0, quantiles={q: 0.0 for q in QUANTILES})
    again = ticker_panels(watchlist)
    assert again[2].forecasts == 1 and again[2].note != NO_FORECASTS


HITL_DAG = """
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("stockops_dashboard_approvals", schedule=None):
    for i in range(3):
        EmptyOperator(task_id=f"review_{i}")
"""


def test_pending_approvals_are_the_unanswered_hitl_requests(airflow_db, tmp_path):
    """Real rows (a DAG synced as the dag-processor does, a run with its task instances) and a HITL request on each."""
    from airflow.api.common.delete_dag import delete_dag
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.hitl import HITLDetail
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    from stockops.orchestration import hitl

    (tmp_path / "approvals.py").write_text(HITL_DAG)
    with create_session() as session:
        session.merge(DagBundleModel(name="stockops-dashboard-test"))
    sync_bag_to_db(DagBag(dag_folder=str(tmp_path)), "stockops-dashboard-test", None)
    with create_session() as session:
        dag = DBDagBag().get_latest_version_of_dag("stockops_dashboard_approvals", session=session)
        run = dag.create_dagrun(run_id=f"manual__{tmp_path.name}", run_after=datetime.now(UTC),
                                run_type=DagRunType.MANUAL, triggered_by=DagRunTriggeredByType.TEST,
                                state=DagRunState.RUNNING, session=session)
        for ti in sorted(run.get_task_instances(session=session), key=lambda ti: ti.task_id):
            ti.state = "awaiting_input"
            number = int(ti.task_id[-1])
            session.add(HITLDetail(ti_id=ti.id, options=["Approve", "Reject"], subject=f"held day {number}",
                                   responded_at=datetime.now(UTC) if number == 1 else None))

    try:
        mine = [a for a in hitl.pending_approvals() if a["run_id"] == f"manual__{tmp_path.name}"]
        assert [(a["dag_id"], a["task_id"], a["subject"], a["options"], a["state"]) for a in mine] == [
            ("stockops_dashboard_approvals", f"review_{i}", f"held day {i}", ["Approve", "Reject"], "awaiting_input")
            for i in (0, 2)]  # review_1 was answered
        assert not [a for a in hitl.pending_approvals({"stock_ingest"}) if a["dag_id"] == mine[0]["dag_id"]]
    finally:  # the metadata DB is shared by the test session
        delete_dag("stockops_dashboard_approvals")
    assert not [a for a in hitl.pending_approvals() if a["dag_id"] == "stockops_dashboard_approvals"]


# ---- day one: nothing realized yet ---------------------------------------------------------------


def test_dashboard_with_one_realized_forecast_draws_it_and_says_when_coverage_starts(watchlist):
    """One realized forecast: the fan chart shows it (a band needs two days), no coverage chart on an empty axis,
    and the page says from how many realized forecasts coverage is drawn."""
    from stockops.data import store_for
    from stockops.reporting.dashboard.panels import ticker_panel

    records = [e for e in audit.read(watchlist.forecast_log) if e["ticker"] == "GOOG"][-1:]
    frame = store_for(watchlist, "GOOG").load()
    panel = ticker_panel("GOOG", records, frame)
    assert (panel.forecasts, panel.realized, panel.coverage_chart) == (1, 1, None)
    assert panel.note and "coverage over time is drawn from 5 on" in panel.note
    svg = base64.b64decode(panel.fan_chart.split(",", 1)[1]).decode()
    assert "one one-day-ahead forecast" in svg and "1970" not in svg
    unrealized = [{**records[0], "forecast_for": "2099-01-02", "as_of": "2099-01-01"}]  # its close is not published
    panel = ticker_panel("GOOG", unrealized, frame)
    assert (panel.realized, panel.coverage_chart, panel.source) == (0, None, "live")
    assert "no forecast realized yet" in panel.note


def test_dashboard_shows_the_champions_holdout_forecasts_before_any_live_day(watchlist):
    """Day one: the champion (here v2, the HARX-GKO baseline) has made no forecast that is realized; its panel
    shows its holdout forecasts from its evaluation against the closes that followed, and says so."""
    import numpy as np
    import pandas as pd

    from stockops.data import store_for
    from stockops.reporting.dashboard.page import render_page
    from stockops.reporting.dashboard.panels import ticker_panels

    audit.record(watchlist.audit_log, "promotion", from_version=None, to_version="2", reason="no champion yet",
                 decision="baseline", model_kind="harx_gko")
    frame = store_for(watchlist, "KO").load()  # KO: published, no forecasts in the log
    days = frame["Date"].astype(str).str[:10].to_numpy()
    n = 40
    closes = frame["Close"].to_numpy()
    holdout = pd.DataFrame({"ticker": "KO", "as_of": days[-n - 1:-1], "forecast_for": days[-n:],
                            "last_close": closes[-n - 1:-1], "point": 0.0, "variance": 1e-4,
                            **{q: np.full(n, z * 0.01) for q, z in (("q01", -2.3), ("q05", -1.6), ("q25", -0.7),
                                                                     ("q50", 0.0), ("q75", 0.7), ("q95", 1.6),
                                                                     ("q99", 2.3))}})
    watchlist.evaluation_dir.mkdir(parents=True)
    holdout.to_parquet(watchlist.evaluation_dir / "v2.parquet")

    panels = {p.ticker: p for p in ticker_panels(watchlist)}
    ko = panels["KO"]
    assert ko.source == "holdout" and ko.fan_chart and ko.coverage_chart
    assert "v2's forecasts on its holdout" in ko.note and f"{n} days" in ko.note
    moves = np.abs(np.log(closes[-n:] / closes[-n - 1:-1]))
    assert ko.coverage_90 == pytest.approx(np.mean(moves <= 0.016))  # the 90 % band is +-1.6 % around the close
    assert panels["GOOG"].source == "live"  # realized own forecasts win
    page = render_page(watchlist, user="admin", approvals=[])
    assert 'data-source="holdout"' in page and "HARX-GKO (classical baseline)" in page


def test_the_gates_verdict_becomes_the_training_runs_note(plugin, settings):
    """The grid shows at a glance what a stock_train run decided: refused with the baseline serving, refused with
    the champion unchanged, promoted; nothing for another DAG or a run that never reached the gate."""
    run = dag_run("stock_train", run_id="asset_triggered__1")
    audit.record(settings.audit_log, "gate", version="1", decision="refused", dag_run_id=run.run_id,
                 reason="refused: worse than HARX-GKO on QLIKE (gain -0.1604 nats/day)")
    audit.record(settings.audit_log, "baseline", version="2", dag_run_id=run.run_id,
                 reason="no model has passed the gate yet")
    audit.record(settings.audit_log, "promotion", from_version=None, to_version="2", dag_run_id=run.run_id,
                 decision="baseline", reason="no champion yet")
    plugin.listeners[0].on_dag_run_success(dag_run=run, msg="success")
    assert run.note.startswith("v2 HARX-GKO baseline serves (no model has passed the gate yet). Candidate REFUSED v1")
    assert "gain -0.1604" in run.note

    later = dag_run("stock_train", run_id="asset_triggered__2")
    audit.record(settings.audit_log, "gate", version="3", decision="refused", dag_run_id=later.run_id,
                 reason="refused: does not beat the champion significantly")
    plugin.listeners[0].on_dag_run_success(dag_run=later, msg="success")
    assert later.note.endswith("| champion unchanged")

    failed = dag_run("stock_train", run_id="manual__3")
    audit.record(settings.audit_log, "gate", version="4", decision="promoted", dag_run_id=failed.run_id,
                 reason="promoted: QLIKE 1.40 vs HARX-GKO 1.44")
    plugin.listeners[0].on_dag_run_failed(dag_run=failed, msg="task_failure")  # its deploy failed
    assert failed.note == "PROMOTED v4: promoted: QLIKE 1.40 vs HARX-GKO 1.44 | NOT deployed"
    for other in (dag_run("stock_ingest", run_id="asset_triggered__1"), dag_run("stock_train", run_id="manual__9")):
        plugin.listeners[0].on_dag_run_success(dag_run=other, msg="success")
        assert other.note is None
