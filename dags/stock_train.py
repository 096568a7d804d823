"""
### stock_train — retrain the global risk forecaster on new data; promote only a model that earns it

Runs when `stock_ingest` publishes a new snapshot of any watchlist ticker (one **Asset** per
ticker, any of them triggers; at most one run at a time, so a day's publishes coalesce into
one or two runs), by hand from the *Trigger* form (Params below), or when `stock_monitor`
detects drift or a live error it cannot accept (its conf carries the `reason` and the `report`).

`load_snapshots` (the latest published snapshot of every ticker) → `features` (one panel,
split by date: the same boundaries for every ticker, one window purged between parts) →
`train` (one global Keras LSTM for every ticker: tomorrow's log-return variance, quantiles and
mean; one MLflow run; an MLflow pyfunc model that carries its own code) → `evaluate` (candidate,
champion re-scored on today's holdout, persistence, GARCH-N/t, EWMA, HAR-GK and HARX-GKO on
the same ticker-days: QLIKE, pinball, coverage, VaR breaches with Kupiec, Diebold–Mariano) →
`register` (alias `challenger`) → `gate` (returns its decision) → `gate_passed` (stops here unless
the decision is to promote) → `build` (the candidate's bento) → `deploy` (one
critical section: the new bento must pass `/readyz` and a smoke forecast, takes over the serving
address, alias `champion` moves, the change goes into the audit log) → `verify` (the endpoint,
`@champion` and the audit log all name the new version; red if not). A failed build or deploy
fails the run and leaves the champion, and the bento that serves, as they were; a run killed
midway is repaired by the serving supervisor within seconds (serving follows `@champion`).

The **gate** promotes only a candidate that (a) is not worse than HARX-GKO on pooled QLIKE,
(b) covers 88–92 % of days with its 90 % interval (`STOCKOPS_GATE_COVERAGE_90_MIN/MAX`),
(c) keeps its point RMSE ≤ persistence × (1 + `STOCKOPS_GATE_TOLERANCE`), and (d) beats the
champion with a DM t ≥ `STOCKOPS_GATE_DM_T` on QLIKE or pinball — or, once the champion's data
is older than `STOCKOPS_GATE_CHAMPION_MAX_AGE_DAYS`, is within `STOCKOPS_GATE_MARGIN` of it.
A refusal skips `build`, `deploy` and `verify` (the run stays green); the reason is in the `gate`
log, on the MLflow model version and in the audit log. `force_promote` overrides it; the reason
is recorded.

Each task runs one step of `stockops.training` or `stockops.serving`; `STEPS` below is the one
mapping from task ids to those functions. Steps pass typed contracts (`stockops.contracts`:
`Snapshots` → `Features` → `Trained` → `Evaluated` → `Registered` → `GateDecision` → `Built` →
`Deployed` → `Verified`), stored as JSON XComs (`stockops.orchestration.wiring`); this file only wires them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Param, dag

from stockops.core.airflow_env import DAY_ASSET_NAME, DAY_ASSET_URI
from stockops.core.settings import get_settings
from stockops.orchestration.alerts import notify_failure
from stockops.orchestration.wiring import step_tasks
from stockops.serving import build_candidate_bento, deploy_candidate, verify_candidate
from stockops.training import (
    evaluate_models,
    gate_candidate,
    gate_passed,
    load_snapshots,
    prepare_features,
    register_candidate,
    train_candidate,
)

settings = get_settings()
DAY = Asset(name=DAY_ASSET_NAME, uri=DAY_ASSET_URI, group="stockops")

# Task id -> the step it runs: the one mapping (short ids in the grid, descriptive names in the package).
STEPS: dict[str, Callable[..., Any]] = {
    "load_snapshots": load_snapshots, "features": prepare_features, "train": train_candidate,
    "evaluate": evaluate_models, "register": register_candidate, "gate": gate_candidate, "gate_passed": gate_passed,
    "build": build_candidate_bento, "deploy": deploy_candidate, "verify": verify_candidate}
step = step_tasks(STEPS)


@dag(
    dag_id="stock_train",
    schedule=[DAY],
    start_date=datetime(2000, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["stockops", "training", "watchlist"],
    default_args={"owner": "stockops", "on_failure_callback": notify_failure,
                  "retries": 1, "retry_delay": timedelta(minutes=1)},
    params={
        "epochs": Param(settings.train_epochs, type="integer", minimum=1, maximum=500,
                        description="Maximum training epochs (early stopping may stop sooner)."),
        "window": Param(settings.train_window, type="integer", minimum=2, maximum=250,
                        description="Trading days of features the LSTM sees."),
        "reason": Param("new snapshot", type="string", minLength=1,
                        description="Why this run: kept in MLflow and the audit log."),
        "report": Param(None, type=["null", "string"],
                        description="Set by stock_monitor: the monitor report (Evidently HTML) behind this run. "
                                    "Empty for a run by hand."),
        "force_promote": Param(False, type="boolean",
                               description="Promote even if the gate refuses (the reason is recorded)."),
    },
    render_template_as_native_obj=True,
)
def stock_train():
    snapshots = step("load_snapshots")()
    features = step("features")(snapshots, window="{{ params.window }}")
    trained = step("train")(features, epochs="{{ params.epochs }}", reason="{{ params.reason }}",
                            dag_run_id="{{ run_id }}", report="{{ params.report }}")
    evaluated = step("evaluate")(trained)
    registered = step("register", retries=0)(evaluated)
    decision = step("gate", retries=0)(registered, force_promote="{{ params.force_promote }}",
                                       reason="{{ params.reason }}", dag_run_id="{{ run_id }}")
    passed = step("gate_passed", short_circuit=True)(decision)
    built = step("build", retries=0)(registered, decision)
    passed >> built
    deployed = step("deploy", retries=0)(built, reason="{{ params.reason }}", dag_run_id="{{ run_id }}")
    step("verify", retries=0)(deployed)


stock_train()
