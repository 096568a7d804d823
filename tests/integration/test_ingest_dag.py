"""Whole ``stock_ingest`` runs through Airflow's ``dag.test()`` on a migrated metadata DB."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stockops.config import get_settings
from stockops.ingest import store_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def ingest_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.test_dag_integrity import DAGS_DIR

    bag = DagBag(dag_folder=str(DAGS_DIR / "stock_ingest.py"))
    assert bag.import_errors == {}
    return bag.dags["stock_ingest"]


def run_day(dag, day: str):
    return dag.test(logical_date=datetime.fromisoformat(day).replace(hour=22, tzinfo=UTC))


def task_states(dagrun) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()}


def test_consecutive_days_each_publish_one_more_trading_day(settings, ingest_dag):
    store = store_for(settings)
    days = ["2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19"]  # Monday..Thursday
    seen = []
    for day in days:
        dagrun = run_day(ingest_dag, day)
        assert str(dagrun.state) == "success", task_states(dagrun)
        latest = store.latest()
        seen.append((latest.rows, latest.last_date, latest.logical_date))
    rows = [r for r, _, _ in seen]
    assert rows == list(range(rows[0], rows[0] + len(days)))
    last_dates = [d for _, d, _ in seen]
    assert last_dates == sorted(set(last_dates)), "each run must add a newer market day"
    assert [lg for _, _, lg in seen] == days
    assert len(store.entries()) == len(days)

    # Re-running a day: same hash, no duplicate entry, latest stays on the newest data.
    before = store.latest()
    dagrun = run_day(ingest_dag, days[1])
    assert str(dagrun.state) == "success"
    assert len(store.entries()) == len(days)
    assert store.latest() == before


def test_corrupted_csv_fails_the_run_and_publishes_nothing(settings, ingest_dag, goog, monkeypatch, tmp_path):
    good_csv = tmp_path / "good.csv"
    goog.iloc[:300].to_csv(good_csv, index=False, date_format="%Y-%m-%d")
    day = goog["Date"].iloc[299].date().isoformat()
    monkeypatch.setenv("STOCKOPS_SOURCE", "csv")
    monkeypatch.setenv("STOCKOPS_CSV_PATH", str(good_csv))
    assert str(run_day(ingest_dag, day).state) == "success"
    store = store_for(get_settings())
    baseline = store.latest()

    corrupted = goog.iloc[:301].copy()
    corrupted.loc[300, "Close"] = -corrupted.loc[300, "Close"]
    corrupted.loc[150, "High"] = corrupted.loc[150, "Low"] / 2
    bad_csv = tmp_path / "bad.csv"
    corrupted.to_csv(bad_csv, index=False, date_format="%Y-%m-%d")
    monkeypatch.setenv("STOCKOPS_CSV_PATH", str(bad_csv))
    bad_day = goog["Date"].iloc[300].date().isoformat()
    dagrun = run_day(ingest_dag, bad_day)

    states = task_states(dagrun)
    assert str(dagrun.state) == "failed"
    assert states["fetch"] == "success" and states["validate"] == "failed"
    assert states["publish"] == "upstream_failed"
    assert store.latest() == baseline
    assert len(store.entries()) == 1
    quarantined = list((store.root / "quarantine").glob(f"{bad_day}__*"))
    assert len(quarantined) == 1 and (quarantined[0] / "validation.json").exists()
