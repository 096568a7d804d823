"""Steps that need Airflow's task context (the Task SDK), kept out of the library layers below."""

from __future__ import annotations

from stockops.contracts import MonitorDecision
from stockops.core.settings import Settings
from stockops.monitoring import run_monitor
from stockops.monitoring.decision import PROPOSAL_DAG_ID, TRAINING_DAG_ID


def monitor_task(dag_run_id: str = "", *, settings: Settings) -> MonitorDecision:
    """``stock_monitor``'s check: counts queued/running training runs through the Task SDK, then decides.

    Returns what later tasks need; the whole decision is in the decision log and ``decision_path``.
    """
    from airflow.sdk import get_current_context

    ti = get_current_context()["ti"]
    active = ti.get_dr_count(dag_id=TRAINING_DAG_ID, states=["queued", "running"])
    proposals = ti.get_dr_count(dag_id=PROPOSAL_DAG_ID, states=["queued", "running"])
    return run_monitor(settings=settings, active_training_runs=active, dag_run_id=dag_run_id,
                       active_proposals=proposals).decision()
