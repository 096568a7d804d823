"""``stock_monitor`` through ``dag.test()``: calm data ends green, drift starts ``stock_train`` once, and every run
first records the champion's own forecasts (once per day and version).

The replay source serves the real GOOG series: on 2026-01-01 it ends on 2008-08-07 (a calm
summer), on 2026-04-15 on 2008-11-20, deep in the autumn-2008 crash. The champion is trained on
the first, so its recorded training window is 2004–2007.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stockops import audit
from tests.integration.helpers import states

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CALM_DAY, CRASH_DAY = "2026-01-01", "2026-04-15"


@pytest.fixture(scope="module")
def monitor(all_dags):
    return all_dags["stock_monitor"]


def training_runs() -> dict[str, dict]:
    """run_id -> conf of every stock_train run in the Airflow metadata DB."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return {r.run_id: dict(r.conf or {}) for r in session.query(DagRun).filter(DagRun.dag_id == "stock_train")}


def delete_training_runs(run_ids) -> None:
    """Remove the runs the monitor created: no scheduler here would ever run or finish them."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(DagRun).filter(DagRun.dag_id == "stock_train", DagRun.run_id.in_(list(run_ids))).delete()


def make_champion() -> str:
    """Train on the latest snapshot and promote, without a bento: the monitor reads the registry only."""
    from stockops.training import (
        evaluate_models,
        load_snapshots,
        prepare_features,
        promote_candidate,
        register_candidate,
        train_candidate,
    )

    registered = register_candidate(evaluate_models(train_candidate(prepare_features(load_snapshots()),
                                                                    trigger_reason="monitor test champion")))
    return promote_candidate(registered, trigger_reason="monitor test champion")["version"]


def test_no_champion_is_green_and_triggers_nothing(settings, monitor):
    from stockops.ingest import ingest_day

    ingest_day(CALM_DAY)
    before = training_runs()
    run = monitor.test()
    assert str(run.state) == "success", states(run)
    assert states(run)["score_watchlist"] == "success" and states(run)["trigger_retrain"] == "skipped"
    assert training_runs() == before
    assert not settings.forecast_log.exists(), "no champion, no forecast"
    (decision,) = audit.read(settings.monitor_log)
    assert decision["reason"].startswith("no champion yet") and decision["triggered"] is False


def test_calm_data_is_green_drift_starts_one_training_run_with_reason_and_report(small, monitor):
    import mlflow

    from stockops.ingest import ingest_day

    ingest_day(CALM_DAY)
    assert str(make_champion()) == "1"
    before = training_runs()
    created: set[str] = set()
    try:
        calm = monitor.test()
        assert str(calm.state) == "success", states(calm)
        assert states(calm)["score_watchlist"] == "success" and states(calm)["check"] == "success"
        assert states(calm)["trigger_retrain"] == "skipped"
        assert training_runs() == before, "calm data must not start a training run"
        (forecast,) = audit.read(small.forecast_log)  # only GOOG was ingested: JPM and QQQ have no snapshot
        assert (forecast["ticker"], forecast["as_of"], forecast["forecast_for"], forecast["model_version"]) == (
            "GOOG", "2008-08-07", "2008-08-08", "1") and forecast["dag_run_id"] == calm.run_id
        decision = audit.read(small.monitor_log)[-1]
        assert decision["reason"].startswith("nothing crossed") and decision["drift_share"] < 0.5
        assert decision["live_error_source"] == "replay", "a fresh champion has no realized forecast of its own"
        assert "from the champion replayed on the snapshot's last 60 days" in decision["reason"]
        assert decision["scorecard"]["status"] == "insufficient" and decision["scorecard"]["days"] == 0
        assert "calibration scorecard insufficient" in decision["reason"]
        assert decision["current_window"] == ["2008-05-14", "2008-08-07"]
        assert decision["reference_window"][1] < "2008-01-01", "the reference is the champion's training window"

        ingest_day(CRASH_DAY)
        drifted = monitor.test()
        assert str(drifted.state) == "success", states(drifted)
        assert states(drifted)["trigger_retrain"] == "success"
        created = set(training_runs()) - set(before)
        assert len(created) == 1
        (run_id,) = created
        conf = training_runs()[run_id]
        decision = audit.read(small.monitor_log)[-1]
        assert decision["triggered"] is True and decision["current_window"][1] == "2008-11-17"
        assert conf["reason"] == f"monitor: {decision['reason']}" and "data drift" in conf["reason"]
        assert conf["report"] == decision["report"] and Path(conf["report"]).exists()
        saved = Path(decision["decision_path"])
        assert saved.parent == Path(conf["report"]).parent
        assert {"drift_share", "drifted_columns", "live_rmse_ratio", "persistence_ratio", "triggered",
                "reason"} <= set(json.loads(saved.read_text()))

        mlflow.set_tracking_uri(small.mlflow_tracking_uri)
        logged = mlflow.get_run(decision["mlflow_run_id"])
        assert logged.data.tags["triggered"] == "True" and logged.data.metrics["drift_share"] >= 0.5
        artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(logged.info.run_id, "monitor")}
        assert artifacts == {"monitor/decision.json", "monitor/drift_report.html", "monitor/scorecard.json"}
        card = json.loads(Path(decision["scorecard_path"]).read_text())
        # the one own forecast realized (for 2008-08-08) is outside the window that ends 2008-11-17
        assert card == decision["scorecard"] and card["status"] == "insufficient" and card["days"] == 0

        # Same drift the next check: the training run it started is still queued (no scheduler
        # here), and the cool-down runs too: no second trigger.
        again = monitor.test()
        assert str(again.state) == "success" and states(again)["trigger_retrain"] == "skipped"
        assert set(training_runs()) - set(before) == created
        assert [f["as_of"] for f in audit.read(small.forecast_log)] == ["2008-08-07", "2008-11-17"], \
            "the same snapshot scored again adds no forecast"
        reason = audit.read(small.monitor_log)[-1]["reason"]
        assert reason.startswith("crossed, but not triggered")
        assert "stock_train already has 1 run(s) queued or running" in reason and "cool-down" in reason
    finally:
        delete_training_runs(set(training_runs()) - set(before))
