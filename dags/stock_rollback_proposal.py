"""
### stock_rollback_proposal — the monitor asks: roll the champion back to the previous one?

Started by `stock_monitor` when the champion is **clearly worse than the champion before it** on
the same realized days: its pooled QLIKE worse by more than `STOCKOPS_MONITOR_ROLLBACK_MARGIN`
nats/day with a Diebold-Mariano |t| ≥ `STOCKOPS_MONITOR_ROLLBACK_DM_T` (the previous champion
forecasts every day in the shadow, so both are scored on the same ticker-days). Its own run, so
the monitor's daily checks never wait for a person.

`ask` waits under **Required actions** (Browse → Required actions, or the run's task) with the
evidence: **Approve** (with a reason) starts `stock_rollback` to the previous version with the
reason and the evidence; **Reject** ends here. Either answer goes into the audit log (who, when,
why). No answer within `STOCKOPS_REVIEW_TIMEOUT_H` counts as Reject. The monitor does not ask
again while a proposal waits, nor within its cool-down after one.

By hand (the *Trigger* form): leave every field empty to propose rolling the current champion back
to the one before it, and let whoever answers under Required actions decide; the fields say which
versions and why when you want to name them.

Logic lives in `stockops.orchestration.operators` and `stockops.monitoring`; this file only wires it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag

from stockops.core.settings import get_settings
from stockops.orchestration.alerts import notify_failure
from stockops.orchestration.operators import RollbackApproval

settings = get_settings()


@dag(
    dag_id="stock_rollback_proposal",
    schedule=None,
    start_date=datetime(2000, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["stockops", "serving", "rollback", settings.ticker],
    # neither task is retried: a question is asked once, a rollback started once
    default_args={"owner": "stockops", "on_failure_callback": notify_failure,
                  "retries": 1, "retry_delay": timedelta(seconds=30)},
    # stock_monitor fills them all (its conf); by hand every one may stay empty
    params={
        "from_version": Param(None, type=["null", "string"], pattern=r"^v?[0-9]*$",
                              description="The champion to roll back from. Empty: the current champion."),
        "to_version": Param(None, type=["null", "string"], pattern=r"^v?[0-9]*$",
                            description="The version to roll back to. Empty: the champion before the current one."),
        "evidence": Param(None, type=["null", "string"],
                          description="Why it is proposed (the monitor's numbers). Empty: proposed by hand."),
        "report": Param(None, type=["null", "string"], description="The monitor report behind it, if any."),
    },
)
def stock_rollback_proposal():
    ask = RollbackApproval(
        task_id="ask",
        proposal={"model": settings.model_name, "from_version": "{{ params.from_version or '' }}",
                  "to_version": "{{ params.to_version or '' }}", "evidence": "{{ params.evidence or '' }}",
                  "report": "{{ params.report or '' }}"},
        response_timeout=timedelta(hours=settings.review_timeout_h),
        retries=0,
    )
    # The rollback is its own DAG run: plan -> bento -> deploy -> verify, recorded as any rollback.
    rollback = TriggerDagRunOperator(
        task_id="rollback",
        trigger_dag_id="stock_rollback",
        conf={"version": "{{ ti.xcom_pull(task_ids='ask')['to_version'] }}",
              "reason": "{{ ti.xcom_pull(task_ids='ask')['rollback_reason'] }}", "force": False},
        retries=0,
    )
    ask >> rollback


stock_rollback_proposal()
