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

from stockops import audit
from stockops.cluster import CeleryPlatform, database_dsn, unreachable_services
from stockops.config import get_settings
from stockops.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.services]


@pytest.fixture
def services():
    missing = unreachable_services()
    if missing:
        pytest.skip("needs PostgreSQL and Redis for the CeleryExecutor proof: " + "; ".join(missing))


def wait_for(platform, token, dag_id: str, timeout: float = 600) -> dict:
    """The first run of ``dag_id`` once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = platform.api(f"dags/{dag_id}/dagRuns?order_by=run_after", token)["dag_runs"]
        if runs and runs[0]["state"] in ("success", "failed"):
            return runs[0]
        time.sleep(2)
    raise TimeoutError(f"{dag_id} did not finish within {timeout:.0f} s")


def task_states(platform, token, dag_id: str, run_id: str) -> dict[str, tuple[str, str]]:
    tis = platform.api(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", token)["task_instances"]
    return {t["task_id"]: (t["state"], t["queue"]) for t in tis}


def test_ingest_to_served_model_through_scheduler_and_celery_worker(services, settings, monkeypatch, tmp_path):
    import psycopg2

    from tests.integration.test_train_dag import served_version

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("STOCKOPS_TRAIN_PROFILE", "small")
    platform = CeleryPlatform(get_settings(), port=free_port(), mlflow_port=free_port())
    try:
        platform.wait_healthy(platform.start(), timeout=300)
        platform.ensure_dags_ready(["stock_ingest", "stock_train", "stock_monitor"], timeout=240)
        token = platform.api_token()
        ingest_id = platform.trigger("stock_ingest", token, logical_date="2026-11-20T22:00:00Z")

        ingest = wait_for(platform, token, "stock_ingest")
        assert (ingest["dag_run_id"], ingest["state"]) == (ingest_id, "success")
        train = wait_for(platform, token, "stock_train", timeout=900)
        tasks = task_states(platform, token, "stock_train", train["dag_run_id"])
        assert train["state"] == "success", tasks
        assert {t: s for t, (s, _) in tasks.items() if t in ("build", "deploy", "promote")} == {
            "build": "success", "deploy": "success", "promote": "success"}
        assert {q for _, q in tasks.values()} == {platform.run_name}, "every task went through our Celery queue"
        monitor = wait_for(platform, token, "stock_monitor")
        assert monitor["state"] == "success"
        assert served_version(settings) == "1", "the serving agent deployed the promoted model"

        # the state lives where the compose deployment keeps it: PostgreSQL, not SQLite
        with psycopg2.connect(database_dsn(platform.airflow_db)) as conn, conn.cursor() as cur:
            cur.execute("SELECT dag_id, state FROM dag_run WHERE dag_id = 'stock_train'")
            assert ("stock_train", "success") in cur.fetchall()
        with psycopg2.connect(database_dsn(platform.mlflow_db)) as conn, conn.cursor() as cur:
            cur.execute("SELECT name, version FROM model_versions")
            assert (settings.model_name, 1) in cur.fetchall()
        assert not (settings.home / "mlflow" / "mlflow.db").exists()
        deploy = [r for r in audit.read(settings.deploy_log) if r.get("kind") == "promotion"][-1]
        assert deploy["outcome"] == "succeeded" and deploy["request_id"], "deployed by the agent, on request"
    finally:
        platform.stop()
