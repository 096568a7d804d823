"""``stock_ingest``, ``stock_train`` and ``stock_rollback`` through ``dag.test()`` on one home.

Real parts throughout: the replayed series ingested and validated, models trained and logged to
MLflow, registered, gated, built as bentos and served on loopback; the endpoint asked over HTTP
which version answers. The module trains three models once (:func:`trained`): the training tests
read what those runs left, the rollback tests then move the champion back and forth between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from stockops import registry
from stockops.core import audit
from stockops.core.processes import free_port
from stockops.core.settings import get_settings
from tests.integration.conftest import SMALL_WATCHLIST
from tests.integration.helpers import WebhookReceiver, served_version, states

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# force_promote spelled out: dag.test() keeps the previous run's conf in the DAG's params
FIRST = {"force_promote": True, "reason": "integration test: first model, forced"}
SECOND = {"force_promote": True, "reason": "operator override, ticket 7"}
WEAK = {"epochs": 1, "window": 2, "force_promote": False, "reason": "deliberately weak: one epoch, two-day window"}


@dataclass
class Trained:
    settings: object
    env: dict  # the environment that points at the module's home
    runs: dict  # "first" | "second" | "weak" -> (state, task states)
    served_after: dict  # the run -> the version the endpoint answered with right after it
    audit_after: list  # the audit log when the three runs were done


@pytest.fixture(scope="module")
def dags(all_dags):
    return all_dags["stock_ingest"], all_dags["stock_train"], all_dags["stock_rollback"]


@pytest.fixture(scope="module")
def trained(dags, tmp_path_factory):
    """One home (three tickers, small model): ingest 2026-11-20, then ``stock_train`` three times: forced
    (v1, its merits recorded), forced (v2) and deliberately weak (v3, refused by the gate)."""
    from stockops.serving import stop_serving

    ingest, train, _ = dags
    # No warm spare beside each served bento (a bento start costs a core for 10-20 s here): spares and failover
    # are the serving fault drills' business, not this module's.
    env = {"STOCKOPS_HOME": str(tmp_path_factory.mktemp("train") / "home"), "STOCKOPS_SOURCE": "replay",
           "STOCKOPS_TRAIN_PROFILE": "small", "STOCKOPS_TICKERS": SMALL_WATCHLIST, "STOCKOPS_SERVE_PORT": str(free_port()),
           "STOCKOPS_SERVE_SPARES": "0"}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        settings = get_settings()
        try:
            assert str(ingest.test(logical_date=datetime(2026, 11, 20, 22, tzinfo=UTC)).state) == "success"
            runs, served = {}, {}
            for name, conf in (("first", FIRST), ("second", SECOND), ("weak", WEAK)):
                run = train.test(run_conf=conf)
                runs[name] = (str(run.state), states(run))
                served[name] = served_version(settings)
            yield Trained(settings, env, runs, served, audit.read(settings.audit_log))
        finally:
            stop_serving(settings)


def test_train_logs_everything_registers_gates_and_guards_the_champion(trained):
    """Each run is judged against the baselines (a forced one records its merits too) and logged in full; a
    forced run deploys; a weak one never reaches the endpoint."""
    from mlflow import MlflowClient

    from stockops.model.gate import GatePolicy, decide

    small = trained.settings
    assert {name: state for name, (state, _) in trained.runs.items()} == {n: "success" for n in trained.runs}
    client = MlflowClient(tracking_uri=small.mlflow_tracking_uri)
    v1 = registry.get_version(small, "1")
    run = registry.get_run(v1.run_id)
    metrics = run.data.metrics
    # the verdict on the merits is the one the gate's rule gives on the logged holdout scores
    candidate = {"qlike": metrics["qlike"], "coverage_90": metrics["coverage_90"], "rmse_ratio": metrics["rmse_ratio"]}
    merits = decide(candidate, {"qlike": metrics["harx_gko_qlike"]}, None, GatePolicy.from_settings(small))
    assert v1.tags["gate_decision"] == "forced" and "HARX-GKO" in v1.tags["gate_reason"]
    assert ("on its merits it passes" in v1.tags["gate_reason"]) == merits.promote, (merits, v1.tags["gate_reason"])
    assert trained.runs["first"][1]["verify"] == "success" and trained.served_after["first"] == "1"

    assert {"window", "epochs", "units", "tickers", "train_samples", "val_start", "test_start"} <= set(run.data.params)
    assert run.data.params["tickers"] == "3"
    for model in ("", "garch_normal_", "garch_t_", "ewma_", "har_gk_", "harx_gko_"):
        assert {f"{model}{m}" for m in ("qlike", "pinball", "coverage_50", "coverage_90", "var95_breaches",
                                        "var99_breaches", "kupiec99_p", "rmse_ratio")} <= set(metrics), model
    assert {"dm_qlike_vs_harx_gko", "dm_pinball_vs_harx_gko", "train_seconds", "variance_scale"} <= set(metrics)
    val_loss = client.get_metric_history(run.info.run_id, "val_loss")
    assert len(val_loss) >= 1 and [m.step for m in val_loss] == list(range(1, len(val_loss) + 1))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/fan_chart.png", "plots/calibration.png", "plots/qlike_by_ticker.png",
                         "plots/loss_curve.png"}
    assert "scores/per_ticker.json" in {a.path for a in client.list_artifacts(run.info.run_id, "scores")}
    assert "data_validation.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert inputs == {f"{t}-prices": ingest_latest(small, t).hash[:36] for t in ("GOOG", "JPM", "QQQ")}
    assert v1.tags["logical_date"] == "2026-11-20"

    assert trained.runs["second"][1]["verify"] == "success" and trained.served_after["second"] == "2"
    v2 = registry.get_version(small, "2")
    assert v2.tags["gate_decision"] == "forced" and v2.tags["deploy"].startswith("succeeded")
    assert v2.tags["bento_tag"].startswith("goog_forecast:v2-")
    promotion = [e for e in trained.audit_after if e["event"] == "promotion"][-1]
    assert str(promotion["to_version"]) == "2" and promotion["reason"] == "operator override, ticket 7"

    weak = trained.runs["weak"][1]
    assert weak["gate"] == "success" and weak["gate_passed"] == "success"
    assert {weak[t] for t in ("build", "deploy", "verify")} == {"skipped"}
    assert trained.served_after["weak"] == "2", "a refused candidate must not reach the endpoint"
    refused = registry.get_version(small, "3")
    assert refused.tags["gate_decision"] == "refused" and "champion" in refused.tags["gate_reason"]
    gates = [(e["decision"], str(e["version"])) for e in trained.audit_after if e["event"] == "gate"]
    assert gates == [("forced", "1"), ("forced", "2"), ("refused", "3")]


def ingest_latest(settings, ticker=None):
    from stockops.data import store_for

    return store_for(settings, ticker).latest()


# ---- stock_rollback: the endpoint, ``champion`` and the history go back together ----------------------
def snapshot_of_everything(settings) -> dict:
    """What a refused rollback must leave exactly as it was."""
    registry.setup(settings)
    return {"champion": registry.champion_version(settings).version,
            "served": served_version(settings),
            "audit": [e for e in audit.read(settings.audit_log) if e["event"] != "alert"],  # a refusal alerts
            "deploys": audit.read(settings.deploy_log)}


def test_roll_back_then_refusals_change_nothing(trained, dags, monkeypatch):
    from stockops.serving.rollback import RollbackRefused, history, plan_rollback

    small, rollback_dag = trained.settings, dags[2]
    for name, value in trained.env.items():
        monkeypatch.setenv(name, value)
    assert get_settings().home == small.home
    run = rollback_dag.test(run_conf={"reason": "v2 misbehaves in production, ticket 12"})
    assert str(run.state) == "success", states(run)
    assert served_version(small) == "1", "the endpoint must answer with the version rolled back to"
    registry.setup(small)
    assert str(registry.champion_version(small).version) == "1"
    changes = [(e["event"], e.get("decision") or ("forced" if e.get("forced") else ""), e["from_version"],
                e["to_version"], e["reason"]) for e in history(small)]
    assert changes == [
        ("promotion", "forced", None, "1", FIRST["reason"]),
        ("promotion", "forced", "1", "2", SECOND["reason"]),
        ("rollback", "", "2", "1", "v2 misbehaves in production, ticket 12"),
    ]
    rollback_entry = history(small)[-1]
    assert rollback_entry["dag_run_id"] == run.run_id and rollback_entry["requested_at"]
    v1, v2 = registry.get_version(small, "1"), registry.get_version(small, "2")
    assert v1.tags["champion_change"].split(" ", 1)[1].startswith("rollback: v2 -> v1; why: v2 misbehaves")
    assert run.run_id in v1.tags["champion_change"]
    assert v2.tags["replaced_by"].startswith("v1 (rollback) at ")
    rollback_deploy = audit.read(small.deploy_log)[-1]
    assert rollback_deploy["kind"] == "rollback" and rollback_deploy["outcome"] == "succeeded"
    assert rollback_deploy["dag_run_id"] == run.run_id and rollback_deploy["version"] == "1"

    from stockops.cli import main as cli

    cli(["history"])  # prints; must not raise

    # ---- refusals: each with its message, each changing nothing ---------------------------------
    assert "bento_tag" not in registry.get_version(small, "3").tags  # the weak v3: refused, never built
    before = snapshot_of_everything(small)
    refusals = {
        "99": "has no version '99' \\(versions: 1, 2, 3\\)",
        "1": "v1 is already the champion",
        "3": "v3 was refused by the gate .* only with force=true",
    }
    for version, message in refusals.items():
        with pytest.raises(RollbackRefused, match=message):
            plan_rollback(version, "operator request", settings=small)
    with pytest.raises(RollbackRefused, match="needs a reason"):
        plan_rollback("2", "   ", settings=small)
    # the refused run fails red, and its failure notification reaches the team's webhook and the audit log
    with WebhookReceiver() as hook:
        monkeypatch.setenv("STOCKOPS_ALERT_WEBHOOK", hook.url)
        refused = rollback_dag.test(run_conf={"version": "99", "reason": "typo in the version"})
        monkeypatch.delenv("STOCKOPS_ALERT_WEBHOOK")
    assert str(refused.state) == "failed"
    assert states(refused)["plan"] == "failed" and states(refused)["deploy"] in ("upstream_failed", "None")
    assert snapshot_of_everything(small) == before
    (delivered,) = hook.received
    alert = delivered["json"]
    assert delivered["path"] == "/hooks/stockops" and delivered["content_type"] == "application/json"
    assert (alert["dag_id"], alert["task_id"], alert["run_id"]) == ("stock_rollback", "plan", refused.run_id)
    assert alert["error"].startswith("RollbackRefused: ") and "has no version '99'" in alert["error"]
    assert alert["text"].startswith("stockops: stock_rollback.plan failed (run ")
    (logged,) = [e for e in audit.read(small.audit_log) if e["event"] == "alert"]
    assert logged["delivery"] == "delivered (HTTP 200)" and logged["error"] == alert["error"]

    # force overrides the gate's refusal; the version had no bento, so one is built first
    forced = rollback_dag.test(run_conf={"version": "v3", "reason": "need the 3-day model for a test", "force": True})
    assert str(forced.state) == "success", states(forced)
    assert served_version(small) == "3"
    assert registry.get_version(small, "3").tags["bento_tag"].startswith("goog_forecast:v3-")
    last = history(small)[-1]
    assert (last["event"], last["forced"], last["from_version"], last["to_version"]) == ("rollback", True, "1", "3")


def test_a_rollback_without_a_reason_is_refused_by_the_form(small, dags):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError, match="reason"):
        dags[2].test(run_conf={"version": "1"}, logical_date=datetime(2026, 11, 20, tzinfo=UTC))
