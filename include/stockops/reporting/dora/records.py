"""The records the DORA report reads, and how their times, kinds and outcomes are read.

All of them are what the platform already writes under its home:

* ``serving/deploys.jsonl`` — every deploy attempt (``kind`` promotion, rollback or serve);
* ``audit/audit.jsonl`` — gate decisions, promotions and rollbacks;
* the snapshot manifests of the watchlist's tickers (and of any other ticker a gate entry lists) —
  when each snapshot of prices was published;
* ``audit/dag_runs.jsonl`` — every DAG run's start and outcome (the Airflow listener);
* ``serving/incidents.jsonl`` — serving outages the supervisor detected and healed (or not).

Records later than ``now`` are left out (:func:`_events`), so a report can be recomputed as of a past moment.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from stockops.core.audit import read as read_jsonl
from stockops.core.humanize import DAY, HOUR, MINUTE
from stockops.core.settings import TICKER_PATTERN, Settings

CHANGE_KINDS = ("promotion", "rollback")  # deploy kinds that change what the endpoint serves
__all__ = ["DAY", "HOUR", "MINUTE", "MONTH", "WEEK", "load_records", "manifest_tickers"]
WEEK, MONTH = 7 * DAY, 30 * DAY


# ---- reading times ---------------------------------------------------------------------------
def _when(value: object) -> datetime | None:
    """An ISO-8601 time as an aware UTC datetime (naive ones are taken as UTC); None if absent or bad."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _at(record: dict) -> datetime:
    return _when(record.get("at")) or datetime.min.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def _answered(deploy: dict) -> datetime:
    """When the stable address answered with the deploy's version (``at`` for records without the switch time)."""
    started, switched = _when(deploy.get("started_at")), deploy.get("switched_after_s")
    if started is not None and switched is not None:
        return started + timedelta(seconds=float(switched))
    return _at(deploy)


def _kind(deploy: dict) -> str:
    return deploy.get("kind") or "promotion"  # records from before the kind field were all promotions


def _succeeded(deploy: dict) -> bool:
    return deploy.get("outcome") == "succeeded"


def _events(records: list[dict], event: str, now: datetime) -> list[dict]:
    """The records of one event with a readable time no later than ``now``, oldest first."""
    kept = [r for r in records if r.get("event", event) == event and _when(r.get("at")) is not None
            and _at(r) <= now]
    return sorted(kept, key=_at)


# ---- from the home -----------------------------------------------------------------------------
def load_records(settings: Settings) -> dict[str, list[dict]]:
    """The record lists under ``settings.home``, as ``compute`` takes them (missing files: empty)."""
    from stockops.data import store_for

    audit = read_jsonl(settings.audit_log)
    return {"deploys": read_jsonl(settings.deploy_log), "audit": audit,
            "snapshots": [asdict(entry) for ticker in manifest_tickers(settings, audit)
                          for entry in store_for(settings, ticker).entries()],
            "dag_runs": read_jsonl(settings.dag_run_log), "incidents_log": read_jsonl(settings.incident_log)}


def manifest_tickers(settings: Settings, audit: list[dict]) -> list[str]:
    """Whose snapshot manifests the report reads: the watchlist, then any other symbol a gate entry lists a
    snapshot of (a ticker since dropped from the watchlist) that has a manifest."""
    from stockops.data import store_for

    named = [t for e in audit if e.get("event") == "gate" and isinstance(e.get("snapshots"), dict)
             for t in e["snapshots"] if isinstance(t, str) and TICKER_PATTERN.match(t)]
    return [*settings.tickers, *(t for t in dict.fromkeys(named)
                                 if t not in settings.tickers and store_for(settings, t).entries())]
