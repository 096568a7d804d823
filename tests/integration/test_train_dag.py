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


# force_promote spelled out: dag.test() keeps the previous run's conf in the DAG's params
WEAK = {"epochs": 1, "window": 2, "force_promote": False, "reason": "deliberately weak: one epoch, two-day window"}


def test_train_logs_everything_registers_gates_and_guards_the_champion(small, dags):
    """An honest run is judged against the baselines; a forced one deploys; a weak one never reaches the endpoint."""
    import mlflow
    from mlflow import MlflowClient

    from stockops.gate import GatePolicy, decide

    ingest, train = dags
    assert str(ingest.test(logical_date=datetime(2026, 11, 20, 22, tzinfo=UTC)).state) == "success"
    first = train.test(run_conf={"reason": "integration test: first model"})
    assert str(first.state) == "success", states(first)
    mlflow.set_tracking_uri(small.mlflow_tracking_uri)
    client = MlflowClient()
    v1 = registry.get_version(small, "1")
    run = registry.get_run(v1.run_id)
    metrics = run.data.metrics
    # the gate's verdict is the one its rule gives on the logged holdout scores (whatever the data says today)
    candidate = {"qlike": metrics["qlike"], "coverage_90": metrics["coverage_90"], "rmse_ratio": metrics["rmse_ratio"]}
    expected = decide(candidate, {"qlike": metrics["harx_gko_qlike"]}, None, GatePolicy.from_settings(small))
    assert v1.tags["gate_decision"] == expected.label and "HARX-GKO" in v1.tags["gate_reason"]
    honest = expected.promote
    assert states(first)["verify"] == ("success" if honest else "skipped")

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

    forced = train.test(run_conf={"force_promote": True, "reason": "operator override, ticket 7"})
    assert states(forced)["verify"] == "success"
    champion = registry.champion_version(small)
    assert str(champion.version) == "2" and champion.tags["gate_decision"] == "forced"
    assert served_version(small) == "2" and champion.tags["deploy"].startswith("succeeded")
    assert champion.tags["bento_tag"].startswith("goog_forecast:v2-")
    promotion = [e for e in audit.read(small.audit_log) if e["event"] == "promotion"][-1]
    assert str(promotion["to_version"]) == "2" and promotion["reason"] == "operator override, ticket 7"

    weak = train.test(run_conf=WEAK)
    assert str(weak.state) == "success", states(weak)
    assert states(weak)["gate"] == "success"
    assert {states(weak)[t] for t in ("build", "deploy", "verify")} == {"skipped"}
    assert served_version(small) == "2", "a refused candidate must not reach the endpoint"
    assert str(registry.champion_version(small).version) == "2"
    assert str(registry.version_by_alias(small, registry.CHALLENGER).version) == "3"
    refused = registry.get_version(small, "3")
    assert refused.tags["gate_decision"] == "refused" and "champion" in refused.tags["gate_reason"]
    gates = [(e["decision"], str(e["version"])) for e in audit.read(small.audit_log) if e["event"] == "gate"]
    assert gates == [(expected.label, "1"), ("forced", "2"), ("refused", "3")]


def ingest_latest(settings, ticker=None):
    from stockops.ingest import store_for

    return store_for(settings, ticker).latest()
