"""Start the platform locally (what ``make run`` does): Airflow on SQLite on this repo.

The platform facade, :class:`LocalPlatform`: it migrates the metadata DB, starts Airflow's components (the
processes, and the owner-only files they get: :mod:`stockops.launch.components`) with this repo's ``dags/`` and
``plugins/``, waits until the UI answers, unpauses the DAGs through the REST API, triggers a first ingest run so a
newcomer sees a green run within minutes, prints where everything is and follows the first cycle to the first
forecast. :func:`run_local` is ``make run``; Ctrl-C stops what it started.

Exposure: every listener binds loopback (``LocalPlatform.host``); the Airflow home and the logs
folder are owner-only (0700), the admin password file and every log are 0600, and the password
is created before Airflow starts, so Airflow never generates one and prints it into a log.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from stockops.contracts import TickerStatus
from stockops.core.airflow_db import use_wal
from stockops.core.airflow_env import airflow_environment
from stockops.core.processes import venv_bin
from stockops.core.settings import MLFLOW_SERVER_ENV, Settings, get_settings
from stockops.data.calendar import sessions
from stockops.launch import components

log = logging.getLogger(__name__)

DAG_IDS = ("stock_ingest", "stock_train", "stock_monitor", "stock_rollback", "stock_rollback_proposal")
AIRFLOW_LOG = "airflow-standalone.log"
# SQLite's busy timeout for Airflow's metadata DB (see stockops.core.airflow_db)
SQLITE_CONNECT_ARGS = "stockops.core.airflow_db.CONNECT_ARGS"
PARALLELISM = 4  # task processes at once (AIRFLOW__CORE__PARALLELISM overrides): see LocalPlatform.env


@dataclass
class LocalPlatform:
    settings: Settings
    host: str = "127.0.0.1"
    port: int = 8080
    mlflow_port: int = 5000
    started: float = field(default_factory=time.monotonic)  # when `make run` began: the progress lines count from it

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        env = {**os.environ, **airflow_environment(self.settings)}
        env["AIRFLOW__API__HOST"] = self.host
        env["AIRFLOW__API__PORT"] = str(self.port)
        env["AIRFLOW__API__BASE_URL"] = self.url
        env["STOCKOPS_MLFLOW_URL"] = self.mlflow_url  # the plugin's link in the Airflow UI
        # At most PARALLELISM task processes at once. The LocalExecutor keeps that many workers alive for
        # good (about 175 MB each, idle); on two cores and SQLite's single writer more only queue
        # (bench/first_forecast.py: 18 tickers ingested in 66 s with 4, 75 s with 8; 0.7 GB less when idle).
        env.setdefault("AIRFLOW__CORE__PARALLELISM", str(PARALLELISM))
        if env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite").startswith("sqlite"):
            env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", SQLITE_CONNECT_ARGS)  # a write waits its turn
        # `airflow standalone` starts its components as `airflow ...` by name: use this venv's.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def sqlite_database(self) -> Path | None:
        """The file of Airflow's metadata DB when it is SQLite (``make run``'s default), else None."""
        conn = self.env().get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{self.settings.airflow_home / 'airflow.db'}"
        return Path(conn.removeprefix("sqlite:///")) if conn.startswith("sqlite:///") else None

    def airflow(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run one ``airflow`` CLI command against this platform's home."""
        return subprocess.run([venv_bin("airflow"), *args], env=self.env(), check=check, capture_output=True,
                              text=True, timeout=timeout)

    def prepare_home(self) -> None:
        """The home, the Airflow home and the logs folder owner-only (0700: what a file's own mode leaves open,
        from an older run, is closed by its folder), the admin password created private."""
        components.private_dir(self.settings.home)
        components.private_dir(self.settings.airflow_home)
        components.private_dir(self.settings.logs_dir)
        components.ensure_admin_password(self.settings.airflow_passwords_file)

    def migrate_older_home(self) -> None:
        """A home an older stockops wrote (its snapshot manifests and logs as files) moves into the stores first:
        what ``python -m stockops migrate-home`` does, said in one line; nothing to do on a new or migrated home."""
        from stockops.data.migrate import has_files_to_migrate, migrate_home

        if has_files_to_migrate(self.settings):
            print("this home keeps records in files (an older stockops): moving them into the stores ...", flush=True)
            print("  " + migrate_home(self.settings).summary().replace("\n", "\n  "), flush=True)

    def start(self) -> subprocess.Popen:
        """Migrate, then start Airflow's components under one process (:func:`run_components`); returns it."""
        self.prepare_home()
        print(f"stockops home: {self.settings.home}")
        self.migrate_older_home()
        print("migrating the Airflow metadata DB ...", flush=True)
        self.airflow("db", "migrate")
        database = self.sqlite_database()
        if database is not None:  # readers and the one writer stop blocking each other (stockops.core.airflow_db)
            use_wal(database)
        log_path = self.settings.logs_dir / AIRFLOW_LOG
        print(f"starting Airflow: {', '.join(c[0] for c in components.COMPONENTS)} (log: {log_path}) ...", flush=True)
        with components.private_log(log_path) as log:  # the child keeps its own copy
            return subprocess.Popen([venv_bin("python"), "-m", "stockops.launch.components"], env=self.env(),
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    def start_mlflow_ui(self) -> subprocess.Popen:
        """The MLflow tracking UI on the same store the DAGs write to."""
        self.settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
        components.private_dir(self.settings.logs_dir)
        with components.private_log(self.settings.logs_dir / "mlflow-server.log") as log:
            return subprocess.Popen(
                [venv_bin("mlflow"), "server",
                 "--backend-store-uri", self.settings.mlflow_tracking_uri,
                 "--default-artifact-root", self.settings.mlflow_artifacts_dir.as_uri(),
                 "--host", self.host, "--port", str(self.mlflow_port), "--workers", "1"],
                env={**self.env(), **MLFLOW_SERVER_ENV}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, proc: subprocess.Popen, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"Airflow exited with {proc.returncode}; see {self.settings.logs_dir / AIRFLOW_LOG}")
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
        """Wait until the dag-processor has parsed each DAG, then unpause it (through the REST API: an
        ``airflow dags unpause`` per DAG and try would start a Python process that imports Airflow each time)."""
        deadline = time.monotonic() + timeout
        pending = list(dag_ids)
        token = self.api_token()
        while pending and time.monotonic() < deadline:
            for dag_id in list(pending):
                try:
                    self.api(f"dags/{dag_id}", token, {"is_paused": False}, method="PATCH")
                except urllib.error.HTTPError as exc:
                    if exc.code != 404:  # 404: not parsed yet
                        raise
                else:
                    pending.remove(dag_id)
            if pending:
                time.sleep(2)
        if pending:
            errors = self.airflow("dags", "list-import-errors", check=False).stdout
            raise RuntimeError(f"DAGs not parsed after {timeout:.0f} s: {pending}\n{errors}")

    def api_token(self) -> str:
        """A JWT for the admin user (simple auth manager), as the REST API expects."""
        passwords = json.loads(self.settings.airflow_passwords_file.read_text())
        body = json.dumps({"username": "admin", "password": passwords["admin"]}).encode()
        request = urllib.request.Request(f"{self.url}/auth/token", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:  # as generous as `api`: a busy ingest slows it
            return json.load(resp)["access_token"]

    def api(self, path: str, token: str, payload: dict | None = None, method: str | None = None) -> dict:
        """Call the Airflow REST API (``/api/v2/...``) with a bearer token (POST with a payload, else GET)."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/{path.lstrip('/')}", method=method or ("POST" if payload is not None else "GET"),
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

    def trigger_first_ingest(self, token: str | None = None) -> str:
        """Ingest the newest NYSE session, unless a run of a recent session exists; returns the day ingested.

        On unpause the scheduler starts the DAG's latest interval by itself (the previous
        session): that run is the first ingest, and a second one would only double the start-up
        load. Otherwise the newest session is triggered (a weekend or holiday would be a no-op),
        at its close (22:00 UTC) or now when that is still ahead: the scheduler does not run a
        logical date in the future. Both through the REST API (an ``airflow`` CLI process each would
        import Airflow).
        """
        token = token or self.api_token()
        recent = sessions(date.today() - timedelta(days=14), date.today())
        newest = self._newest_ingest_day(token)
        if newest is not None and newest >= str(recent[-2]):
            return newest
        day = str(recent[-1])
        when = min(datetime.fromisoformat(f"{day}T22:00:00+00:00"), datetime.now(UTC)).isoformat(timespec="seconds")
        try:
            self.trigger("stock_ingest", token, logical_date=when)
        except urllib.error.HTTPError as exc:
            if exc.code != 409 or self._newest_ingest_day(token) != day:  # 409: the scheduler made it meanwhile
                raise RuntimeError(f"could not trigger stock_ingest for {day}: HTTP {exc.code} "
                                   f"{exc.read().decode(errors='replace')[:2000]}") from exc
        return day

    def _newest_ingest_day(self, token: str) -> str | None:
        """The logical day of the newest stock_ingest run, if there is one."""
        runs = self.api("dags/stock_ingest/dagRuns?order_by=-logical_date&limit=1", token)["dag_runs"]
        days = [str(r["logical_date"])[:10] for r in runs if r.get("logical_date")]
        return max(days) if days else None

    def wait_for_watchlist(self, day: str, timeout: float = 900) -> list[TickerStatus]:
        """Each ticker's outcome for ``day`` (published, quarantined, held), once every ticker has one."""
        from stockops.ingest import watchlist_status

        deadline = time.monotonic() + timeout
        rows = watchlist_status(self.settings)
        while time.monotonic() < deadline and any(r.logical_date != day for r in rows):
            time.sleep(3)
            rows = watchlist_status(self.settings)
        return rows

    def forecast_curl(self, ticker: str | None = None) -> str:
        """The Quickstart's request: tomorrow's forecast for one ticker (the model ticker by default)."""
        body = json.dumps({"ticker": ticker or self.settings.ticker})
        return f"curl -s -H 'Content-Type: application/json' -d '{body}' {self.settings.serve_url}/forecast"

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
   forecasts       POST {self.settings.serve_url}/forecast {{"ticker": "{self.settings.ticker}"}}   ({self.serving_line()})
                   POST {self.settings.serve_url}/forecast/batch {{}}   (every ticker; /predict takes your own OHLCV)
   API docs        {self.settings.serve_url}/   (OpenAPI; /livez /readyz /metrics)
   dashboard       {self.url}/stockops/   (behind the Airflow login: forecasts against closes per ticker,
                   champion, gate, approvals, DORA; GX Data Docs and the monitor report under Plugins > StockOps)
   rollback        Airflow UI > stock_rollback > Trigger (reason; version empty = the previous champion)
   records         .venv/bin/stockops history | watchlist | dora   (champion changes, ingest outcomes, DORA)
   logs            {self.settings.logs_dir}   (serving: {self.settings.serving_dir / 'logs'})
 The first cycle follows here as it happens: stock_ingest validates and publishes every ticker,
 then stock_train trains the global LSTM, scores it against GARCH/EWMA/HARX-GKO on the same
 ticker-days and gates it. The champion is the best model the platform has: an LSTM that passes
 the gate, or else the classical baseline HARX-GKO; every answer names its model_kind.
 Ctrl-C stops everything this command started, the endpoint included.
==============================================================================""", flush=True)

    def print_watchlist(self, day: str) -> None:
        """The first ingest's outcome per ticker, and where to decide what is held."""
        from stockops.ingest import HELD, format_watchlist

        rows = self.wait_for_watchlist(day)
        self.say(f"ingest ({day}): {format_watchlist(rows)}")
        if any(r.status is HELD for r in rows):
            self.say(f"decide the held ones: {self.url}/required_actions?response_received=false")

    def say(self, text: str) -> None:
        """One line of the first cycle's progress, with the seconds since ``make run`` started."""
        print(f"[{time.monotonic() - self.started:6.0f} s] {text}", flush=True)

    def follow_first_cycle(self, token: str, since: str, timeout: float = 1800) -> bool:
        """Print the first cycle as it happens: the training run, the gate's verdict, the deploy and, last, the
        endpoint answering for every ticker with a curl line to try; True once it answers. ``since``: the audit
        log's records before this moment (ISO) are not news."""
        deadline, told = time.monotonic() + timeout, set()
        while time.monotonic() < deadline:
            try:  # progress only: an API busy with the ingest's writes must not stop the platform
                runs = self.api("dags/stock_train/dagRuns?order_by=-run_after&limit=5", token)["dag_runs"]
            except (OSError, ValueError) as exc:
                runs = []
                log.debug("no training runs read this round: %s", exc)
            for run in runs:
                key = (run["dag_run_id"], run["state"])
                if key not in told and run["state"] in ("running", "success", "failed"):
                    told.add(key)
                    self.say(f"stock_train {run['dag_run_id']}: {run['state']}")
            self._tell_news(since, told)
            answered = self.forecasts_answering()
            if answered:
                # the champion change is recorded as the new bento starts answering: its line comes first
                settle = time.monotonic() + 15
                while not self._tell_news(since, told) and time.monotonic() < settle:
                    time.sleep(0.5)
                self.say(answered)
                self.say(f"try it:  {self.forecast_curl()}")
                return True
            time.sleep(3)
        self.say(f"no forecast served within {timeout:.0f} s: see the stock_train runs at {self.url}/dags/stock_train")
        return False

    def _tell_news(self, since: str, told: set) -> bool:
        """Say each audit record of the first cycle not said yet; whether a champion change has been said."""
        from stockops.core import audit

        for entry in audit.read(self.settings.audit_log):
            if str(entry.get("at", "")) < since or (entry.get("at"), entry.get("event")) in told:
                continue
            told.add((entry.get("at"), entry.get("event")))
            line = self._audit_line(entry)
            if line:
                self.say(line)
        return any(event in ("promotion", "rollback", "reconciliation") for _, event in told if isinstance(event, str))

    @staticmethod
    def _audit_line(entry: dict) -> str | None:
        """The first cycle's news in one line, from an audit log record (None: not news)."""
        event = entry.get("event")
        if event == "gate":
            return f"gate: candidate v{entry.get('version')} {entry.get('reason')}"
        if event == "baseline":
            return f"v{entry.get('version')} HARX-GKO (the classical baseline) registered to serve: {entry.get('reason')}"
        if event in ("promotion", "rollback", "reconciliation"):
            return (f"deployed: v{entry.get('to_version')} is the champion ({entry.get('model_kind') or 'lstm'}); "
                    f"it answers at the stable address")
        return None

    def forecasts_answering(self) -> str | None:
        """A line when ``/forecast/batch`` answers for every published ticker, else None."""
        from stockops.core.processes import http_json

        try:
            status, answer = http_json(f"{self.settings.serve_url}/forecast/batch", {}, timeout=30)
        except OSError:
            return None
        if status != 200 or not isinstance(answer, list) or not answer:
            return None
        good = [a for a in answer if "error" not in a]
        if len(good) < len(answer):
            return None
        kinds = sorted({str(a.get("model_kind")) for a in good})
        versions = sorted({str(a.get("model_version")) for a in good})
        return (f"{self.settings.serve_url}/forecast answers for {len(good)} of {len(answer)} tickers "
                f"(model v{', v'.join(versions)}, {', '.join(kinds)})")

    def first_cycle(self, proc: subprocess.Popen, timeout: float = 1800) -> bool:
        """What ``make run`` does once Airflow runs (``proc``): every DAG unpaused, the champion served if there is
        one, the first ingest triggered, the banner, then the first cycle followed until the endpoint answers for
        every ticker (True) or ``timeout`` passes (False)."""
        self.wait_healthy(proc)
        self.ensure_dags_ready()
        self.serve_champion()
        since = datetime.now(UTC).isoformat(timespec="seconds")
        token = self.api_token()
        day = self.trigger_first_ingest(token)
        self.print_banner()
        self.say(f"stock_ingest for {day}: fetching, validating and publishing {len(self.settings.tickers)} "
                 "tickers ...")
        self.print_watchlist(day)
        return self.follow_first_cycle(token, since, timeout=timeout)

    def serving_line(self) -> str:
        from stockops.serving import current

        state = current(self.settings)
        if state:
            return f"serving {self.settings.model_name} v{state['version']}, bento {state['bento_tag']}"
        return "no champion yet: it serves after the first training run"

    def serve_champion(self) -> None:
        """Serve the current champion at the stable address (after a restart, say)."""
        from stockops.serving import serve_champion

        self.say("serving the current champion, if there is one ...")
        try:
            serve_champion(self.settings, reason="make run: serve the current champion")
        except Exception as exc:  # the platform still starts; the DAG's next deploy retries
            self.say(f"could not serve the champion: {exc}")


def run_local(port: int | None = None) -> int:
    """Start the local platform and block until Ctrl-C."""
    settings = get_settings()
    platform = LocalPlatform(settings, port=port or int(os.environ.get("STOCKOPS_AIRFLOW_PORT", "8080")),
                             mlflow_port=int(os.environ.get("STOCKOPS_MLFLOW_PORT", "5000")))
    components.stop_on_sigterm()  # `kill PID` of this launcher stops the platform as cleanly as Ctrl-C does
    os.umask(0o077)  # everything the platform writes under the home (DBs, logs, records) is the owner's alone
    proc = platform.start()
    mlflow_proc = platform.start_mlflow_ui()
    try:
        platform.first_cycle(proc)
        return components.watch(settings, proc)
    except KeyboardInterrupt:
        return 0
    finally:
        components.ignore_interrupts()  # Ctrl-C reaches make too, which signals again: the clean-up must finish
        from stockops.serving import stop_serving

        stop_serving(settings)
        components.stop_process_tree(mlflow_proc)
        components.stop_process_tree(proc)

