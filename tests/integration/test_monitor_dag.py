"""``stock_monitor`` through ``dag.test()``: calm data ends green, drift starts ``stock_train`` once, and every run
first records the champion's own forecasts (once per day and version).

The replay source serves the real GOOG series: on 2026-01-01 it ends on 2008-08-07 (a calm
summer), on 2026-04-15 on 2008-11-20, deep in the autumn-2008 crash. The champion is trained on
the first, so its recorded training window is 2004–2007.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from stockops.contracts import ForecastRecord
from stockops.core import audit, pointers
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


def make_champion(settings) -> str:
    """Train on the latest snapshot and promote, without a bento: the monitor reads the registry only."""
    from stockops.training import (
        evaluate_models,
        load_snapshots,
        prepare_features,
        promote_candidate,
        register_candidate,
        train_candidate,
    )

    features = prepare_features(load_snapshots(settings=settings), settings=settings)
    trained = train_candidate(features, reason="monitor test champion", settings=settings)
    registered = register_candidate(evaluate_models(trained, settings=settings), settings=settings)
    return promote_candidate(registered, reason="monitor test champion", settings=settings).version


def test_no_champion_is_green_and_triggers_nothing(settings, monitor):
    from stockops.ingest import ingest_day

    ingest_day(CALM_DAY, settings=settings)
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

    ingest_day(CALM_DAY, settings=small)
    assert str(make_champion(small)) == "1"
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
        # recorded as served: corrected by the champion's online calibration state, which it names
        state = pointers.read(small.online_calibration_path)
        assert state["model_version"] == "1" and forecast["calibration"]["model_version"] == "1"
        assert forecast["calibration"]["through"] == state["through"]
        decision = audit.read(small.monitor_log)[-1]
        assert decision["reason"].startswith("nothing crossed") and decision["drift_share"] < 0.5
        assert decision["live_error_source"] == "replay", "a fresh champion has no realized forecast of its own"
        assert "from the champion replayed on the snapshot's last 60 days" in decision["reason"]
        assert decision["scorecard"]["status"] == "insufficient" and decision["scorecard"]["days"] == 0
        assert "calibration scorecard insufficient" in decision["reason"]
        online = decision["scorecard"]["online_calibration"]
        assert online["status"] == "ok" and online["model_version"] == "1" and online["days"] == state["days"]
        assert decision["current_window"] == ["2008-05-14", "2008-08-07"]
        assert decision["reference_window"][1] < "2008-01-01", "the reference is the champion's training window"

        ingest_day(CRASH_DAY, settings=small)
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
        assert artifacts == {"monitor/decision.json", "monitor/scorecard.json"}, "the HTML is stored once"
        assert logged.data.tags["evidently_report"] == decision["report"]
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


# ---- a champion clearly worse than the previous one: proposed, asked, approved, rolled back --------
def realized_records(frame, version: str, variance_scale: float, days: int = 60) -> list[ForecastRecord]:
    """Forecast-log records of ``version`` for the snapshot's last ``days`` days: normal quantiles whose
    variance is ``variance_scale`` x the 20 days' realized variance before each forecast."""
    from stockops.monitoring.scorecard import QUANTILES

    z = {"q01": -2.326, "q05": -1.645, "q25": -0.674, "q50": 0.0, "q75": 0.674, "q95": 1.645, "q99": 2.326}
    day = frame["Date"].dt.strftime("%Y-%m-%d").to_numpy()
    close = frame["Close"].to_numpy(dtype="float64")
    returns = np.diff(np.log(close))
    out = []
    for k in range(len(frame) - days, len(frame)):
        variance = variance_scale * float(np.mean(returns[k - 21:k - 1] ** 2))
        out.append(ForecastRecord(ticker="GOOG", as_of=day[k - 1], forecast_for=day[k], model_version=version,
                                  snapshot_hash="seeded", last_close=float(close[k - 1]), point=0.0,
                                  forecast=float(close[k - 1]), variance=variance, role="seeded",
                                  quantiles={q: math.sqrt(variance) * z[q] for q in QUANTILES},
                                  made_at="2008-08-07T22:00:00"))
    return out


def test_a_clearly_worse_champion_is_proposed_for_rollback_and_an_approval_starts_it(small, monitor, all_dags):
    import threading

    from stockops.data import store_for
    from stockops.ingest import ingest_day
    from stockops.monitoring.forecasts import record_forecasts
    from tests.integration.helpers import AirflowApi

    ingest_day(CALM_DAY, settings=small)
    assert [str(make_champion(small)), str(make_champion(small))] == ["1", "2"]
    frame = store_for(small, "GOOG").load()
    # the platform's own records of the 60 days before: v1 (the previous champion, in the shadow) forecast
    # the realized variance, v2 (the champion) 25 times it (9 times: DM t -1.83 on these 60 days, not "clearly")
    record_forecasts(small.forecast_log, realized_records(frame, "1", 1.0) + realized_records(frame, "2", 25.0))
    proposals_before = dag_runs("stock_rollback_proposal")
    rollbacks_before = dag_runs("stock_rollback")
    try:
        checked = monitor.test()
        assert str(checked.state) == "success", states(checked)
        assert states(checked)["propose_rollback"] == "success"
        decision = audit.read(small.monitor_log)[-1]
        rollback = decision["rollback"]
        assert rollback["propose"] and (rollback["from_version"], rollback["to_version"]) == ("2", "1")
        assert rollback["comparison"]["pairs"] == 60 and rollback["comparison"]["dm_qlike_t"] <= -2
        roles = {(e["model_version"], e.get("role")) for e in audit.read(small.forecast_log)
                 if e["as_of"] == "2008-08-07"}
        assert roles == {("2", "champion"), ("1", "shadow")}, "the previous champion forecast the day in the shadow"
        (run_id,) = set(dag_runs("stock_rollback_proposal")) - set(proposals_before)
        conf = dag_runs("stock_rollback_proposal")[run_id]
        assert (conf["from_version"], conf["to_version"]) == ("2", "1")
        assert conf["evidence"] == rollback["reason"] and conf["report"] == decision["decision_path"]

        # the operator answers under Required actions (Airflow's own REST API) while the proposal run waits
        api, answered = AirflowApi(), {}

        def operator() -> None:
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    waiting = api.call("/api/v2/dags/stock_rollback_proposal/dagRuns/~/hitlDetails"
                                       "?response_received=false")["hitl_details"]
                    if waiting:
                        break
                    time.sleep(0.5)
                (question,) = waiting
                answered["subject"] = question["subject"]
                ti = question["task_instance"]
                api.call(f"/api/v2/dags/stock_rollback_proposal/dagRuns/{ti['dag_run_id']}/taskInstances/ask/-1/"
                         "hitlDetails", {"chosen_options": ["Approve"], "params_input": {"reason": "v2 misses"}},
                         method="PATCH")
            except BaseException as exc:  # reported by the test (the main thread)
                answered["error"] = repr(exc)

        thread = threading.Thread(target=operator, daemon=True)
        thread.start()
        asked = all_dags["stock_rollback_proposal"].test(run_conf=conf)
        thread.join(timeout=30)
        assert "error" not in answered, answered
        assert str(asked.state) == "success", states(asked)
        assert states(asked) == {"ask": "success", "rollback": "success"}
        assert answered["subject"] == f"Roll {small.model_name} back from v2 to v1?"
        (rollback_run,) = set(dag_runs("stock_rollback")) - set(rollbacks_before)
        started = dag_runs("stock_rollback")[rollback_run]
        assert started["version"] == "1" and started["force"] is False
        assert started["reason"].startswith("monitor proposal approved by admin: v2 misses. Evidence: rollback proposed")
        (answer,) = [e for e in audit.read(small.audit_log) if e["event"] == "rollback_proposal"]
        assert (answer["decision"], answer["by"], answer["from_version"], answer["to_version"]) == (
            "approved", "admin", "2", "1")

        # asked once: the next check finds the same evidence and does not ask again (cool-down)
        again = monitor.test()
        assert states(again)["propose_rollback"] == "skipped"
        assert "not proposed again" in audit.read(small.monitor_log)[-1]["rollback"]["reason"]
    finally:
        delete_dag_runs("stock_rollback_proposal", set(dag_runs("stock_rollback_proposal")) - set(proposals_before))
        delete_dag_runs("stock_rollback", set(dag_runs("stock_rollback")) - set(rollbacks_before))


def dag_runs(dag_id: str) -> dict[str, dict]:
    """run_id -> conf of every run of ``dag_id`` in the Airflow metadata DB."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return {r.run_id: dict(r.conf or {}) for r in session.query(DagRun).filter(DagRun.dag_id == dag_id)}


def delete_dag_runs(dag_id: str, run_ids) -> None:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id.in_(list(run_ids))).delete()
