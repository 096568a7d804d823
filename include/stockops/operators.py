"""Airflow operators of stockops (imported by DAG files only: the rest of the package runs without Airflow).

:class:`HeldDayReview` is Airflow's human-in-the-loop operator asking about one ticker's held day:
it shows the move and its evidence under "Required actions", waits for Approve or Reject (with
a reason), and records the decision (who, when, why) before the ``publish`` task acts on it. A
ticker whose data passed on the rules alone has nothing to decide: its review is skipped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowSkipException

from stockops.ingest import record_review, review_request

APPROVE, REJECT = "Approve", "Reject"


class HeldDayReview(HITLOperator):
    """Ask a person whether a held extreme move is real (Approve: publish) or a feed error (Reject: quarantine)."""

    template_fields = (*HITLOperator.template_fields, "validated")

    def __init__(self, *, validated: Any, response_timeout: timedelta, params: dict | None = None,
                 **kwargs: Any) -> None:
        # ``params`` brings the DAG's own Params (the Trigger form's): the question's form asks only for a reason.
        super().__init__(
            subject="an extreme move waits for a decision",  # replaced by the ticker's own question at run time
            options=[APPROVE, REJECT],
            params={"reason": Param("", type="string", title="Reason",
                                    description="Why: kept in the audit trail with your decision.")},
            response_timeout=response_timeout,
            **kwargs,
        )
        self.validated = validated

    def execute(self, context: Any) -> Any:
        if self.validated.get("status") != "held":
            raise AirflowSkipException(f"{self.validated['ticker']}: the data passed on the rules, nothing to decide")
        question = review_request(self.validated)
        self.subject, self.body = question["subject"], question["body"]
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        answer = super().execute_complete(context, event)
        user = answer["responded_by_user"] or {}
        record_review(self.validated, approved=answer["chosen_options"] == [APPROVE],
                      by=user.get("name") or user.get("id") or "unknown",
                      reason=str((answer["params_input"] or {}).get("reason", "")), dag_run_id=context["run_id"])
        return answer
