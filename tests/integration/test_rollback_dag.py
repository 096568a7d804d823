"""``stock_rollback`` through ``dag.test()``: the endpoint, ``champion`` and the history go back together.

Real parts throughout: models trained on the replayed series and registered in MLflow, bentos
built and served on loopback, the endpoint asked over HTTP which version answers.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stockops import audit, registry
from tests.integration.helpers import WebhookReceiver, served_version, states

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WEAK = {"epochs": 1, "window": 3}


@pytest.fixture(scope="module")
def rollback_dag(all_dags):
    return all_dags["stock_rollback"]


def snapshot_of_everything(settings) -> dict:
    """What a refused rollback must leave exactly as it was."""
    registry.setup(settings)
    return {"champion": registry.champion_version(settings).version,
            "served": served_version(settings),
            "audit": [e for e in audit.read(settings.audit_log) if e["event"] != "alert"],  # a refusal alerts
            "deploys": audit.read(settings.deploy_log)}


def test_promote_promote_roll_back_then_refusals_change_nothing(small, rollback_dag, monkeypatch):
    from stockops.champion import RollbackRefused, history, plan_rollback
    from stockops.ingest import ingest_day
    from stockops.training import train_in_process

    ingest_day("2026-11-20")
    # forced: whether a small model beats HARX-GKO on this holdout is the gate's business, not this test's
    first = train_in_process(trigger_reason="first model", force_promote=True)
    assert first["promoted"] and served_version(small) == "1"
    second = train_in_process(trigger_reason="second model, forced for the test", force_promote=True)
    assert second["promoted"] and served_version(small) == "2"

    run = rollback_dag.test(run_conf={"reason": "v2 misbehaves in production, ticket 12"})
    assert str(run.state) == "success", states(run)
    assert served_version(small) == "1", "the endpoint must answer with the version rolled back to"
    registry.setup(small)
    assert str(registry.champion_version(small).version) == "1"
    changes = [(e["event"], e.get("decision") or ("forced" if e.get("forced") else ""), e["from_version"],
                e["to_version"], e["reason"]) for e in history(small)]
    assert changes == [
        ("promotion", "forced", None, "1", "first model"),
        ("promotion", "forced", "1", "2", "second model, forced for the test"),
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

    from stockops.__main__ import main as cli

    cli(["history"])  # prints; must not raise

    # ---- refusals: each with its message, each changing nothing ---------------------------------
    weak = train_in_process(trigger_reason="deliberately weak", **WEAK)
    assert not weak["promoted"] and str(weak["version"]) == "3"
    assert "bento_tag" not in registry.get_version(small, "3").tags
    before = snapshot_of_everything(small)
    refusals = {
        "99": "has no version '99' \\(versions: 1, 2, 3\\)",
        "1": "v1 is already the champion",
        "3": "v3 was refused by the gate .* only with force=true",
    }
    for version, message in refusals.items():
        with pytest.raises(RollbackRefused, match=message):
            plan_rollback(version, "operator request")
    with pytest.raises(RollbackRefused, match="needs a reason"):
        plan_rollback("2", "   ")
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


def test_a_rollback_without_a_reason_is_refused_by_the_form(small, rollback_dag):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError, match="reason"):
        rollback_dag.test(run_conf={"version": "1"}, logical_date=datetime(2026, 11, 20, tzinfo=UTC))
