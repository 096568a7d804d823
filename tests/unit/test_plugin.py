"""The stockops Airflow plugin, as Airflow loads it from the plugins folder.

Discovery and mounting go through Airflow's own plugins manager and the api-server's
``init_plugins``; the listener gets real ``DagRun`` objects; the web app is called over HTTP
(``TestClient``) on a fresh stockops home.
"""

from __future__ import annotations

import json
import logging
import struct
import sys
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stockops import audit

REPO = Path(__file__).resolve().parents[2]
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


@pytest.fixture
def client(settings):
    """The api-server's plugin mounting (``init_plugins``) on a bare FastAPI app, over HTTP."""
    from airflow.api_fastapi.app import init_plugins
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    init_plugins(app)
    with TestClient(app) as http:
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


def test_listener_never_raises_into_airflow(plugin, settings, caplog):
    recorder = plugin.listeners[0]
    with caplog.at_level(logging.WARNING):
        recorder.on_dag_run_failed(dag_run=object(), msg="task_failure")  # no dag_id, run_id, ...
    assert "could not record" in caplog.text
    # the log cannot be written: its folder is a file
    settings.dag_run_log.parent.parent.mkdir(parents=True)
    settings.dag_run_log.parent.write_text("not a folder")
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
    assert "run python -m stockops dora" in client.get("/stockops/dora").text


def test_app_index_and_redirects(client, settings):
    index = client.get("/stockops/")
    assert index.headers["content-type"].startswith("text/html")
    for href in ('href="mlflow"', 'href="bentoml"', 'href="monitor/latest"', 'href="gx/"', 'href="dora"'):
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


def test_app_serves_data_docs_and_the_dora_report(client, settings):
    docs = settings.data_docs_dir
    (docs / "validations").mkdir(parents=True)
    (docs / "index.html").write_text("<html>GX Data Docs index</html>")
    (docs / "validations" / "run.html").write_text("<html>one validation</html>")
    settings.reports_dir.mkdir(parents=True)
    (settings.reports_dir / "dora.png").write_bytes(png_bytes())
    numbers = {"deployment_frequency_per_week": 2.0, "change_failure_rate": 0.25}
    (settings.reports_dir / "dora.json").write_text(json.dumps(numbers))

    assert "GX Data Docs index" in client.get("/stockops/gx/").text
    assert "one validation" in client.get("/stockops/gx/validations/run.html").text
    bare = client.get("/stockops/gx", follow_redirects=False)
    assert bare.is_redirect and bare.headers["location"].endswith("/stockops/gx/")
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
    (settings.monitoring_dir / "report.html").symlink_to(secret)
    audit.record(settings.monitor_log, "monitor", decision="ok", report=str(settings.monitoring_dir / "report.html"))
    response = client.get("/stockops/monitor/latest")
    assert response.status_code == 404 and "TOP SECRET" not in response.text
