"""The front door: what ``make run`` starts really comes up and shows a green ingest run."""

from __future__ import annotations

import time
import urllib.request

import psutil
import pytest

from stockops.config import get_settings
from stockops.platform import LocalPlatform, stop_process_tree
from stockops.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_local_platform_runs_ingest_green_and_stops_cleanly(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    platform = LocalPlatform(get_settings(), port=free_port(), mlflow_port=free_port())
    proc = platform.start()
    mlflow_proc = platform.start_mlflow_ui()
    pids: list[int] = []
    try:
        platform.wait_healthy(proc, timeout=240)
        pids = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
        platform.ensure_dags_ready(timeout=180)
        platform.trigger_first_ingest()
        token = platform.api_token()
        assert platform.api("dags/stock_ingest", token)["is_paused"] is False

        deadline, states = time.monotonic() + 240, []
        while time.monotonic() < deadline:
            runs = platform.api("dags/stock_ingest/dagRuns?order_by=-run_after", token)["dag_runs"]
            states = [r["state"] for r in runs]
            if "success" in states and not {"queued", "running"} & set(states):
                break
            time.sleep(3)
        assert "success" in states and "failed" not in states, states
        latest = platform.settings.home / "data" / "GOOG" / "latest.json"
        assert latest.exists()
        pids.append(mlflow_proc.pid)
        with urllib.request.urlopen(f"{platform.mlflow_url}/health", timeout=10) as resp:
            assert resp.status == 200
    finally:
        stop_process_tree(mlflow_proc)
        stop_process_tree(proc)
    time.sleep(1)
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
