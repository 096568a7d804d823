"""
### stock_train — retrain the LSTM on every new snapshot; promote only a model that earns it

Runs when `stock_ingest` publishes a new snapshot (the prices **Asset**), by hand from the
*Trigger* form (Params below), or when `stock_monitor` detects drift or a live error it
cannot accept (its conf carries the `reason` and the `report`, kept as MLflow run tags).

`load_snapshot` → `features` (scale-free windows, chronological split) → `train` (Keras LSTM,
early stopping, one MLflow run) → `evaluate` (candidate, champion re-scored on today's holdout,
persistence and moving-average baselines) → `register` (alias `challenger`) → `gate` →
`build` (the candidate's bento: BentoML model store + `bentoml build`, tag and labels carry the
registry version, MLflow run id and snapshot hash) → `deploy` (the new bento must pass `/readyz`
and a smoke prediction before it takes over the serving address; the old one is stopped after)
→ `promote` (alias `champion`). A failed build or deploy fails the run and leaves the champion,
and the bento that serves, as they were.

The **gate** promotes only if the candidate's RMSE ≤ persistence × (1 + `STOCKOPS_GATE_TOLERANCE`)
and, when there is a champion, ≤ champion × (1 − `STOCKOPS_GATE_MARGIN`). A refusal skips
`promote` (the run stays green) and the reason is in the `gate` log, on the MLflow model
version and in the audit log. `force_promote` overrides it; the reason is recorded.

Logic lives in `stockops.training` and `stockops.serving`; this file only wires it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, task

from stockops.config import get_settings
from stockops.serving import build_candidate_bento, deploy_candidate
from stockops.training import (
    evaluate_models,
    gate_candidate,
    load_snapshot,
    prepare_features,
    promote_candidate,
    register_candidate,
    train_candidate,
)

settings = get_settings()
PRICES = Asset(name=settings.asset_name, uri=settings.asset_uri, group="stockops")


@dag(
    dag_id="stock_train",
    schedule=[PRICES],
    start_date=datetime(2000, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["stockops", "training", settings.ticker],
    default_args={"owner": "stockops", "retries": 1, "retry_delay": timedelta(minutes=1)},
    params={
        "epochs": Param(settings.train_epochs, type="integer", minimum=1, maximum=500,
                        description="Maximum training epochs (early stopping may stop sooner)."),
        "window": Param(settings.train_window, type="integer", minimum=2, maximum=250,
                        description="Trading days of closes the model sees."),
        "reason": Param("new snapshot", type="string", minLength=1,
                        description="Why this run: kept in MLflow and the audit log."),
        "report": Param("", type="string",
                        description="Set by stock_monitor: the monitor report (Evidently HTML) behind this run."),
        "force_promote": Param(False, type="boolean",
                               description="Promote even if the gate refuses (the reason is recorded)."),
    },
    render_template_as_native_obj=True,
)
def stock_train():
    snapshot = task(load_snapshot)()
    features = task(prepare_features, task_id="features")(snapshot, window="{{ params.window }}")
    trained = task(train_candidate, task_id="train")(features, epochs="{{ params.epochs }}",
                                                     trigger_reason="{{ params.reason }}", dag_run_id="{{ run_id }}",
                                                     trigger_report="{{ params.report }}")
    evaluated = task(evaluate_models, task_id="evaluate")(trained)
    registered = task(register_candidate, task_id="register", retries=0)(evaluated)
    gate = task.short_circuit(gate_candidate, task_id="gate", retries=0)(
        registered, force_promote="{{ params.force_promote }}", trigger_reason="{{ params.reason }}")
    built = task(build_candidate_bento, task_id="build", retries=0)(registered)
    deployed = task(deploy_candidate, task_id="deploy", retries=0)(built, trigger_reason="{{ params.reason }}",
                                                                   dag_run_id="{{ run_id }}")
    gate >> built
    task(promote_candidate, task_id="promote")(deployed, trigger_reason="{{ params.reason }}",
                                                dag_run_id="{{ run_id }}")


stock_train()
