"""
### stock_rollback — put an earlier model back on the endpoint, in seconds, from this form

Trigger it with **Trigger DAG → form**: `version` (empty = the champion before the current
one), `reason` (required; it goes into the audit trail) and `force`. Or from the CLI
(`airflow dags trigger stock_rollback --conf '{"reason": "...", "version": "3"}'`) or the REST
API (`POST /api/v2/dags/stock_rollback/dagRuns` with `{"logical_date": null, "conf": {...}}`).

`plan` refuses, with the reason in its log and before anything changes: an unknown version, the
current champion while it serves, or a version the gate refused (unless `force`). `bento` reuses
the version's bento or builds it; `deploy` is the same critical section as a promotion: the
health-checked switch (a bento that fails `/readyz` or its smoke prediction is stopped and the
current champion keeps serving), then the `champion` alias and the change recorded — audit log
under the home and tags on both MLflow model versions (`.venv/bin/stockops history` prints it);
`verify` checks that the endpoint, `@champion` and the audit log agree.

**Repairing a split**: if the endpoint ever serves another version than `@champion` (the serving
supervisor converges it within seconds on its own), a rollback to the champion's version serves
it again.

Logic lives in `stockops.serving.rollback` (`plan_rollback` → `rollback_bento` → `deploy_rollback` →
`complete_rollback`, passing `RollbackPlan` → `RollbackBuilt` → `RollbackDeployed` →
`RollbackVerified` from `stockops.contracts`); this file only wires it, through `STEPS`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag

from stockops.core.settings import get_settings
from stockops.orchestration.alerts import notify_failure
from stockops.orchestration.wiring import step_tasks
from stockops.serving.rollback import complete_rollback, deploy_rollback, plan_rollback, rollback_bento

settings = get_settings()

# Task id -> the step it runs: the one mapping.
STEPS: dict[str, Callable[..., Any]] = {"plan": plan_rollback, "bento": rollback_bento, "deploy": deploy_rollback,
                                        "verify": complete_rollback}
step = step_tasks(STEPS)


@dag(
    dag_id="stock_rollback",
    schedule=None,
    start_date=datetime(2000, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["stockops", "serving", "rollback", settings.ticker],
    # plan, bento and deploy are not retried (a refusal does not change with time; a deploy is not
    # repeated blindly); verify may be.
    default_args={"owner": "stockops", "on_failure_callback": notify_failure,
                  "retries": 1, "retry_delay": timedelta(seconds=10)},
    params={
        "version": Param(None, type=["null", "string"], pattern=r"^v?[0-9]*$",
                         description=f"Registry version of {settings.model_name} to serve again. "
                                     "Empty: the champion before the current one."),
        "reason": Param(type="string", minLength=3,
                        description="Why (required): kept in the audit trail and on the MLflow model versions."),
        "force": Param(False, type="boolean",
                       description="Allow a version the promotion gate refused."),
    },
    render_template_as_native_obj=True,
)
def stock_rollback():
    planned = step("plan", retries=0)(
        version="{{ params.version }}", reason="{{ params.reason }}", force="{{ params.force }}",
        requested_at="{{ dag_run.run_after.isoformat() }}")  # when it was asked for: the time to restore starts here
    built = step("bento", retries=0)(planned)
    deployed = step("deploy", retries=0)(built, dag_run_id="{{ run_id }}")
    step("verify")(deployed, dag_run_id="{{ run_id }}")


stock_rollback()
