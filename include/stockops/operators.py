"""Airflow operators of stockops (imported by DAG files only: the rest of the package runs without Airflow).

:class:`HeldDayReview` is Airflow's human-in-the-loop operator asking about one ticker's held day:
it shows the move and its evidence under "Required actions", waits for Approve or Reject (with
a reason), and records the decision (who, when, why) before the ``publish`` task acts on it. A
ticker whose data passed on the rules alone has nothing to decide: its review is skipped.

:class:`RollbackApproval` asks whether to roll the champion back to the previous one, as the
monitor proposed with its evidence; it records the answer and, on Approve, lets the next task
start ``stock_rollback``. No answer within the timeout counts as Reject: nothing rolls back
without a person.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowSkipException

from stockops.changes import record_rollback_answer
from stockops.contracts import Validated
from stockops.ingest import record_review, review_request

APPROVE, REJECT = "Approve", "Reject"


class HeldDayReview(HITLOperator):
    """Ask a person whether a held extreme move is real (Approve: publish) or a feed error (Reject: quarantine).

    ``validated`` is the ``validate`` task's XCom (a :class:`Validated` as JSON), parsed when the task runs.
    """

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

    def _validated(self) -> Validated:
        return Validated.from_xcom(self.validated)

    def execute(self, context: Any) -> Any:
        validated = self._validated()
        if not validated.held_for_review:
            raise AirflowSkipException(f"{validated.ticker}: the data passed on the rules, nothing to decide")
        question = review_request(validated)
        self.subject, self.body = question["subject"], question["body"]
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        answer = super().execute_complete(context, event)
        user = answer["responded_by_user"] or {}
        record_review(self._validated(), approved=answer["chosen_options"] == [APPROVE],
                      by=user.get("name") or user.get("id") or "unknown",
                      reason=str((answer["params_input"] or {}).get("reason", "")), dag_run_id=context["run_id"])
        return answer


class RollbackApproval(ApprovalOperator):
    """Approve or Reject the monitor's rollback proposal (``dag_run.conf``: from/to version, evidence)."""

    template_fields = (*ApprovalOperator.template_fields, "proposal")

    def __init__(self, *, proposal: Any, response_timeout: timedelta, params: dict | None = None,
                 **kwargs: Any) -> None:
        # ``params``: the DAG's own (the proposal's fields) stay out of the question's form, which asks for a reason.
        super().__init__(
            subject="roll the champion back?",  # replaced by the versions at run time
            params={"reason": Param("", type="string", title="Reason",
                                    description="Why: kept in the audit trail and in the rollback's reason.")},
            defaults=[ApprovalOperator.REJECT],  # silence is a no
            response_timeout=response_timeout,
            **kwargs,
        )
        self.proposal = proposal

    def execute(self, context: Any) -> Any:
        p = self.proposal
        self.subject = f"Roll {p['model']} back from v{p['from_version']} to v{p['to_version']}?"
        self.body = (f"The monitor proposes this rollback.\n\n**Evidence:** {p['evidence']}\n\n"
                     f"Monitor report: `{p.get('report') or 'none'}`\n\nApprove starts `stock_rollback` to "
                     f"v{p['to_version']}; Reject keeps v{p['from_version']} (the monitor asks again after its "
                     "cool-down if the evidence holds).")
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        answer = dict(super().execute_complete(context, event))
        user = answer.get("responded_by_user") or {}
        by = user.get("name") or user.get("id") or "nobody (no answer within the timeout: Reject)"
        reason = str((answer.get("params_input") or {}).get("reason", "")) or "no reason given"
        approved = answer["chosen_options"] == [ApprovalOperator.APPROVE]
        record_rollback_answer(self.proposal, approved=approved, by=by, reason=reason, dag_run_id=context["run_id"])
        answer["rollback_reason"] = (f"monitor proposal approved by {by}: {reason}. Evidence: "
                                     f"{self.proposal['evidence']}")[:2000]
        return answer
