"""Airflow operators of stockops (imported by DAG files only: the rest of the package runs without Airflow).

:class:`WatchlistSettled` ends a day's ingest: once every ticker has its outcome it emits the one
"day ingested" Asset event that training and the monitor follow (its trigger polls in the triggerer).

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

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Asset, AssetAlias, BaseOperator, Param
from airflow.sdk.exceptions import AirflowSkipException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from stockops.changes import record_rollback_answer
from stockops.config import DAY_ALIAS, DAY_ASSET_NAME, DAY_ASSET_URI, get_settings
from stockops.contracts import IngestRequest, Validated
from stockops.ingest import day_outcome, record_review, review_request

APPROVE, REJECT = "Approve", "Reject"


class WatchlistSettledTrigger(BaseTrigger):
    """Fires once every ticker of a day's ingest has its outcome (:func:`stockops.ingest.day_outcome`), or at
    ``deadline`` (epoch seconds) with the ones still pending named. Polls the tickers' status files every
    ``poll_s`` in the triggerer, so no worker slot waits."""

    def __init__(self, day: str, tickers: list[str], since: str, deadline: float, poll_s: float = 2.0) -> None:
        super().__init__()
        self.day, self.tickers, self.since = day, list(tickers), since
        self.deadline, self.poll_s = float(deadline), float(poll_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"day": self.day, "tickers": self.tickers, "since": self.since, "deadline": self.deadline,
                 "poll_s": self.poll_s})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        settings = get_settings()
        while True:
            outcome = await asyncio.to_thread(day_outcome, settings, self.day, self.tickers, self.since)
            if not outcome["pending"] or time.time() >= self.deadline:
                yield TriggerEvent(outcome)
                return
            await asyncio.sleep(self.poll_s)


class WatchlistSettled(BaseOperator):
    """``stock_ingest``'s ``settled``: waits (deferred, in the triggerer) until every ticker of the run is
    published, quarantined or held for a person, then emits ONE event of the Asset ``stockops_watchlist_day``
    (extra: the day and each ticker's outcome), which starts ``stock_train`` and ``stock_monitor``: neither runs
    on a partial day, and a held ticker never holds the others up. A closed market (no requests), or a day with
    no new snapshot (a re-run: the same data again), emits nothing (the task is skipped, saying why); past
    ``timeout`` the event goes out with the tickers still pending named (a fetch that failed for good)."""

    template_fields = ("requests",)
    ui_color = "#e8f5e9"

    def __init__(self, *, requests: Any, timeout: timedelta, **kwargs: Any) -> None:
        super().__init__(outlets=[AssetAlias(DAY_ALIAS)], **kwargs)
        self.requests, self.timeout = requests, timeout

    def execute(self, context: Any) -> Any:
        requests = [IngestRequest.from_xcom(r) for r in self.requests or []]
        if not requests:
            raise AirflowSkipException("nothing was ingested (the market is closed): no day event")
        settings = get_settings()
        day, tickers = requests[0].logical_date, [r.ticker for r in requests]
        run = context["dag_run"]
        since = (run.start_date or run.run_after).isoformat(timespec="seconds")  # a snapshot first published since
        outcome = day_outcome(settings, day, tickers, since)
        if not outcome["pending"]:
            return self.execute_complete(context, outcome)
        self.log.info("%s: %d of %d tickers settled; waiting for %s", day, len(outcome["settled"]), len(tickers),
                      ", ".join(outcome["pending"]))
        self.defer(trigger=WatchlistSettledTrigger(day, tickers, since, time.time() + self.timeout.total_seconds()),
                   method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event["pending"]:
            self.log.warning("%s: no outcome for %s within %s: the day event goes out without them", event["day"],
                             ", ".join(event["pending"]), self.timeout)
        self.log.info("%s settled: %s", event["day"], ", ".join(f"{t} {s}" for t, s in event["settled"].items()))
        if not event["new"]:
            raise AirflowSkipException(f"{event['day']}: no ticker published a new snapshot (the same data again): "
                                       "no day event, so nothing is retrained on it")
        context["outlet_events"][AssetAlias(DAY_ALIAS)].add(Asset(name=DAY_ASSET_NAME, uri=DAY_ASSET_URI,
                                                                  group="stockops"), extra=event)
        return event


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
        self.proposal = p = resolve_proposal(dict(self.proposal))
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
        answer["to_version"] = str(self.proposal["to_version"])
        return answer


def resolve_proposal(proposal: dict[str, Any]) -> dict[str, Any]:
    """A proposal with the versions a person left empty filled in (from: the champion; to: the champion before it)
    and its evidence said to be by hand; refuses, before anyone is asked, when there is nothing to roll back to."""
    from stockops import registry
    from stockops.changes import previous_champion

    if proposal.get("from_version") and proposal.get("to_version"):
        return {**proposal, "evidence": proposal.get("evidence") or "proposed by hand (no evidence given)"}
    settings = get_settings()
    registry.setup(settings)
    champion = registry.champion_version(settings)
    if champion is None:
        raise ValueError(f"{settings.model_name} has no champion: there is nothing to roll back")
    source = str(proposal.get("from_version") or champion.version).removeprefix("v")
    target = str(proposal.get("to_version") or previous_champion(settings, source) or "").removeprefix("v")
    if not target:
        raise ValueError(f"v{source} is the first champion of {settings.model_name}: there is no earlier one to "
                         "roll back to; name a to_version")
    return {**proposal, "from_version": source, "to_version": target,
            "evidence": proposal.get("evidence") or "proposed by hand from the Trigger form (no evidence given)"}
