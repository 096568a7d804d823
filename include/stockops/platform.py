"""Start the platform locally (what ``make run`` does): Airflow standalone on this repo.

It migrates the metadata DB, starts ``airflow standalone`` (api-server, scheduler,
dag-processor, triggerer on SQLite) with this repo's ``dags/`` and ``plugins/``, waits until
the UI answers, makes sure the DAGs are unpaused, triggers a first ingest run so a newcomer
sees a green run within minutes, and prints where everything is. Ctrl-C stops what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stockops.config import Settings, airflow_environment, get_settings

DAG_IDS = ("stock_ingest",)


@dataclass
class LocalPlatform:
    settings: Settings
    host: str = "127.0.0.1"
    port: int = 8080

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        env = {**os.environ, **airflow_environment(self.settings)}
        env["AIRFLOW__API__HOST"] = self.host
        env["AIRFLOW__API__PORT"] = str(self.port)
        env["AIRFLOW__API__BASE_URL"] = self.url
        return env

    def airflow(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run one ``airflow`` CLI command against this platform's home."""
        return subprocess.run([_airflow_bin(), *args], env=self.env(), check=check, capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> subprocess.Popen:
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        self.settings.airflow_home.mkdir(parents=True, exist_ok=True)
        print(f"stockops home: {self.settings.home}")
        print("migrating the Airflow metadata DB ...", flush=True)
        self.airflow("db", "migrate")
        log_path = self.settings.logs_dir / "airflow-standalone.log"
        print(f"starting airflow standalone (log: {log_path}) ...", flush=True)
        log = open(log_path, "ab")
        return subprocess.Popen([_airflow_bin(), "standalone"], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def wait_healthy(self, proc: subprocess.Popen, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited with {proc.returncode}; see "
                                   f"{self.settings.logs_dir / 'airflow-standalone.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as resp:
                    health = json.load(resp)
                if health.get("scheduler", {}).get("status") == "healthy":
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(2)
        raise TimeoutError(f"Airflow did not become healthy at {self.url} within {timeout:.0f} s")

    def ensure_dags_ready(self, dag_ids: Sequence[str] = DAG_IDS, timeout: float = 180) -> None:
        """Wait until the dag-processor has parsed each DAG, then unpause it."""
        deadline = time.monotonic() + timeout
        pending = list(dag_ids)
        while pending and time.monotonic() < deadline:
            for dag_id in list(pending):
                if self.airflow("dags", "unpause", dag_id, check=False).returncode == 0:
                    pending.remove(dag_id)
            if pending:
                time.sleep(3)
        if pending:
            errors = self.airflow("dags", "list-import-errors", check=False).stdout
            raise RuntimeError(f"DAGs not parsed after {timeout:.0f} s: {pending}\n{errors}")

    def trigger_first_ingest(self) -> None:
        self.airflow("dags", "trigger", "stock_ingest")

    def print_banner(self) -> None:
        password_file = self.settings.airflow_passwords_file
        print(f"""
==============================================================================
 stockops is running
   Airflow UI      {self.url}   (user: admin)
   admin password  {password_file}
   data            {self.settings.data_dir}   (source: {self.settings.source})
   GX Data Docs    {self.settings.data_docs_dir / 'index.html'}
   logs            {self.settings.logs_dir}
 A first stock_ingest run was triggered; it turns green within a minute or two.
 Ctrl-C stops everything this command started.
==============================================================================""", flush=True)


def _airflow_bin() -> str:
    candidate = Path(sys.executable).with_name("airflow")
    return str(candidate) if candidate.exists() else "airflow"


def run_local(port: int | None = None) -> int:
    """Start the local platform and block until Ctrl-C."""
    settings = get_settings()
    platform = LocalPlatform(settings, port=port or int(os.environ.get("STOCKOPS_AIRFLOW_PORT", "8080")))
    proc = platform.start()
    try:
        platform.wait_healthy(proc)
        platform.ensure_dags_ready()
        platform.trigger_first_ingest()
        platform.print_banner()
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """Stop a process started with ``start_new_session=True`` and all its children, by id."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
