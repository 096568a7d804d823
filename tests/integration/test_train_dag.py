"""``stock_ingest`` then ``stock_train`` through ``dag.test()``: MLflow run, registry, gate, bento, champion."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stockops import audit, registry
from tests.integration.helpers import served_version, states

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def dags(all_dags):
    return all_dags["stock_ingest"], all_dags["stock_train"]


WEAK = {"epochs": 1, "window": 3, "reason": "deliberately weak: one epoch, three-day window"}


def test_train_logs_everything_registers_and_guards_the_champion(small, dags):
    import mlflow
    from mlflow import MlflowClient

    ingest, train = dags
    assert str(ingest.test(logical_date=datetime(2026, 11, 20, 22, tzinfo=UTC)).state) == "success"
    first = train.test(run_conf={"reason": "integration test: first model"})
    assert str(first.state) == "success", states(first)
    assert states(first)["promote"] == "success", "the default candidate must pass the gate honestly"
    assert states(first)["build"] == states(first)["deploy"] == "success"
    assert served_version(small) == "1"

    mlflow.set_tracking_uri(small.mlflow_tracking_uri)
    client = MlflowClient()
    champion = registry.champion_version(small)
    challenger = registry.version_by_alias(small, registry.CHALLENGER)
    assert str(champion.version) == str(challenger.version) == "1"
    snapshot = ingest_latest(small)
    assert champion.tags["snapshot_hash"] == snapshot.hash
    assert champion.tags["logical_date"] == "2026-11-20"
    assert champion.tags["gate_decision"] == "promoted" and "persistence" in champion.tags["gate_reason"]

    run = registry.get_run(champion.run_id)
    assert {"window", "epochs", "units", "train_rows"} <= set(run.data.params)
    assert {"rmse", "mae", "mape", "directional_accuracy", "rmse_ratio", "persistence_rmse",
            "moving_average_rmse", "train_seconds"} <= set(run.data.metrics)
    val_loss = client.get_metric_history(run.info.run_id, "val_loss")
    assert len(val_loss) >= 1 and [m.step for m in val_loss] == list(range(1, len(val_loss) + 1))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/forecast_vs_actual.png", "plots/loss_curve.png"}
    assert "data_validation.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == snapshot.hash[:36]
    assert dataset_input.dataset.source_type == "local" or snapshot.path in dataset_input.dataset.source

    second = train.test(run_conf=WEAK)
    assert str(second.state) == "success", states(second)
    assert states(second)["gate"] == "success"
    assert {states(second)[t] for t in ("build", "deploy", "promote")} == {"skipped"}
    assert served_version(small) == "1", "a refused candidate must not reach the endpoint"
    assert str(registry.champion_version(small).version) == "1"
    assert str(registry.version_by_alias(small, registry.CHALLENGER).version) == "2"
    refused = registry.get_version(small, "2")
    assert refused.tags["gate_decision"] == "refused"
    events = [(e["event"], e.get("decision"), str(e.get("version"))) for e in audit.read(small.audit_log)]
    assert events == [("gate", "promoted", "1"), ("promotion", "promoted", "None"), ("gate", "refused", "2")]


def test_forced_promotion_moves_the_champion_and_records_why(small, dags):
    ingest, train = dags
    assert str(ingest.test(logical_date=datetime(2026, 11, 20, 22, tzinfo=UTC)).state) == "success"
    assert str(train.test(run_conf={"reason": "first"}).state) == "success"
    forced = train.test(run_conf={**WEAK, "force_promote": True, "reason": "operator override, ticket 7"})
    assert states(forced)["promote"] == "success"
    registry.setup(small)
    version = registry.champion_version(small)
    assert str(version.version) == "2" and version.tags["gate_decision"] == "forced"
    assert served_version(small) == "2" and version.tags["deploy"].startswith("succeeded")
    assert version.tags["bento_tag"].startswith("goog_forecast:v2-")
    assert "operator override, ticket 7" in version.tags["gate_reason"]
    promotion = [e for e in audit.read(small.audit_log) if e["event"] == "promotion"][-1]
    assert str(promotion["from_version"]) == "1" and str(promotion["to_version"]) == "2"
    assert promotion["reason"] == "operator override, ticket 7"


def ingest_latest(settings):
    from stockops.ingest import store_for

    return store_for(settings).latest()
