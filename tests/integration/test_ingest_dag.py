"""Whole ``stock_ingest`` runs of a watchlist through Airflow's ``dag.test()`` on a migrated metadata DB.

The human-in-the-loop test also starts a real ``airflow api-server`` on that DB (simple auth
manager, login required) and answers the held days through its REST API, as an operator would.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pandas as pd
import pytest

from stockops.contracts import Published
from stockops.core import audit, pointers
from stockops.core.processes import free_port, venv_bin
from stockops.core.settings import get_settings
from stockops.data import store_for
from stockops.data.sources import shipped_series
from stockops.ingest import status_path
from stockops.launch.components import stop_process_tree
from tests.integration.helpers import states

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def ingest_dag(all_dags):
    return all_dags["stock_ingest"]


def run_day(dag, day: str):
    return dag.test(logical_date=datetime.fromisoformat(day).replace(hour=22, tzinfo=UTC))


def by_label(dagrun, task_id: str) -> dict[str, str]:
    """label -> state of each map index of a mapped task (the grid labels a chunk ``FIRST..LAST (n)``, a review by
    its ticker); a mapped task with nothing to map is one skipped instance, labelled ``-``."""
    return {ti.rendered_map_index or "-": str(ti.state) for ti in dagrun.get_task_instances() if ti.task_id == task_id}


def test_consecutive_sessions_each_publish_one_more_row_per_ticker(settings, ingest_dag, monkeypatch):
    monkeypatch.setenv("STOCKOPS_TICKERS", "GOOG,MSFT")
    stores = {t: store_for(get_settings(), t) for t in ("GOOG", "MSFT")}
    rows = {}
    for day in ("2026-11-19", "2026-11-20", "2026-11-23"):  # Thursday, Friday, Monday
        dagrun = run_day(ingest_dag, day)
        assert str(dagrun.state) == "success", states(dagrun)
        # one chunk of two tickers, nothing held: nobody is asked
        assert by_label(dagrun, "chunk") == {"GOOG..MSFT (2)": "success"}
        assert by_label(dagrun, "review") == {"-": "skipped"}
        # every ticker settled: one "day ingested" event, which training and the monitor follow
        assert states(dagrun)["settled"] == "success" and states(dagrun)["outcomes"] == "success"
        assert _asset_events(dagrun.run_id) == {"stockops_prices_GOOG", "stockops_prices_MSFT",
                                                "stockops_watchlist_day"}
        for ticker, store in stores.items():
            assert store.latest().logical_date == day
            rows.setdefault(ticker, []).append(store.latest().rows)
    for counts in rows.values():
        assert counts == [counts[0], counts[0] + 1, counts[0] + 2]

    # Re-running a day: same hash, no duplicate entry, latest stays on the newest data, no day event (nothing new
    # to train on).
    before = {t: s.latest() for t, s in stores.items()}
    rerun = run_day(ingest_dag, "2026-11-20")
    assert str(rerun.state) == "success" and states(rerun)["settled"] == "skipped"
    assert "stockops_watchlist_day" not in _asset_events(rerun.run_id)
    assert {t: s.latest() for t, s in stores.items()} == before
    assert {t: len(s.entries()) for t, s in stores.items()} == {"GOOG": 3, "MSFT": 3}


def test_a_day_the_market_is_closed_is_a_green_no_op(settings, ingest_dag):
    """Thanksgiving 2026: the run is green, no ticker is fetched, nothing is written."""
    dagrun = run_day(ingest_dag, "2026-11-26")
    assert str(dagrun.state) == "success"
    tis = {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()}
    assert tis.pop("watchlist") == "success"
    assert set(tis.values()) == {"skipped"}
    assert not (settings.home / "data").exists()


# ---- one ticker's bad data, two held days, decided over the REST API ---------------------------

class ApiServer:
    """``airflow api-server`` on the test session's metadata DB, stopped by process id."""

    def __init__(self, settings):
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(settings.home.parent / "api-server.log", "ab")
        self.proc = subprocess.Popen([venv_bin("airflow"), "api-server", "--port", str(self.port)],
                                     env={**os.environ, "AIRFLOW__API__BASE_URL": self.url}, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "airflow api-server exited"
            try:
                passwords = json.loads(self.settings.airflow_passwords_file.read_text())
                return self.call("/auth/token", {"username": "admin", "password": passwords["admin"]})["access_token"]
            except (OSError, ValueError, KeyError, urllib.error.URLError):
                time.sleep(1)
        raise TimeoutError(f"api-server not up at {self.url}")

    def call(self, path: str, payload: dict | None = None, token: str = "", method: str = "") -> dict:
        request = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(payload).encode() if payload is not None else None,
            method=method or ("POST" if payload is not None else "GET"),
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
        with urllib.request.urlopen(request, timeout=15) as resp:
            return json.load(resp)


def _csv_folder(tmp_path):
    """Real series for five tickers; GOOG's close of 2009-01-21 divided by 100 (a decimal shift)."""
    folder = tmp_path / "feed"
    folder.mkdir()
    for ticker in ("BAC", "JPM", "MSFT", "KO"):
        shipped_series(ticker).to_csv(folder / f"{ticker}.csv", index=False, date_format="%Y-%m-%d")
    goog = shipped_series("GOOG")
    goog.loc[goog["Date"] == pd.Timestamp("2009-01-21"), "Close"] /= 100
    goog.to_csv(folder / "GOOG.csv", index=False, date_format="%Y-%m-%d")
    pg = shipped_series("PG")  # two +30 % days in its history, on their own range and 4 x volume, undone next day
    for day in PG_WHIPSAWS:
        pg.loc[pg["Date"] == pd.Timestamp(day), ["High", "Close", "Volume"]] *= [1.32, 1.30, 4]
    pg.to_csv(folder / "PG.csv", index=False, date_format="%Y-%m-%d")
    return folder


PG_WHIPSAWS = ("2008-03-03", "2008-06-02")  # what no rule can settle in a first snapshot: a person, once, in bulk


def test_one_tickers_bad_data_stops_only_it_and_held_days_are_decided_over_the_rest_api(
        settings, ingest_dag, monkeypatch, tmp_path):
    from stockops.ingest import ingest_day

    monkeypatch.setenv("STOCKOPS_TICKERS", "BAC,JPM,GOOG,MSFT,KO,PG")
    monkeypatch.setenv("STOCKOPS_SOURCE", "csv")
    monkeypatch.setenv("STOCKOPS_CSV_PATH", str(_csv_folder(tmp_path)))
    current = get_settings()
    server = ApiServer(current)
    try:
        for ticker in current.tickers[:-1]:  # the published baseline: up to Friday 2009-01-16, in-process (PG: none)
            assert isinstance(ingest_day("2009-01-16", ticker, settings=current), Published)
        baseline = {t: store_for(current, t).latest() for t in current.tickers}
        token = server.wait()

        # Wednesday 2009-01-21 (Monday was Martin Luther King Jr. Day): BAC +31 %, JPM +25 % in the newest
        # session, both backed by the day's range and volume; GOOG's close is off by 100 x. The operator
        # (a thread here) answers what the run asks; dag.test() keeps the run going until then.
        seen: dict = {}
        operator = threading.Thread(target=_operator, args=(server, token, current, baseline, seen), daemon=True)
        operator.start()
        dagrun = run_day(ingest_dag, "2009-01-21")
        operator.join(timeout=30)
        assert seen.get("error") is None, seen.get("error")
        assert seen["answered"] == ["BAC", "JPM", "PG"]
    finally:
        stop_process_tree(server.proc)

    # one chunk validates the six in one GX run: GOOG quarantined, MSFT and KO published, BAC, JPM and PG held
    assert by_label(dagrun, "chunk") == {"BAC..PG (6)": "success"}
    # each held ticker asked once; its review publishes (BAC, approved) or quarantines (JPM, rejected; PG, one of
    # its two history days rejected)
    assert by_label(dagrun, "review") == {"BAC": "success", "JPM": "success", "PG": "success"}
    assert states(dagrun)["settled"] == "success"
    # a held ticker never holds training up: the day's event went out before anybody answered
    tis = dagrun.get_task_instances()
    settled_at = next(ti.end_date for ti in tis if ti.task_id == "settled")
    assert all(settled_at < ti.end_date for ti in tis if ti.task_id == "review"), "the day event waited for a person"
    assert states(dagrun)["outcomes"] == "failed", "GOOG's bad data fails the run's outcome check, naming GOOG"
    assert str(dagrun.state) == "failed"
    latest = {t: store_for(current, t).latest() for t in current.tickers}
    assert {t: e and e.last_date for t, e in latest.items()} == {
        "BAC": "2009-01-21", "JPM": "2009-01-16", "GOOG": "2009-01-16", "MSFT": "2009-01-21", "KO": "2009-01-21",
        "PG": None}
    statuses = {t: pointers.read(status_path(current, t))["status"] for t in current.tickers}
    assert statuses == {"BAC": "published", "JPM": "rejected", "GOOG": "quarantined", "MSFT": "published",
                        "KO": "published", "PG": "rejected"}
    assert list((current.ticker_data_dir("GOOG") / "quarantine").glob("2009-01-21__*"))
    assert list((current.ticker_data_dir("JPM") / "quarantine").glob("2009-01-21__*"))

    decided = [e for e in audit.read(current.audit_log) if e["event"] == "data_decision"]
    # each deferred review resumes on its own: the two decisions land in either order
    assert sorted((e["ticker"], e["day"], e["decision"], e["by"], e["reason"]) for e in decided) == [
        ("BAC", "2009-01-21", "approved", "admin", "TARP news: a real rally"),
        ("JPM", "2009-01-21", "rejected", "admin", "checking with the vendor"),
        ("PG", PG_WHIPSAWS[0], "approved", "admin", "the first was real"),
        ("PG", PG_WHIPSAWS[1], "rejected", "admin", "the first was real")]
    assert all(e["dag_run_id"] == dagrun.run_id for e in decided)
    assert _asset_events(dagrun.run_id) == {"stockops_prices_BAC", "stockops_prices_MSFT", "stockops_prices_KO",
                                            "stockops_watchlist_day"}


def _operator(server: ApiServer, token: str, settings, baseline: dict, seen: dict) -> None:
    """Wait for the three questions, check what the run did meanwhile, then approve BAC, reject JPM and approve one
    of PG's two history days."""
    try:
        waiting = _wait_for_questions(server, token, expected=3)
        # the others do not wait for anybody: they publish while the two questions are open
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen["published_meanwhile"] = {t: store_for(settings, t).latest().last_date for t in ("MSFT", "KO")}
            if seen["published_meanwhile"] == {"MSFT": "2009-01-21", "KO": "2009-01-21"}:
                break
            time.sleep(1)
        assert seen["published_meanwhile"] == {"MSFT": "2009-01-21", "KO": "2009-01-21"}
        questions = {q["task_instance"]["rendered_map_index"]: q for q in waiting}
        assert set(questions) == {"BAC", "JPM", "PG"}
        assert "+31" in questions["BAC"]["subject"] and "2009-01-21" in questions["BAC"]["body"]
        assert "2 extreme moves" in questions["PG"]["subject"] and all(d in questions["PG"]["body"] for d in PG_WHIPSAWS)
        for ticker in ("BAC", "JPM", "PG"):
            assert store_for(settings, ticker).latest() == baseline[ticker], "held: nothing published yet"
        seen["answered"] = []
        for ticker, option, reason, only in (("BAC", "Approve", "TARP news: a real rally", ""),
                                             ("JPM", "Reject", "checking with the vendor", ""),
                                             ("PG", "Approve", "the first was real", PG_WHIPSAWS[0])):
            ti = questions[ticker]["task_instance"]
            answer = server.call(f"/api/v2/dags/stock_ingest/dagRuns/{ti['dag_run_id']}/taskInstances/"
                                 f"{ti['task_id']}/{ti['map_index']}/hitlDetails",
                                 {"chosen_options": [option], "params_input": {"reason": reason, "approve_only": only}},
                                 token, "PATCH")
            assert answer["responded_by"]["name"] == "admin"
            seen["answered"].append(ticker)
    except BaseException as exc:  # reported by the test, which is the main thread
        seen["error"] = repr(exc)
        _reject_all(server, token)  # so that dag.test() ends and the test fails instead of hanging
        raise


def _reject_all(server: ApiServer, token: str) -> None:
    details = server.call("/api/v2/dags/stock_ingest/dagRuns/~/hitlDetails?response_received=false", token=token)
    for detail in details["hitl_details"]:
        ti = detail["task_instance"]
        server.call(f"/api/v2/dags/stock_ingest/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/"
                    f"{ti['map_index']}/hitlDetails", {"chosen_options": ["Reject"]}, token, "PATCH")


def _wait_for_questions(server: ApiServer, token: str, expected: int, timeout: float = 240) -> list[dict]:
    deadline = time.monotonic() + timeout
    waiting: list[dict] = []
    while time.monotonic() < deadline:
        details = server.call("/api/v2/dags/stock_ingest/dagRuns/~/hitlDetails?response_received=false", token=token)
        waiting = [d for d in details["hitl_details"] if d["task_instance"]["state"] == "awaiting_input"]
        if len(waiting) >= expected:
            return waiting
        time.sleep(1)
    raise TimeoutError(f"{len(waiting)} of {expected} questions appeared under Required actions")


def _asset_events(run_id: str) -> set[str]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(AssetModel.name).join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetEvent.source_run_id == run_id)).scalars().all()
    return set(rows)
