"""The front door: what ``make run`` starts really comes up, serves its champion, rolls back through
Airflow's REST API and CLI with authentication on, shows a green ingest run and the dashboard.

One platform serves the whole module (starting one takes about a minute on two cores): the tests
below use it in file order (the rollbacks before the first ingest) and the last one stops it and
checks that nothing is left.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from subprocess import Popen

import psutil
import pytest

from stockops import audit
from stockops.config import get_settings
from stockops.platform import LocalPlatform, stop_process_tree
from stockops.processes import free_port, http_json, wait_until
from tests.integration.conftest import SMALL_WATCHLIST
from tests.integration.helpers import served_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by `make browser`


@dataclass
class Running:
    """The module's platform: Airflow's components under ``proc`` and the MLflow UI."""

    platform: LocalPlatform
    proc: Popen
    mlflow_proc: Popen
    pids: list[int] = field(default_factory=list)  # every process of both trees seen while it ran

    def tree(self) -> list[psutil.Process]:
        return [p for root in (self.proc, self.mlflow_proc) if psutil.pid_exists(root.pid)
                for p in (psutil.Process(root.pid), *psutil.Process(root.pid).children(recursive=True))]

    def remember_processes(self) -> None:
        self.pids.extend(p.pid for p in self.tree() if p.pid not in self.pids)

    def stop(self) -> None:
        """Stop everything it started (the serving endpoint a promotion deployed too); idempotent."""
        from stockops.serving import stop_serving

        stop_process_tree(self.mlflow_proc)
        stop_process_tree(self.proc)
        stop_serving(self.platform.settings)


@pytest.fixture(scope="module")
def running(model_home, tmp_path_factory):
    """A platform as ``make run`` starts it, healthy, serving its champion, on a fresh Airflow home and a
    home that holds the session's two small models (v1 ``@champion``, v2's bento built) and no data newer
    than their training day."""
    root = tmp_path_factory.mktemp("platform")
    with pytest.MonkeyPatch.context() as env:
        model_home.copy_to(env, root / "home")
        env.setenv("AIRFLOW_HOME", str(root / "airflow"))
        # Three tickers and the small model: the front door is the same, the first ingest (and the training
        # its Asset event starts) take a fraction of the 18 tickers' time (190 s of ingest measured with 18).
        env.setenv("STOCKOPS_TICKERS", SMALL_WATCHLIST)
        env.setenv("STOCKOPS_SERVE_SPARES", "0")  # no warm spare per bento: failover is the fault drills' business
        platform = LocalPlatform(get_settings(), port=free_port(), mlflow_port=free_port())
        proc = platform.start()
        started = Running(platform, proc, platform.start_mlflow_ui())
        try:
            platform.wait_healthy(proc, timeout=240)
            started.remember_processes()  # the components live until the platform is stopped
            platform.serve_champion()  # as `make run` does after the start
            yield started
        finally:
            started.stop()


@pytest.fixture(scope="module")
def ingested(running) -> list[str]:
    """Every DAG parsed by the platform's dag-processor, ``stock_ingest`` unpaused and its first run finished;
    the states of its runs.

    ``make run`` unpauses every DAG; here the training and monitoring runs the new snapshots would start stay
    queued behind their paused DAGs (two more minutes of both cores): the Celery platform test runs that
    chain through a real scheduler.
    """
    from stockops.platform import DAG_IDS

    platform = running.platform
    token = platform.api_token()  # before the ingest's tasks take both cores
    deadline, parsed = time.monotonic() + 180, set()
    while not set(DAG_IDS) <= parsed and time.monotonic() < deadline:
        parsed = {d["dag_id"] for d in platform.api("dags?limit=100", token)["dags"]}
        time.sleep(0 if set(DAG_IDS) <= parsed else 2)
    assert set(DAG_IDS) <= parsed, f"not parsed by the dag-processor: {set(DAG_IDS) - parsed}"
    platform.ensure_dags_ready(["stock_ingest"], timeout=180)
    platform.trigger_first_ingest()
    assert platform.api("dags/stock_ingest", token)["is_paused"] is False
    deadline, states = time.monotonic() + 240, []
    while time.monotonic() < deadline:
        runs = platform.api("dags/stock_ingest/dagRuns?order_by=-run_after", token)["dag_runs"]
        states = [r["state"] for r in runs]
        if "success" in states and not {"queued", "running"} & set(states):
            break
        time.sleep(3)
    return states


def test_local_platform_exposes_nothing(running):
    """What ``make run`` starts listens on loopback only (no Airflow log server on 0.0.0.0) and runs with
    telemetry off (its files and logs: :func:`test_local_platform_stops_cleanly_and_keeps_its_secrets`)."""
    from tests.unit.test_exposure import TELEMETRY_OFF

    platform, proc, mlflow_proc = running.platform, running.proc, running.mlflow_proc
    wait_all_components_healthy(platform)
    platform.api_token()  # the admin password we created is the one Airflow accepts
    wait_until(lambda: http_json(f"{platform.mlflow_url}/health", timeout=5)[0] == 200, timeout=120,
               interval=1, what="the MLflow UI", proc=mlflow_proc)  # it may start after Airflow is up
    tree = running.tree()  # with the dag-processor's short-lived parsing processes: one may be gone by now
    listening = {(c.laddr.ip, c.laddr.port) for p in tree for c in unless_gone(p.net_connections, kind="inet")
                 if c.status == psutil.CONN_LISTEN}
    assert {platform.port, platform.mlflow_port} <= {port for _, port in listening}, listening
    assert {ip for ip, _ in listening} <= {"127.0.0.1", "::1"}, listening
    # Airflow's components rename themselves (setproctitle), which blanks /proc/<pid>/environ: those are
    # skipped; the launcher, the MLflow server and every component's helpers are read.
    readable = {p.pid: env for p in tree if (env := unless_gone(p.environ))}
    assert {proc.pid, mlflow_proc.pid} <= set(readable) and len(readable) >= 4, [p.cmdline() for p in tree]
    assert all(TELEMETRY_OFF.items() <= env.items() for env in readable.values())


def test_rollback_from_the_rest_api_and_the_cli_with_authentication_on(running, model_home):
    """Before any ingest (every DAG but ``stock_rollback`` still paused): v2 is promoted in-process, then the
    real scheduler rolls back to v1 on a REST request and forward again from the CLI; the plugin's listener
    and its web routes are checked on the same platform."""
    from stockops.champion import history
    from stockops.contracts import Built
    from stockops.serving import deploy_candidate

    platform = running.platform
    settings = platform.settings
    assert served_version(settings) == "1", "make run serves the champion it finds"
    assert deploy_candidate(Built.from_xcom(model_home.built_v2), reason="second, promoted").deploy.outcome \
        == "succeeded"
    assert served_version(settings) == "2"
    assert [(c["from_version"], c["to_version"]) for c in history(settings)] == [(None, "1"), ("1", "2")]

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


def http_status(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_local_platform_runs_ingest_green(running, ingested):
    assert "success" in ingested and "failed" not in ingested, ingested
    platform = running.platform
    assert (platform.settings.home / "data" / "GOOG" / "latest.json").exists()
    with urllib.request.urlopen(f"{platform.mlflow_url}/health", timeout=10) as resp:
        assert resp.status == 200


def unless_gone(read, **kwargs):
    """``read(**kwargs)`` of a process, or an empty list if it has exited meanwhile."""
    try:
        return read(**kwargs)
    except psutil.NoSuchProcess:
        return []


# ---- the dashboard, in a real browser ----------------------------------------------------


def forecasts_for_the_watchlist(settings) -> dict[str, int]:
    """Real HARX-GKO forecasts of each published ticker's last 60 days in the forecast log; ticker -> records.

    The platform's own champion forecasts need a promoted model and a session per forecast day; the
    benchmark's walk gives 60 realized one-day-ahead forecasts per ticker in about a second, written
    through the monitor's own ``record_forecasts``.
    """
    from stockops.ingest import store_for
    from stockops.monitoring import record_forecasts
    from tests.unit.test_plugin import baseline_forecast_records

    records = {}
    for ticker in settings.tickers:
        store = store_for(settings, ticker)
        if store.latest() is not None:
            records[ticker] = baseline_forecast_records(ticker, store.load())
    record_forecasts(settings.forecast_log, [r for rs in records.values() for r in rs])
    return {ticker: len(rs) for ticker, rs in records.items()}


def test_dashboard_behind_the_login_in_a_browser(running, ingested):
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make browser` installs Debian's chromium"
    platform = running.platform
    settings = platform.settings
    forecasts = forecasts_for_the_watchlist(settings)
    assert forecasts.get("GOOG") == 60, forecasts
    password = json.loads(settings.airflow_passwords_file.read_text())["admin"]
    dashboard = f"{platform.url}/stockops/"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # no session: the page is refused (sent to Airflow's login), and so is every other route
            stranger = browser.new_context()
            page = stranger.new_page()
            page.goto(dashboard)
            assert "/auth/login" in page.url and "/stockops/" not in page.url.split("?")[0], page.url
            assert page.locator("#fan-GOOG").count() == 0
            for path in ("dora.json", "dora", "monitor/latest", "monitor/latest.json", "gx/", "mlflow"):
                answer = stranger.request.get(f"{dashboard}{path}", max_redirects=0)
                assert answer.status == 401, (path, answer.status)
            stranger.close()

            # logged in through Airflow's own login form, which sends the browser back to the dashboard
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(dashboard)
            page.fill("input[name='username']", "admin")
            page.fill("input[name='password']", password)
            page.click("button[type='submit']")
            page.wait_for_url(dashboard, timeout=60_000)
            page.wait_for_load_state("load")
            assert "_token" in {c["name"] for c in context.cookies()}
            first = float(page.inner_text("#render-seconds"))
            for ticker in settings.tickers:
                section = page.locator(f"#ticker-{ticker}")
                assert section.count() == 1, ticker
                if ticker in forecasts:  # each chart is there and the browser could draw it
                    for kind in ("fan", "coverage"):
                        chart = page.locator(f"img#{kind}-{ticker}")
                        assert chart.is_visible(), (kind, ticker)
                        assert chart.evaluate("img => img.complete && img.naturalWidth") > 100, (kind, ticker)
                    # the 60 realized baseline forecasts, and the champion's own for the next session if the
                    # monitor has run since the ingest
                    assert re.search(r"\b6[01] forecast days, 60 realized", section.inner_text()), ticker
                else:
                    assert page.locator(f"#note-{ticker}").is_visible(), ticker
            for table in ("champion", "gate", "approvals", "monitor", "dora", "incidents"):
                assert page.locator(f"table#{table}").is_visible(), table
                assert page.locator(f"table#{table} tbody tr").count() >= 1, table
            assert page.locator("table#dora").inner_text().count("Deployment frequency") == 1
            links = {a.inner_text(): a.get_attribute("href") for a in page.locator("#links a").all()}
            assert links["MLflow UI"] == platform.mlflow_url and links["BentoML API docs"] == settings.serve_url + "/"
            assert (links["GX Data Docs"], links["Evidently report"]) == ("gx/", "monitor/latest")
            external = page.evaluate("""[...document.querySelectorAll('[src]')].map(e => e.getAttribute('src'))
                                        .filter(s => !s.startsWith('data:'))""")
            assert external == [] and page.locator("script").count() == 0

            started = time.perf_counter()
            page.reload()
            page.wait_for_load_state("load")
            reload_s = time.perf_counter() - started
            again = float(page.inner_text("#render-seconds"))
            print(f"\ndashboard of {len(settings.tickers)} tickers ({len(forecasts)} with forecasts): drawn in "
                  f"{first:.2f} s, {again:.2f} s from the chart cache; reload in the browser {reload_s:.2f} s")
            context.close()
        finally:
            browser.close()


# ---- last: the platform stops --------------------------------------------------------------


def test_local_platform_stops_cleanly_and_keeps_its_secrets(running):
    """Nothing it started is left running; its home and logs are owner-only; the admin password is in no log."""
    running.remember_processes()  # with whatever task processes run right now
    running.stop()
    time.sleep(1)
    left = [p for p in running.pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not left, [psutil.Process(p).cmdline() for p in left if psutil.pid_exists(p)]

    s = running.platform.settings
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
