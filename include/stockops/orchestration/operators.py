"""Airflow operators of stockops (imported by DAG files only: the rest of the package runs without Airflow).

:class:`WatchlistSettled` ends a day's ingest: once every ticker has its outcome it emits the one
"day ingested" Asset event that training and the monitor follow.

:class:`HeldDayReview` is Airflow's human-in-the-loop operator asking about one ticker's held day:
it shows the move and its evidence under "Required actions", waits for Approve or Reject (with
a reason), records the decision (who, when, why) and carries it out: Approve publishes the day (the
``publish`` task skipped it), Reject quarantines it. A ticker whose data passed on the rules alone
has nothing to decide: its review is skipped.

:class:`RollbackApproval` asks whether to roll the champion back to the previous one, as the
monitor proposed with its evidence; it records the answer and, on Approve, lets the next task
start ``stock_rollback``. No answer within the timeout counts as Reject: nothing rolls back
without a person.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Asset, AssetAlias, BaseOperator, Param
from airflow.sdk.exceptions import AirflowSkipException

from stockops.contracts import IngestChunk, Published, Validated
from stockops.core.airflow_env import (
    DAY_ALIAS,
    DAY_ASSET_NAME,
    DAY_ASSET_URI,
    PRICES_ALIAS,
    prices_asset_name,
    prices_asset_uri,
)
from stockops.core.settings import Settings, get_settings
from stockops.ingest import day_outcome, publish_validated, record_review, review_request
from stockops.registry.changes import record_rollback_answer

APPROVE, REJECT = "Approve", "Reject"


class WatchlistSettled(BaseOperator):
    """``stock_ingest``'s ``settled``: once every chunk is done (its tickers published, quarantined or held for a
    person), emits ONE event of the Asset ``stockops_watchlist_day`` (extra: the day and each ticker's outcome),
    which starts ``stock_train`` and ``stock_monitor``: neither runs on a partial day, and a held ticker never
    holds the others up (its review publishes it when a person decides). A closed market (no chunks), or a day
    with no new snapshot (a re-run: the same data again), emits nothing (the task is skipped, saying why). A
    ticker whose fetch failed for good (or whose chunk died) has no outcome: it is named, and the others' event
    goes out."""

    template_fields = ("chunks",)
    ui_color = "#e8f5e9"

    def __init__(self, *, chunks: Any, **kwargs: Any) -> None:
        super().__init__(outlets=[AssetAlias(DAY_ALIAS)], trigger_rule="all_done", **kwargs)
        self.chunks = chunks

    def execute(self, context: Any) -> dict[str, Any]:
        chunks = [IngestChunk.from_xcom(c) for c in self.chunks or []]
        if not chunks:
            raise AirflowSkipException("nothing was ingested (the market is closed): no day event")
        run = context["dag_run"]
        since = (run.start_date or run.run_after).isoformat(timespec="seconds")  # a snapshot first published since
        tickers = [t for chunk in chunks for t in chunk.tickers]
        outcome = day_outcome(get_settings(), chunks[0].logical_date, tickers, since)
        if outcome["pending"]:
            self.log.warning("%s: no outcome for %s (a fetch that failed for good, or a chunk that died): the day "
                             "event goes out without them", outcome["day"], ", ".join(outcome["pending"]))
        counts: dict[str, int] = {}
        for status in outcome["settled"].values():
            counts[status] = counts.get(status, 0) + 1
        self.log.info("%s settled: %s", outcome["day"], ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        if not outcome["new"]:
            raise AirflowSkipException(f"{outcome['day']}: no ticker published a new snapshot (the same data again): "
                                       "no day event, so nothing is retrained on it")
        context["outlet_events"][AssetAlias(DAY_ALIAS)].add(Asset(name=DAY_ASSET_NAME, uri=DAY_ASSET_URI,
                                                                  group="stockops"), extra=outcome)
        return outcome


class HeldDayReview(HITLOperator):
    """Ask a person whether a held extreme move is real (Approve: publish) or a feed error (Reject: quarantine).

    ``validated`` is one held ticker's :class:`Validated` (JSON, from the ``held`` task), parsed when the task runs.
    The answer is carried out here (its chunk did not publish the held ticker, so that the day's other
    tickers and its "day ingested" event never wait for a person): Approve publishes the snapshot and updates
    the ticker's Asset, Reject quarantines the data.
    """

    template_fields = (*HITLOperator.template_fields, "validated")

    def __init__(self, *, validated: Any, response_timeout: timedelta, params: dict | None = None,
                 **kwargs: Any) -> None:
        # ``params`` brings the DAG's own Params (the Trigger form's): the question's form asks only for a reason.
        super().__init__(
            subject="an extreme move waits for a decision",  # replaced by the ticker's own question at run time
            options=[APPROVE, REJECT],
            params={"reason": Param("", type="string", title="Reason",
                                    description="Why: kept in the audit trail with your decision."),
                    "approve_only": Param("", type="string", title="Approve only these days",
                                          pattern=r"^[0-9, -]*$",
                                          description="With Approve: the days (YYYY-MM-DD, comma-separated) to "
                                                      "approve; the other held days are rejected. Empty: all.")},
            response_timeout=response_timeout,
            **{"outlets": [AssetAlias(PRICES_ALIAS)], **kwargs},  # a mapped review names them in partial()
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
        validated = self._validated()
        settings = get_settings()
        given = answer["params_input"] or {}
        record_review(validated, approved=answer["chosen_options"] == [APPROVE],
                      by=user.get("name") or user.get("id") or "unknown",
                      reason=str(given.get("reason", "")), dag_run_id=context["run_id"], settings=settings,
                      approve_only=str(given.get("approve_only") or "").replace(" ", ",").split(","))
        # the decision carried out: published, or quarantined
        outcome = publish_validated(validated, settings=settings)
        if isinstance(outcome, Published) and outcome.latest:
            emit_prices(context["outlet_events"], outcome)
        return answer


def emit_prices(outlet_events: Any, published: Published) -> None:
    """Update the ticker's own Asset (``stockops_prices_<TICKER>``) through the alias, with the snapshot's lineage."""
    ticker = published.ticker
    outlet_events[AssetAlias(PRICES_ALIAS)].add(
        Asset(name=prices_asset_name(ticker), uri=prices_asset_uri(ticker), group="stockops"),
        extra={"ticker": ticker, "hash": published.entry.hash, "last_date": published.entry.last_date,
               "logical_date": published.logical_date})


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
        self.proposal = p = resolve_proposal(get_settings(), dict(self.proposal))
        self.subject = f"Roll {p['model']} back from v{p['from_version']} to v{p['to_version']}?"
        self.body = (f"The monitor proposes this rollback.\n\n**Evidence:** {p['evidence']}\n\n"
                     f"Monitor report: `{p.get('report') or 'none'}`\n\nApprove starts `stock_rollback` to "
                     f"v{p['to_version']}; Reject keeps v{p['from_version']} (the monitor asks again after its "
                     "cool-down if the evidence holds).")
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        answer = dict(super().execute_complete(context, event))
        settings = get_settings()
        # resumed in a new operator: the versions a hand-made proposal left empty are filled in again, as asked
        self.proposal = resolve_proposal(settings, dict(self.proposal))
        user = answer.get("responded_by_user") or {}
        by = user.get("name") or user.get("id") or "nobody (no answer within the timeout: Reject)"
        reason = str((answer.get("params_input") or {}).get("reason", "")) or "no reason given"
        approved = answer["chosen_options"] == [ApprovalOperator.APPROVE]
        record_rollback_answer(settings, self.proposal, approved=approved, by=by, reason=reason,
                               dag_run_id=context["run_id"])
        answer["rollback_reason"] = (f"monitor proposal approved by {by}: {reason}. Evidence: "
                                     f"{self.proposal['evidence']}")[:2000]
        answer["to_version"] = str(self.proposal["to_version"])
        return answer


def resolve_proposal(settings: Settings, proposal: dict[str, Any]) -> dict[str, Any]:
    """A proposal with the versions a person left empty filled in (from: the champion; to: the champion before it)
    and its evidence said to be by hand; refuses, before anyone is asked, when there is nothing to roll back to."""
    from stockops import registry
    from stockops.registry.changes import previous_champion

    if proposal.get("from_version") and proposal.get("to_version"):
        return {**proposal, "evidence": proposal.get("evidence") or "proposed by hand (no evidence given)"}
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
