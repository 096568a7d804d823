"""Rollback through Airflow's REST API and CLI against a real platform: ``airflow standalone`` on
loopback (api-server with the simple auth manager, scheduler, dag-processor, triggerer), the real
scheduler running ``stock_rollback``, the endpoint answering over HTTP. The plugin's listener and
its web routes are checked on the same platform.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from stockops import audit
from stockops.config import get_settings
from stockops.platform import LocalPlatform, stop_process_tree
from stockops.processes import free_port
from tests.integration.helpers import served_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def http_status(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_rollback_from_the_rest_api_and_the_cli_with_authentication_on(settings, monkeypatch, tmp_path):
    from stockops.champion import history
    from stockops.ingest import ingest_day
    from stockops.training import train_in_process

    monkeypatch.setenv("STOCKOPS_TRAIN_PROFILE", "small")
    monkeypatch.setenv("STOCKOPS_TICKERS", "GOOG")  # the scheduler's own ingest run stays light: this is about rollback
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    ingest_day("2026-11-20")  # in-process: no Asset event, so the scheduler starts no training of its own
    assert train_in_process(trigger_reason="first", force_promote=True)["promoted"]
    assert train_in_process(trigger_reason="second, forced", force_promote=True)["promoted"]
    assert served_version(settings) == "2"

    platform = LocalPlatform(get_settings(), port=free_port(), mlflow_port=free_port())
    proc = platform.start()
    try:
        platform.wait_healthy(proc, timeout=240)
        platform.ensure_dags_ready(["stock_rollback"], timeout=180)
        body = b'{"logical_date": null, "conf": {"reason": "no token"}}'
        runs_url = f"{platform.url}/api/v2/dags/stock_rollback/dagRuns"
        assert http_status(runs_url, body, {"Content-Type": "application/json"}) == 401
        assert http_status(runs_url, body, {"Content-Type": "application/json",
                                            "Authorization": "Bearer not-a-token"}) == 403
        assert served_version(settings) == "2", "a refused request must not roll anything back"

        token = platform.api_token()
        run_id = platform.trigger("stock_rollback", token, {"reason": "REST API rollback test", "version": "1"})
        assert platform.wait_for_run("stock_rollback", run_id, token, timeout=300) == "success"
        assert served_version(settings) == "1"
        last = history(settings)[-1]
        assert (last["event"], last["from_version"], last["to_version"], last["dag_run_id"], last["reason"]) == (
            "rollback", "2", "1", run_id, "REST API rollback test")

        # the CLI, with the default version: the champion before the current one (v2 again)
        platform.airflow("dags", "trigger", "stock_rollback", "--conf", '{"reason": "CLI rollback test"}')
        deadline = time.monotonic() + 300
        while history(settings)[-1]["reason"] != "CLI rollback test" and time.monotonic() < deadline:
            time.sleep(1)
        assert (history(settings)[-1]["to_version"], served_version(settings)) == ("2", "2")

        # the plugin: its listener saw the scheduler's runs, its routes answer on the api-server
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            finished = [r for r in audit.read(settings.dag_run_log)
                        if r["dag_id"] == "stock_rollback" and r["state"] == "success"]
            if len(finished) == 2:
                break
            time.sleep(1)
        assert run_id in {r["run_id"] for r in finished}
        plugins = platform.api("plugins", token)["plugins"]
        (stockops,) = [p for p in plugins if p["name"] == "stockops"]
        assert {v["name"] for v in stockops["external_views"]} >= {"MLflow", "BentoML API", "Monitor report (Evidently)",
                                                               "Data Docs (GX)", "DORA report"}
        assert http_status(f"{platform.url}/stockops/") == 401  # behind Airflow's login
        assert http_status(f"{platform.url}/stockops/", headers={"Authorization": f"Bearer {token}"}) == 200
    finally:
        stop_process_tree(proc)
