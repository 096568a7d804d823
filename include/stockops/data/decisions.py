"""What people decided about held days: an extreme move that no rule could settle.

One append-only file per ticker (``<home>/data/<TICKER>/decisions.jsonl``), the newest decision
for a day wins: ``approved`` (the move is real: publish it, and never ask about that day again)
or ``rejected`` (a feed error: quarantine it, and keep refusing that day while the feed serves
it). Every decision and every request for one also goes to the audit log, with the ticker.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stockops.core import audit
from stockops.core.settings import Settings

log = logging.getLogger(__name__)

APPROVED = "approved"
REJECTED = "rejected"
EVENT = "data_decision"
REQUEST_EVENT = "data_review_requested"


def decisions_path(settings: Settings, ticker: str) -> Path:
    return settings.ticker_data_dir(ticker) / "decisions.jsonl"


def decided_days(settings: Settings, ticker: str) -> dict[str, str]:
    """Day (ISO) -> ``approved`` or ``rejected``: the newest decision for each day of ``ticker``."""
    return {entry["day"]: entry["decision"] for entry in audit.read(decisions_path(settings, ticker))
            if entry.get("decision") in (APPROVED, REJECTED)}


def record_decision(settings: Settings, ticker: str, days: list[str], decision: str, *, by: str, reason: str,
                    logical_date: str = "", dag_run_id: str = "", evidence: list[dict] | None = None) -> list[dict]:
    """Remember ``decision`` for each of ``days`` (per ticker, then in the audit log); returns the entries."""
    if decision not in (APPROVED, REJECTED):
        raise ValueError(f"decision must be {APPROVED!r} or {REJECTED!r}, not {decision!r}")
    moves = {item["day"]: item for item in evidence or []}
    entries = []
    for day in days:
        fields = {"ticker": ticker, "day": day, "decision": decision, "by": by or "unknown",
                  "reason": reason or "(no reason given)", "logical_date": logical_date, "dag_run_id": dag_run_id,
                  "move_pct": moves.get(day, {}).get("move_pct")}
        entries.append(audit.record(decisions_path(settings, ticker), EVENT, **fields))
        audit.record(settings.audit_log, EVENT, **fields)
        log.warning("%s %s: %s by %s (%s)", ticker, day, decision.upper(), fields["by"], fields["reason"])
    return entries


def record_request(settings: Settings, ticker: str, held: list[dict], *, logical_date: str, dag_run_id: str = "") -> dict:
    """The audit trail's side of a question put to a person: which days, which moves."""
    return audit.record(settings.audit_log, REQUEST_EVENT, ticker=ticker, logical_date=logical_date,
                        dag_run_id=dag_run_id, days=[h["day"] for h in held], moves_pct=[h["move_pct"] for h in held])
