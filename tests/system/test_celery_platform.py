"""Beyond one machine, proven on real services: Airflow with CeleryExecutor (Redis broker), its
metadata DB and MLflow's backend store in PostgreSQL, every component a separate process, the
endpoint run by the serving agent (the compose ``serving`` container's role).

``stock_ingest`` is triggered through the REST API; the scheduler and the Celery worker — not
``dag.test()`` — then run ingest → train → build → deploy → promote and the monitor. Skipped, with
the reason, where PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) cannot be reached.
"""

from __future__ import annotations

import time

import pytest

from stockops.core import audit
from stockops.core.processes import free_port
from stockops.core.settings import get_settings
from stockops.launch.cluster import CeleryPlatform, database_dsn, unreachable_services
from stockops.model.gate import PERMISSIVE_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.services]


@pytest.fixture
def services():
    missing = unreachable_services()
    if missing:
        pytest.skip("needs PostgreSQL and Redis for the CeleryExecutor proof: " + "; ".join(missing))


def wait_idle(platform, token, dag_ids, timeout: float = 900) -> dict[str, list[dict]]:
    """Every run of ``dag_ids`` once none is queued or running (and each DAG has at least one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = {d: platform.api(f"dags/{d}/dagRuns?order_by=run_after", token)["dag_runs"] for d in dag_ids}
        if all(runs.values()) and not any(r["state"] in ("queued", "running") for rs in runs.values() for r in rs):
            return runs
        time.sleep(3)
    raise TimeoutError(f"{dag_ids} still busy after {timeout:.0f} s")


def task_states(platform, token, dag_id: str, run_id: str) -> dict[str, tuple[str, str]]:
    tis = platform.api(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", token)["task_instances"]
    return {t["task_id"]: (t["state"], t["queue"]) for t in tis}


def test_ingest_to_served_model_through_scheduler_and_celery_worker(services, settings, monkeypatch, tmp_path):
    import psycopg2
    from mlflow import MlflowClient

    from tests.integration.helpers import served_version

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("STOCKOPS_TRAIN_PROFILE", "small")
    for name, value in PERMISSIVE_ENV.items():  # this is about the deploy path through Celery, not the model
        monkeypatch.setenv(name, value)
    # One ticker: the mapped ingest still runs as mapped task instances through Celery (the local platform's
    # test fans three tickers out); each ticker costs four Celery task processes, each importing its stack.
    monkeypatch.setenv("STOCKOPS_TICKERS", "GOOG")
    # Triggered runs only: on unpause the scheduler would also start the latest scheduled ingest, and its day
    # event a second training and monitoring run (the schedule's own first run is the make-run platform test's).
    monkeypatch.setenv("STOCKOPS_INGEST_SCHEDULE", "manual")
    platform = CeleryPlatform(get_settings(), port=free_port(), mlflow_port=free_port())
    try:
        platform.wait_healthy(platform.start(), timeout=300)
        platform.ensure_dags_ready(["stock_ingest", "stock_train", "stock_monitor"], timeout=240)
        token = platform.api_token()
        ingest_id = platform.trigger("stock_ingest", token, logical_date="2026-11-19T12:00:00Z")
        runs = wait_idle(platform, token, ["stock_ingest", "stock_train", "stock_monitor"], timeout=1200)

        assert ingest_id in {r["dag_run_id"] for r in runs["stock_ingest"] if r["state"] == "success"}
        assert {r["state"] for rs in runs.values() for r in rs} == {"success"}, runs
        first = runs["stock_train"][0]["dag_run_id"]
        tasks = task_states(platform, token, "stock_train", first)
        assert {t: s for t, (s, _) in tasks.items() if t in ("build", "deploy", "verify")} == {
            "build": "success", "deploy": "success", "verify": "success"}, tasks
        queues = {q for rs_dag in runs for r in runs[rs_dag]
                  for _, q in task_states(platform, token, rs_dag, r["dag_run_id"]).values()}
        assert queues == {platform.run_name}, "every task went through this run's Celery queue"
        client = MlflowClient(tracking_uri=platform.mlflow_url)
        champion = client.get_model_version_by_alias(settings.model_name, "champion").version
        assert served_version(settings) == str(champion), "the serving agent deployed the champion"

        # the state lives where the compose deployment keeps it: PostgreSQL, not SQLite
        with psycopg2.connect(database_dsn(platform.airflow_db)) as conn, conn.cursor() as cur:
            cur.execute("SELECT dag_id, state FROM dag_run WHERE dag_id = 'stock_train'")
            assert ("stock_train", "success") in cur.fetchall()
        with psycopg2.connect(database_dsn(platform.mlflow_db)) as conn, conn.cursor() as cur:
            cur.execute("SELECT name, version FROM model_versions")
            assert (settings.model_name, int(champion)) in cur.fetchall()
        assert not (settings.home / "mlflow" / "mlflow.db").exists()
        deploy = [r for r in audit.read(settings.deploy_log) if r.get("kind") == "promotion"][-1]
        assert deploy["outcome"] == "succeeded" and deploy["request_id"], "deployed by the agent, on request"
    finally:
        platform.stop()
