"""Airflow's human-in-the-loop requests, read from its metadata DB (the dashboard's "waiting for you" list)."""

from __future__ import annotations

from datetime import datetime


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def pending_approvals(dag_ids: set[str] | None = None) -> list[dict]:
    """Airflow's human-in-the-loop requests without a response, oldest first (only ``dag_ids``' when given).

    What the UI lists under "Required actions" with ``response_received=false``.
    """
    from airflow.models.hitl import HITLDetail
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        details = session.scalars(select(HITLDetail).where(HITLDetail.responded_at.is_(None))
                                  .order_by(HITLDetail.created_at)).unique().all()
        return [{"dag_id": d.task_instance.dag_id, "run_id": d.task_instance.run_id,
                 "task_id": d.task_instance.task_id, "map_index": d.task_instance.map_index,
                 "state": str(getattr(d.task_instance.state, "value", d.task_instance.state)),
                 "subject": d.subject, "options": list(d.options or []), "created_at": _iso(d.created_at)}
                for d in details if dag_ids is None or d.task_instance.dag_id in dag_ids]
