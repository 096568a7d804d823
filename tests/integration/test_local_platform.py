"""The front door: what ``make run`` starts really comes up and shows a green ingest run."""

from __future__ import annotations

import json
import stat
import time
import urllib.request

import psutil
import pytest

from stockops.config import get_settings
from stockops.platform import LocalPlatform, stop_process_tree
from stockops.processes import free_port, http_json, wait_until

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


def test_local_platform_exposes_nothing(settings, monkeypatch, tmp_path):
    """What ``make run`` starts listens on loopback only (no Airflow log server on 0.0.0.0), runs with
    telemetry off, keeps its secrets and logs owner-only, and never writes the admin password to a log."""
    from tests.unit.test_exposure import TELEMETRY_OFF

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    platform = LocalPlatform(get_settings(), port=free_port(), mlflow_port=free_port())
    proc = platform.start()
    mlflow_proc = platform.start_mlflow_ui()
    try:
        platform.wait_healthy(proc, timeout=240)
        wait_all_components_healthy(platform)
        platform.api_token()  # the admin password we created is the one Airflow accepts
        wait_until(lambda: http_json(f"{platform.mlflow_url}/health", timeout=5)[0] == 200, timeout=120,
                   interval=1, what="the MLflow UI", proc=mlflow_proc)  # it may start after Airflow is up
        tree = [p for root in (proc, mlflow_proc) for p in (psutil.Process(root.pid),
                                                              *psutil.Process(root.pid).children(recursive=True))]
        listening = {(c.laddr.ip, c.laddr.port) for p in tree for c in p.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN}
        assert {platform.port, platform.mlflow_port} <= {port for _, port in listening}, listening
        assert {ip for ip, _ in listening} <= {"127.0.0.1", "::1"}, listening
        # Airflow's components rename themselves (setproctitle), which blanks /proc/<pid>/environ: those are
        # skipped; the launcher, the MLflow server and every component's helpers are read.
        readable = {p.pid: p.environ() for p in tree if p.environ()}
        assert {proc.pid, mlflow_proc.pid} <= set(readable) and len(readable) >= 4, [p.cmdline() for p in tree]
        assert all(TELEMETRY_OFF.items() <= env.items() for env in readable.values())
    finally:
        stop_process_tree(mlflow_proc)
        stop_process_tree(proc)

    s = platform.settings
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    assert mode(s.airflow_home) == 0o700 and mode(s.logs_dir) == 0o700
    assert mode(s.airflow_passwords_file) == 0o600 and mode(s.airflow_home / "airflow.cfg") == 0o600
    assert all(mode(log) == 0o600 for log in s.logs_dir.glob("*.log"))
    password = json.loads(s.airflow_passwords_file.read_text())["admin"]
    logs = [f for folder in (s.logs_dir, s.airflow_home / "logs") for f in folder.rglob("*") if f.is_file()]
    assert logs and not [f for f in logs if password in f.read_text(errors="replace")]


def wait_all_components_healthy(platform: LocalPlatform, timeout: float = 120) -> None:
    """Scheduler, dag-processor and triggerer all heartbeating (each would have started its listeners)."""
    deadline, health = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{platform.url}/api/v2/monitor/health", timeout=10) as resp:
            health = json.load(resp)
        if all(health.get(c, {}).get("status") == "healthy" for c in ("scheduler", "dag_processor", "triggerer")):
            return
        time.sleep(2)
    raise TimeoutError(f"not every component healthy within {timeout:.0f} s: {health}")
