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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from stockops.config import Settings, airflow_environment, get_settings
from stockops.data.calendar import sessions
from stockops.processes import stop_pid_tree, venv_bin

DAG_IDS = ("stock_ingest", "stock_train", "stock_monitor", "stock_rollback")


@dataclass
class LocalPlatform:
    settings: Settings
    host: str = "127.0.0.1"
    port: int = 8080
    mlflow_port: int = 5000

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        env = {**os.environ, **airflow_environment(self.settings)}
        env["AIRFLOW__API__HOST"] = self.host
        env["AIRFLOW__API__PORT"] = str(self.port)
        env["AIRFLOW__API__BASE_URL"] = self.url
        env["STOCKOPS_MLFLOW_URL"] = self.mlflow_url  # the plugin's link in the Airflow UI
        # At most 8 task processes at once: a watchlist maps 4 tasks per ticker, and more processes
        # than that on a small machine only queue on the CPU and on SQLite's single writer.
        env.setdefault("AIRFLOW__CORE__PARALLELISM", "8")
        # `airflow standalone` starts its components as `airflow ...` by name: use this venv's.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def airflow(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run one ``airflow`` CLI command against this platform's home."""
        return subprocess.run([venv_bin("airflow"), *args], env=self.env(), check=check, capture_output=True,
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
        return subprocess.Popen([venv_bin("airflow"), "standalone"], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    def start_mlflow_ui(self) -> subprocess.Popen:
        """The MLflow tracking UI on the same store the DAGs write to."""
        self.settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.settings.logs_dir / "mlflow-server.log", "ab")
        return subprocess.Popen(
            [venv_bin("mlflow"), "server",
             "--backend-store-uri", self.settings.mlflow_tracking_uri,
             "--default-artifact-root", self.settings.mlflow_artifacts_dir.as_uri(),
             "--host", self.host, "--port", str(self.mlflow_port), "--workers", "1"],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

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

    def api_token(self) -> str:
        """A JWT for the admin user (simple auth manager), as the REST API expects."""
        passwords = json.loads(self.settings.airflow_passwords_file.read_text())
        body = json.dumps({"username": "admin", "password": passwords["admin"]}).encode()
        request = urllib.request.Request(f"{self.url}/auth/token", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.load(resp)["access_token"]

    def api(self, path: str, token: str, payload: dict | None = None) -> dict:
        """Call the Airflow REST API (``/api/v2/...``) with a bearer token."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/{path.lstrip('/')}", method="POST" if payload is not None else "GET",
            data=json.dumps(payload).encode() if payload is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        # generous: on two cores a busy ingest can keep SQLite's writer (and the API) for a while
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.load(resp)

    def trigger(self, dag_id: str, token: str, conf: dict | None = None, logical_date: str | None = None) -> str:
        """Start a DAG run through the REST API (as the UI's Trigger form does); returns its run id."""
        run = self.api(f"dags/{dag_id}/dagRuns", token, {"logical_date": logical_date, "conf": conf or {}})
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, token: str, timeout: float = 300) -> str:
        """Poll the REST API until the run is finished; returns its final state."""
        deadline, state = time.monotonic() + timeout, "unknown"
        while time.monotonic() < deadline:
            state = self.api(f"dags/{dag_id}/dagRuns/{run_id}", token)["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(0.5)
        raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")

    def trigger_first_ingest(self) -> str:
        """Ingest the newest NYSE session, unless a run of a recent session exists; returns the day ingested.

        On unpause the scheduler starts the DAG's latest interval by itself (the previous
        session): that run is the first ingest, and a second one would only double the start-up
        load. Otherwise the newest session is triggered (a weekend or holiday would be a no-op),
        at its close (22:00 UTC) or now when that is still ahead: the scheduler does not run a
        logical date in the future.
        """
        recent = sessions(date.today() - timedelta(days=14), date.today())
        newest = self._newest_ingest_day()
        if newest is not None and newest >= str(recent[-2]):
            return newest
        day = str(recent[-1])
        when = min(datetime.fromisoformat(f"{day}T22:00:00+00:00"), datetime.now(UTC)).isoformat(timespec="seconds")
        done = self.airflow("dags", "trigger", "stock_ingest", "--logical-date", when, check=False)
        if done.returncode != 0 and self._newest_ingest_day() != day:
            raise RuntimeError(f"could not trigger stock_ingest for {day}: {(done.stderr or done.stdout)[-2000:]}")
        return day

    def _newest_ingest_day(self) -> str | None:
        """The logical day of the newest stock_ingest run, if there is one."""
        listed = self.airflow("dags", "list-runs", "stock_ingest", "--output", "json", check=False)
        lines = [line for line in listed.stdout.splitlines() if line.startswith(("[{", "[]"))]
        try:
            runs = json.loads(lines[-1]) if listed.returncode == 0 and lines else []
        except ValueError:
            runs = []
        days = [str(r["logical_date"])[:10] for r in runs if r.get("logical_date")]
        return max(days) if days else None

    def wait_for_watchlist(self, day: str, timeout: float = 900) -> list[dict]:
        """Each ticker's outcome for ``day`` (published, quarantined, held), once every ticker has one."""
        from stockops.ingest import watchlist_status

        deadline = time.monotonic() + timeout
        rows = watchlist_status(self.settings)
        while time.monotonic() < deadline and any(r.get("logical_date") != day for r in rows):
            time.sleep(3)
            rows = watchlist_status(self.settings)
        return rows

    def print_banner(self) -> None:
        password_file = self.settings.airflow_passwords_file
        print(f"""
==============================================================================
 stockops is running
   Airflow UI      {self.url}   (user: admin)
   MLflow UI       {self.mlflow_url}   (experiment {self.settings.experiment_name}, model {self.settings.model_name})
   admin password  {password_file}
   watchlist       {len(self.settings.tickers)} tickers: {' '.join(self.settings.tickers)}
   data            {self.settings.home / 'data'}/<TICKER>   (source: {self.settings.source})
   decisions       {self.url}/required_actions?response_received=false   (held extreme moves)
   forecasts       POST {self.settings.serve_url}/predict   ({self.serving_line()}; model ticker {self.settings.ticker})
   API docs        {self.settings.serve_url}/   (OpenAPI; /livez /readyz /metrics)
   GX Data Docs    {self.settings.data_docs_dir / 'index.html'}
   monitor reports {self.settings.monitoring_dir}/<check>/drift_report.html, decision.json
                   (every decision: {self.settings.monitor_log.name}; MLflow: {self.settings.monitoring_experiment})
   reports in UI   {self.url}/stockops/   (also under Plugins > StockOps in the Airflow UI)
   rollback        Airflow UI > stock_rollback > Trigger (version, reason); history: python -m stockops history
   DORA report     python -m stockops dora   (table, {self.settings.reports_dir}/dora.json and dora.png)
   logs            {self.settings.logs_dir}   (serving: {self.settings.serving_dir / 'logs'})
 A first stock_ingest run was triggered for the newest NYSE session: every ticker of the
 watchlist is fetched, validated and published on its own (a summary follows here when all
 are done, in a minute or two). New snapshots start stock_train (one global risk model for
 the watchlist; a few minutes more: train, score against GARCH/EWMA/HARX-GKO, gate, and for a
 promoted model, bento build and a health-checked deploy to the endpoint above; the gate may
 well refuse: it says why in its log) and stock_monitor (drift and live error).
   curl -s -H 'Content-Type: application/json' {self.settings.serve_url}/predict -d \\
        '{{"open": [...], "high": [...], "low": [...], "closes": [...], "volume": [...], "market": [...]}}'
   (the same days in every list, oldest first: at least the model's window + 23, {self.settings.train_window + 23} by
   default; market: {self.settings.market or 'QQQ'} closes on those days, optional; API docs above)
 Ctrl-C stops everything this command started, the endpoint included.
==============================================================================""", flush=True)


    def print_watchlist(self, day: str) -> None:
        """The first ingest's outcome per ticker, and where to decide what is held."""
        from stockops.ingest import HELD, format_watchlist

        rows = self.wait_for_watchlist(day)
        print(f"\nfirst ingest ({day}): {format_watchlist(rows)}", flush=True)
        if any(r["status"] == HELD for r in rows):
            print(f"decide the held ones: {self.url}/required_actions?response_received=false", flush=True)

    def serving_line(self) -> str:
        from stockops.serving import current

        state = current(self.settings)
        if state:
            return f"serving {self.settings.model_name} v{state['version']}, bento {state['bento_tag']}"
        return "no champion yet: it starts serving after the first promotion"

    def serve_champion(self) -> None:
        """Serve the current champion at the stable address (after a restart, say)."""
        from stockops.serving import serve_champion

        print("serving the current champion, if there is one ...", flush=True)
        try:
            serve_champion(self.settings, reason="make run: serve the current champion")
        except Exception as exc:  # the platform still starts; the DAG's next deploy retries
            print(f"could not serve the champion: {exc}", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_local(port: int | None = None) -> int:
    """Start the local platform and block until Ctrl-C."""
    settings = get_settings()
    platform = LocalPlatform(settings, port=port or int(os.environ.get("STOCKOPS_AIRFLOW_PORT", "8080")),
                             mlflow_port=int(os.environ.get("STOCKOPS_MLFLOW_PORT", "5000")))
    # `kill PID` of this launcher stops the platform as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    proc = platform.start()
    mlflow_proc = platform.start_mlflow_ui()
    try:
        platform.wait_healthy(proc)
        platform.ensure_dags_ready()
        platform.serve_champion()
        day = platform.trigger_first_ingest()
        platform.print_banner()
        platform.print_watchlist(day)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        from stockops.serving import stop_serving

        stop_serving(settings)
        stop_process_tree(mlflow_proc)
        stop_process_tree(proc)


def stop_process_tree(proc: subprocess.Popen, grace: float = 20) -> None:
    """Stop ``proc`` and every process it started, by process id."""
    stop_pid_tree(proc.pid, grace)
    proc.poll()
