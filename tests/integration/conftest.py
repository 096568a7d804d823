"""Fixtures shared by the integration tests: the DAGs as Airflow parses them, the small training profile."""

from __future__ import annotations

import pytest

from stockops.core.settings import get_settings

SMALL_WATCHLIST = "GOOG,JPM,QQQ"


@pytest.fixture(scope="session")
def all_dags(airflow_db) -> dict:
    """dag_id -> DAG, parsed from dags/ by Airflow's DagBag (no import errors allowed)."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.test_dag_integrity import DAGS_DIR

    bag = DagBag(dag_folder=str(DAGS_DIR))
    assert bag.import_errors == {}
    return bag.dags


@pytest.fixture
def small(settings, monkeypatch):
    """A fresh home (the ``settings`` fixture) that trains the small model (8 units, at most 8 epochs) on a
    three-ticker watchlist: the model ticker, a bank (real extreme days) and the market reference."""
    monkeypatch.setenv("STOCKOPS_TRAIN_PROFILE", "small")
    monkeypatch.setenv("STOCKOPS_TICKERS", SMALL_WATCHLIST)
    return get_settings()
