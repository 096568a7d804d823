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

Logic lives in `stockops.operators` and `stockops.monitoring`; this file only wires it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag

from stockops.alerts import notify_failure
from stockops.config import get_settings
from stockops.operators import RollbackApproval

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
)
def stock_rollback_proposal():
    ask = RollbackApproval(
        task_id="ask",
        proposal={"model": settings.model_name, "from_version": "{{ dag_run.conf['from_version'] }}",
                  "to_version": "{{ dag_run.conf['to_version'] }}", "evidence": "{{ dag_run.conf['evidence'] }}",
                  "report": "{{ dag_run.conf.get('report', '') }}"},
        response_timeout=timedelta(hours=settings.review_timeout_h),
        retries=0,
    )
    # The rollback is its own DAG run: plan -> bento -> deploy -> verify, recorded as any rollback.
    rollback = TriggerDagRunOperator(
        task_id="rollback",
        trigger_dag_id="stock_rollback",
        conf={"version": "{{ dag_run.conf['to_version'] }}",
              "reason": "{{ ti.xcom_pull(task_ids='ask')['rollback_reason'] }}", "force": False},
        retries=0,
    )
    ask >> rollback


stock_rollback_proposal()
