"""The DORA report: the four DORA measures, computed from the platform's own records.

MLOps-pipeline papers compare pipelines by the four DORA measures. Here they come from what
the platform already writes under its home, not from anything kept for the report:

* ``serving/deploys.jsonl`` — every deploy attempt (``kind`` promotion, rollback or serve);
* ``audit/audit.jsonl`` — gate decisions, promotions and rollbacks;
* the snapshot manifests of the watchlist's tickers (and of any other ticker a gate entry lists) —
  when each snapshot of prices was published;
* ``audit/dag_runs.jsonl`` — every DAG run's start and outcome (the Airflow listener);
* ``serving/incidents.jsonl`` — serving outages the supervisor detected and healed (or not).

A "change" is a new model version reaching the endpoint by promotion. "serve" deploys restart
the current champion (``make run``) and change nothing: they count in none of the measures.
Records later than ``now`` are left out, so a report can be recomputed as of a past moment.

Definitions
-----------
**Report period**: the last ``days`` days ending at ``now``, but starting no earlier than the
first record of any kind (while still at least one day long), so a platform started yesterday
is not divided by 30.

**Deployment frequency**: successful deploys of kind promotion or rollback that ended in the
period, per day of the period (also the count and the rate per week).

**Lead time for changes**: for each successful promotion deploy in the period, the moment the
stable address answered with the new version (``started_at + switched_after_s``; the record's
``at`` when ``switched_after_s`` is missing) minus the moment the last input the model was trained
on was published: the newest ``published_at`` among the snapshots it was trained on. The model's
lineage hash is the deploy record's ``snapshot_hash``, or for older records without one, that of
the audit "promotion" entry of the same DAG run and version. A watchlist model's hash combines
every ticker's snapshot: its snapshots are the ``snapshots`` (ticker → hash) of the audit "gate"
entry with that ``snapshot_hash`` (the one of the same MLflow run, else version, when several
match), each looked up in its own ticker's manifest. A single-ticker model's hash (older records,
whose gate entries list no ``snapshots``) is itself a snapshot in a manifest. Deploys whose hash
is unknown, or one of whose snapshots is in no manifest, are listed as unmatched with the reason
(the ticker and hash missing). The level uses the median.

**Change failure rate**: changes = promotion deploy attempts in the period. A change failed when
its deploy failed (health check; outcome "failed") or when it succeeded but was rolled back later:
an audit "rollback" entry with ``from_version`` equal to its version, after its deploy and before
the next successful promotion of another version. Rate = failed / changes (None without changes).

**Time to restore**: for each audit "rollback" entry in the period, the successful rollback deploy
that carried it out — the one with the same ``dag_run_id``; failing that, the first unused one of
``to_version`` that ended at or after the request (or, when the request time is unknown, the
closest in time to the entry). Restore = the moment it answered (``started_at + switched_after_s``)
minus the request: the entry's ``requested_at`` (the rollback DAG run's start), else the DAG-run
log's ``start_date`` for that run, else the entry's own ``at`` — a rollback entry is written after
its deploy, so that last fallback is capped at the deploy's ``started_at`` (a lower bound). A
rollback with no matching deploy is listed as not restored, outside the statistics. Failed
promotion deploys are *not* incidents: the old version kept serving, so they are listed as
"no outage" and never enter the time-to-restore statistics. The level uses the median.

**Incidents**: outages of the endpoint the serving supervisor detected (a dead or hung bento or
proxy), counted by the record that closed them (``recovered``) in the period, with their cause,
downtime (last seen healthy → answering again) and detection time; outages still open or
recorded ``unrecovered`` are listed apart. They are not rollbacks: a heal serves the same version.

**Levels** (elite/high/medium/low) follow the 2021 Accelerate State of DevOps report; the bands
are in ``LEVELS``. A level is None where there is nothing to rate.

**Pipeline runs**: per ``dag_id``, runs that finished (success or failed) in the period, by their
last recorded state, and runs still running.

``python -m stockops dora`` prints the table and writes ``reports/dora.json`` and ``reports/dora.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stockops.core.audit import read as read_jsonl
from stockops.core.settings import TICKER_PATTERN, Settings, get_settings

CHANGE_KINDS = ("promotion", "rollback")  # deploy kinds that change what the endpoint serves
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
WEEK, MONTH = 7 * DAY, 30 * DAY

# Performance bands after the 2021 Accelerate State of DevOps report (DORA, Google Cloud; "Software
# delivery performance" table). The report's cells leave gaps (e.g. lead time: nothing between one hour
# and one day); here each band reaches to the next one's bound, and a month is 30 days.
# measure: (how a value meets a bound, ((level, bound), ...) best first); "low" when none is met.
LEVELS: dict[str, tuple[str, tuple[tuple[str, float], ...]]] = {
    # successful deploys per day: on demand (≥ 1 a day); high: weekly to monthly (and the report's gap
    # between daily and weekly); medium: monthly to once every 6 months; low: less
    "deployment_frequency": (">=", (("elite", 1.0), ("high", DAY / MONTH), ("medium", DAY / (6 * MONTH)))),
    # seconds (median): < 1 hour, < 1 week, < 6 months, more
    "lead_time": ("<", (("elite", HOUR), ("high", WEEK), ("medium", 6 * MONTH))),
    # seconds (median): < 1 hour, < 1 day, < 1 week, more
    "time_to_restore": ("<", (("elite", HOUR), ("high", DAY), ("medium", WEEK))),
    # share of changes that failed: 0-15 %, 16-30 % (the report's high and medium), more
    "change_failure_rate": ("<=", (("elite", 0.15), ("high", 0.30))),
}


def level(measure: str, value: float | None) -> str | None:
    """The DORA level of ``value`` for ``measure`` (a key of ``LEVELS``); None for no value."""
    if value is None:
        return None
    how, bands = LEVELS[measure]
    meets = {">=": value.__ge__, "<": value.__lt__, "<=": value.__le__}[how]
    return next((name for name, bound in bands if meets(bound)), "low")


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


def _seconds(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds(), 2)


def _stats(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0, "median_s": None, "mean_s": None, "max_s": None}
    return {"n": len(seconds), "median_s": round(statistics.median(seconds), 2),
            "mean_s": round(statistics.fmean(seconds), 2), "max_s": max(seconds)}


def _events(records: list[dict], event: str, now: datetime) -> list[dict]:
    """The records of one event with a readable time no later than ``now``, oldest first."""
    kept = [r for r in records if r.get("event", event) == event and _when(r.get("at")) is not None
            and _at(r) <= now]
    return sorted(kept, key=_at)


# ---- the period ------------------------------------------------------------------------------
def report_period(times: list[datetime], now: datetime, days: float) -> tuple[datetime, datetime]:
    """(start, end) of the report: ``days`` back from ``now``, not before the first record unless under a day."""
    start = now - timedelta(days=days)
    earlier = [t for t in times if t <= now]
    if earlier:
        start = max(start, min(min(earlier), now - timedelta(days=1)))
    return start, now


# ---- the four measures -----------------------------------------------------------------------
def deployment_frequency(changes: list[dict], start: datetime, end: datetime) -> dict[str, Any]:
    """Successful promotion and rollback deploys in the period, per day and week, with a day-by-day series."""
    days = (end - start).total_seconds() / DAY
    succeeded = [d for d in changes if _succeeded(d)]
    per_day = len(succeeded) / days
    daily: dict[str, dict[str, Any]] = {}
    day = start.date()
    while day <= end.date():
        daily[day.isoformat()] = {"date": day.isoformat(), "promoted": 0, "rolled_back": 0, "failed": 0}
        day += timedelta(days=1)
    for deploy in changes:
        bucket = daily[_at(deploy).date().isoformat()]
        key = "failed" if not _succeeded(deploy) else "promoted" if _kind(deploy) == "promotion" else "rolled_back"
        bucket[key] += 1
    return {
        "count": len(succeeded),
        "promotions": sum(_kind(d) == "promotion" for d in succeeded),
        "rollbacks": sum(_kind(d) == "rollback" for d in succeeded),
        "failed_attempts": len(changes) - len(succeeded),
        "per_day": round(per_day, 4), "per_week": round(per_day * 7, 4),
        "level": level("deployment_frequency", per_day) if succeeded else None,
        "daily": list(daily.values()),
        "events": [{"at": d["at"], "kind": _kind(d), "version": str(d.get("version")),
                    "outcome": d.get("outcome"), "dag_run_id": d.get("dag_run_id") or ""} for d in changes],
    }


def _published(snapshots: list[dict]) -> dict[tuple[str, str], datetime]:
    """(ticker, hash) -> when that ticker's manifest first recorded the snapshot."""
    published: dict[tuple[str, str], datetime] = {}
    for snapshot in snapshots:
        moment = _when(snapshot.get("published_at"))
        key = (str(snapshot.get("ticker") or ""), str(snapshot.get("hash") or ""))
        if key[1] and moment is not None:
            published[key] = min(moment, published.get(key, moment))
    return published


def _gate_entry(digest: str, version: str, run_id: str, answered: datetime, gate_entries: list[dict]) -> dict | None:
    """The gate entry listing the per-ticker snapshots behind the combined hash ``digest``: the one of the same
    training run, else of the same version, else the latest before the deploy answered; None if none lists them."""
    listed = [g for g in gate_entries if g.get("snapshot_hash") == digest and isinstance(g.get("snapshots"), dict)
              and g["snapshots"]]
    if not listed:
        return None
    return max(listed, key=lambda g: (bool(run_id) and g.get("run_id") == run_id, str(g.get("version")) == version,
                                      _at(g) <= answered, _at(g)))


def lead_time(promotions: list[dict], promotion_entries: list[dict], snapshots: list[dict],
              gate_entries: list[dict] | None = None) -> dict[str, Any]:
    """From the publication of the newest snapshot the model was trained on to the new version answering, for each
    successful promotion deploy (see the module docstring for how its snapshots are found)."""
    published = _published(snapshots)
    by_hash: dict[str, tuple[datetime, str]] = {}  # a single-ticker model's hash, looked up in any manifest
    for (ticker, snapshot_hash), moment in published.items():
        by_hash[snapshot_hash] = min(by_hash.get(snapshot_hash, (moment, ticker)), (moment, ticker))
    audited = {(e.get("dag_run_id") or "", str(e.get("to_version"))): e
               for e in promotion_entries if e.get("snapshot_hash")}
    gates = gate_entries or []
    events: list[dict[str, Any]] = []
    unmatched: list[dict[str, Any]] = []
    for deploy in (d for d in promotions if _succeeded(d)):
        version, answered = str(deploy.get("version")), _answered(deploy)
        entry = audited.get((deploy.get("dag_run_id") or "", version), {})
        digest: str = deploy.get("snapshot_hash") or ""
        source = "deploy record"
        if not digest:
            digest, source = entry.get("snapshot_hash") or "", "promotion audit entry"
        if not digest:
            unmatched.append({"version": version, "at": deploy["at"],
                              "reason": "no snapshot hash in the deploy record nor in a promotion audit entry"})
            continue
        gate = _gate_entry(digest, version, deploy.get("run_id") or entry.get("run_id") or "", answered, gates)
        if gate is not None:  # a watchlist model: its hash combines every ticker's snapshot
            inputs = {str(ticker): str(snapshot) for ticker, snapshot in gate["snapshots"].items()}
            missing = [f"{ticker}'s snapshot {snapshot[:12]} is not in {ticker}'s manifest"
                       for ticker, snapshot in sorted(inputs.items()) if (ticker, snapshot) not in published]
            if missing:
                unmatched.append({"version": version, "at": deploy["at"],
                                  "reason": f"snapshot {digest[:12]} combines {_plural(len(inputs), 'ticker')} "
                                            f"(gate entry of v{gate.get('version')}): " + "; ".join(missing)})
                continue
            start, last_input = max((published[item], item[0]) for item in inputs.items())
            source = f"gate entry ({_plural(len(inputs), 'ticker')})"
        elif digest in by_hash:  # a single-ticker model: its hash is that ticker's snapshot
            start, last_input = by_hash[digest]
        else:
            recorded = next((g for g in reversed(gates) if g.get("snapshot_hash") == digest), None)
            reason = f"snapshot {digest[:12]} is not in the manifest"
            if recorded is not None:
                reason = (f"snapshot {digest[:12]} is in no ticker's manifest, and the gate entry of "
                          f"v{recorded.get('version')} with that hash does not list its tickers' snapshots "
                          "(gate entries written before they did)")
            unmatched.append({"version": version, "at": deploy["at"], "reason": reason})
            continue
        events.append({"version": version, "snapshot": digest[:12], "hash_from": source, "last_input": last_input,
                       "published_at": _iso(start), "answered_at": _iso(answered),
                       "seconds": _seconds(answered, start)})
    stats = _stats([e["seconds"] for e in events])
    return {**stats, "level": level("lead_time", stats["median_s"]), "events": events, "unmatched": unmatched}


def change_failure_rate(promotions: list[dict], all_promotions: list[dict], rollbacks: list[dict]) -> dict[str, Any]:
    """Promotion attempts in the period that failed their health check or were rolled back later."""
    replacements = [d for d in all_promotions if _succeeded(d)]
    events, failures = [], []
    for deploy in promotions:
        version, at = str(deploy.get("version")), _at(deploy)
        event = {"at": deploy["at"], "version": version, "status": "ok", "reason": ""}
        if not _succeeded(deploy):
            event.update(status="health_check_failed",
                         reason=f"deploy failed: {deploy.get('error') or 'outcome ' + str(deploy.get('outcome'))}")
        else:
            replaced = next((_at(d) for d in replacements if _at(d) > at and str(d.get("version")) != version), None)
            undone = next((r for r in rollbacks if str(r.get("from_version")) == version and _at(r) > at
                           and (replaced is None or _at(r) < replaced)), None)
            if undone is not None:
                event.update(status="rolled_back", reason=f"rolled back to v{undone.get('to_version')} at "
                                                       f"{undone['at']}: {undone.get('reason') or 'no reason given'}")
        events.append(event)
        if event["status"] != "ok":
            failures.append(event)
    rate = len(failures) / len(promotions) if promotions else None
    return {"changes": len(promotions), "failed": len(failures), "rate": round(rate, 4) if rate is not None else None,
            "level": level("change_failure_rate", rate), "failures": failures, "events": events}


def time_to_restore(rollback_entries: list[dict], rollback_deploys: list[dict], failed_promotions: list[dict],
                    run_starts: dict[str, datetime]) -> dict[str, Any]:
    """From a rollback's request to the earlier version answering again; failed deploys listed as no outage."""
    candidates = [d for d in rollback_deploys if _succeeded(d)]
    used: set[int] = set()
    events = []
    for entry in rollback_entries:
        run_id, to_version = entry.get("dag_run_id") or "", str(entry.get("to_version"))
        requested, start_from = _when(entry.get("requested_at")), "requested_at"
        if requested is None and run_id in run_starts:
            requested, start_from = run_starts[run_id], "dag run start"
        free = [d for d in candidates if id(d) not in used]
        match = next((d for d in free if run_id and d.get("dag_run_id") == run_id), None)
        same_version = [d for d in free if str(d.get("version")) == to_version]
        if match is None and requested is not None:
            match = next((d for d in same_version if _at(d) >= requested), None)
        elif match is None and same_version:
            match = min(same_version, key=lambda d: abs((_at(d) - _at(entry)).total_seconds()))
        event = {"at": entry["at"], "from_version": str(entry.get("from_version")), "to_version": to_version,
                 "dag_run_id": run_id, "reason": entry.get("reason") or "", "forced": bool(entry.get("forced")),
                 "requested_at": _iso(requested), "start_from": start_from if requested else "rollback entry",
                 "answered_at": None, "seconds": None, "restored": match is not None, "note": ""}
        if match is None:
            event["note"] = f"no successful rollback deploy of v{to_version} found: not restored"
        else:
            used.add(id(match))
            if requested is None:  # the entry is written after its deploy: its own time would be too late
                requested = min(_at(entry), _when(match.get("started_at")) or _at(entry))
                event["requested_at"], event["note"] = _iso(requested), "request time unknown: a lower bound"
            answered = _answered(match)
            event.update(answered_at=_iso(answered), seconds=max(0.0, _seconds(answered, requested)))
        events.append(event)
    stats = _stats([e["seconds"] for e in events if e["restored"]])
    no_outage = [{"at": d["at"], "version": str(d.get("version")), "kept_serving": d.get("previous_version"),
                  "error": d.get("error") or ""} for d in failed_promotions]
    return {**stats, "level": level("time_to_restore", stats["median_s"]), "rollbacks": len(events),
            "not_restored": sum(not e["restored"] for e in events), "events": events, "no_outage": no_outage}


def pipeline_runs(dag_runs: list[dict], start: datetime, end: datetime) -> dict[str, Any]:
    """Per DAG: runs finished in the period (by their last recorded state), successes, failures, still running."""
    last: dict[tuple[str, str], dict] = {}
    for record in dag_runs:  # oldest first: the last record of a run is its current state
        last[(record.get("dag_id") or "?", record.get("run_id") or "?")] = record
    dags: dict[str, dict[str, Any]] = {}
    durations: dict[str, list[float]] = {}
    for (dag_id, _), record in sorted(last.items()):
        row = dags.setdefault(dag_id, {"finished": 0, "succeeded": 0, "failed": 0, "running": 0,
                                       "median_duration_s": None})
        state = record.get("state")
        if state == "running":
            row["running"] += 1
            continue
        ended = _when(record.get("end_date")) or _at(record)
        if state not in ("success", "failed") or not start <= ended <= end:
            continue
        row["finished"] += 1
        row["succeeded" if state == "success" else "failed"] += 1
        began = _when(record.get("start_date"))
        if began is not None:
            durations.setdefault(dag_id, []).append(_seconds(ended, began))
    for dag_id, seconds in durations.items():
        dags[dag_id]["median_duration_s"] = round(statistics.median(seconds), 2)
    return {"finished": sum(r["finished"] for r in dags.values()),
            "succeeded": sum(r["succeeded"] for r in dags.values()),
            "failed": sum(r["failed"] for r in dags.values()), "dags": dags}


def incidents(records: list[dict], start: datetime, end: datetime) -> dict[str, Any]:
    """Serving outages closed in the period (downtime, detection) and those never recovered."""
    by_id: dict[tuple, dict] = {}
    for record in records:  # oldest first: the last record of an incident is its state
        by_id[(record.get("component"), record.get("detected_at"))] = record
    closed = [r for r in by_id.values() if r.get("status") == "recovered" and start <= _at(r) <= end]
    open_ = [r for r in by_id.values() if r.get("status") in ("open", "unrecovered")]
    stats = _stats([float(r["downtime_s"]) for r in closed if r.get("downtime_s") is not None])
    return {**stats, "recovered": len(closed), "open": len(open_),
            "events": [{k: r.get(k) for k in ("component", "cause", "started_at", "detected_at", "recovered_at",
                                               "downtime_s", "detection_s", "action", "status")}
                       for r in (*closed, *open_)]}


def compute(deploys: list[dict], audit: list[dict], snapshots: list[dict], dag_runs: list[dict], *,
            now: datetime, days: float = 30, incidents_log: list[dict] | None = None) -> dict[str, Any]:
    """The DORA report as plain data, from the four record lists (see the module docstring)."""
    if days <= 0:
        raise ValueError(f"days={days}: the report period must be longer than zero days")
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    times = [t for t in (_when(r.get("at")) for r in (*deploys, *audit, *dag_runs)) if t is not None]
    times += [t for t in (_when(s.get("published_at")) for s in snapshots) if t is not None]
    # serve deploys change nothing; nor does a request found already carried out ("unchanged")
    deploys = [d for d in _events(deploys, "deploy", now) if _kind(d) in CHANGE_KINDS and d.get("outcome") != "unchanged"]
    runs = _events(dag_runs, "dag_run", now)
    entries = {name: _events(audit, name, now) for name in ("promotion", "rollback", "gate")}
    start, end = report_period(times, now, days)

    def in_period(record: dict) -> bool:
        return start <= _at(record) <= end

    changes = [d for d in deploys if in_period(d)]
    promotions = [d for d in changes if _kind(d) == "promotion"]
    run_starts: dict[str, datetime] = {}
    for run in runs:
        began = _when(run.get("start_date"))
        if run.get("run_id") and began is not None:
            run_starts.setdefault(run["run_id"], began)
    return {
        "period": {"start": _iso(start), "end": _iso(end), "days": round((end - start).total_seconds() / DAY, 4)},
        "deployment_frequency": deployment_frequency(changes, start, end),
        "lead_time": lead_time(promotions, entries["promotion"], snapshots, entries["gate"]),
        "change_failure_rate": change_failure_rate(
            promotions, [d for d in deploys if _kind(d) == "promotion"], entries["rollback"]),
        "time_to_restore": time_to_restore(
            [e for e in entries["rollback"] if in_period(e)], [d for d in deploys if _kind(d) == "rollback"],
            [d for d in promotions if not _succeeded(d)], run_starts),
        "pipeline_runs": pipeline_runs(runs, start, end),
        "incidents": incidents(_events(incidents_log or [], "incident", now), start, end),
    }


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
    snapshot of (a ticker since dropped from the watchlist) whose manifest is under the home."""
    from stockops.data import store_for

    named = [t for e in audit if e.get("event") == "gate" and isinstance(e.get("snapshots"), dict)
             for t in e["snapshots"] if isinstance(t, str) and TICKER_PATTERN.match(t)]
    return [*settings.tickers, *(t for t in dict.fromkeys(named)
                                 if t not in settings.tickers and store_for(settings, t).manifest_path.is_file())]


def report(settings: Settings | None = None, *, now: datetime | None = None, days: float = 30) -> dict[str, Any]:
    """The DORA report of the current (or given) settings' home, as of ``now`` (default: now)."""
    settings = settings or get_settings()
    return compute(**load_records(settings), now=now or datetime.now(UTC), days=days)


# ---- for people --------------------------------------------------------------------------------
def human_duration(seconds: float | None) -> str:
    """``38 s``, ``14 min``, ``6.5 h``, ``3.2 d``; an em dash for None."""
    if seconds is None:
        return "—"
    if abs(seconds) < 2 * MINUTE:
        return f"{seconds:.0f} s"
    if abs(seconds) < 2 * HOUR:
        return f"{seconds / MINUTE:.0f} min"
    if abs(seconds) < 2 * DAY:
        return f"{seconds / HOUR:.1f} h"
    return f"{seconds / DAY:.1f} d"


def _number(value: float) -> str:
    """Two decimals at most, trailing zeros dropped: 2.5, 0.38, 17.5, 0."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def table_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    freq, lead, cfr, ttr = (result[k] for k in ("deployment_frequency", "lead_time", "change_failure_rate",
                                                 "time_to_restore"))
    days = _number(result["period"]["days"])
    lead_basis = _plural(lead["n"], "promotion") + " with a known snapshot"
    if lead["unmatched"]:
        lead_basis += f" ({len(lead['unmatched'])} without)"
    ttr_basis = f"{_plural(ttr['n'], 'rollback')} restored"
    if ttr["not_restored"]:
        ttr_basis += f", {ttr['not_restored']} not restored"
    if ttr["no_outage"]:
        ttr_basis += f"; {_plural(len(ttr['no_outage']), 'failed deploy')}, no outage"

    def median(stats: dict) -> str:
        if stats["median_s"] is None:
            return "—"
        return f"{human_duration(stats['median_s'])} median (max {human_duration(stats['max_s'])})"

    return [
        ("Deployment frequency", f"{_number(freq['per_day'])} / day ({_number(freq['per_week'])} / week)",
         freq["level"] or "—", f"{_plural(freq['count'], 'deploy')} ({_plural(freq['promotions'], 'promotion')}, "
                               f"{_plural(freq['rollbacks'], 'rollback')}) in {days} days"),
        ("Lead time for changes", median(lead), lead["level"] or "—", lead_basis),
        ("Change failure rate",
         "—" if cfr["rate"] is None else f"{cfr['rate'] * 100:.0f} % ({cfr['failed']} of {cfr['changes']})",
         cfr["level"] or "—", _plural(cfr["changes"], "promotion attempt")),
        ("Time to restore", median(ttr), ttr["level"] or "—", ttr_basis),
        *([("Serving incidents", median(result["incidents"]), "—",
            f"{_plural(result['incidents']['recovered'], 'outage')} healed, {result['incidents']['open']} open")]
          if "incidents" in result else []),
    ]


def format_table(result: dict[str, Any]) -> str:
    """The report as a plain-text table (measure, value, DORA level, basis), then the details behind it."""
    period = result["period"]
    header = ("Measure", "Value", "DORA level", "Basis (n)")
    rows = [header, *table_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"DORA report: {period['start']} → {period['end']} ({_number(period['days'])} days)", ""]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * width for width in widths))

    def section(title: str, items: list[str]) -> None:
        if items:
            lines.extend(["", title, *(f"  {item}" for item in items)])

    cfr, ttr, lead = result["change_failure_rate"], result["time_to_restore"], result["lead_time"]
    section("Change failures:", [f"v{f['version']} ({f['at']}): {_short(f['reason'])}" for f in cfr["failures"]])
    section("Time to restore, per rollback:",
            [f"v{e['from_version']} → v{e['to_version']} ({e['at']}): "
             + (human_duration(e["seconds"]) + (f" ({e['note']})" if e["note"] else "") if e["restored"]
                else e["note"]) for e in ttr["events"]])
    section("No outage (failed deploys: the previous version kept serving; not in time to restore):",
            [f"v{n['version']} ({n['at']}): v{n['kept_serving']} kept serving; {_short(n['error'])}"
             for n in ttr["no_outage"]])
    section("Serving incidents (the supervisor's records):",
            [f"{e['component']} ({e['detected_at']}): {_short(e['cause'])}; "
             + (f"down {human_duration(e['downtime_s'])}, {e.get('action') or ''}" if e["status"] == "recovered"
                else f"{e['status']}") for e in result.get("incidents", {}).get("events", [])])
    section("Lead time unknown:", [f"v{u['version']} ({u['at']}): {u['reason']}" for u in lead["unmatched"]])
    runs = result["pipeline_runs"]
    section("Pipeline runs finished in the period:",
            [f"{dag_id}: {row['finished']} finished, {row['succeeded']} succeeded, {row['failed']} failed"
             + (f", {row['running']} running" if row["running"] else "")
             + (f"; median {human_duration(row['median_duration_s'])}" if row["median_duration_s"] is not None else "")
             for dag_id, row in runs["dags"].items()] or ["none recorded"])
    return "\n".join(lines)


def _short(text: str, limit: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- the chart ---------------------------------------------------------------------------------
COLOURS = {"ok": "#2e7d32", "failed": "#c62828", "rolled_back": "#ef6c00", "line": "#555555", "none": "#9e9e9e"}


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=COLOURS["none"])
    ax.set_xticks([])
    ax.set_yticks([])


def _title(name: str, value: str, grade: str | None) -> str:
    return f"{name}: {value}" + (f"  ({grade})" if grade else "")


def _median(stats: dict) -> str:
    return "—" if stats["median_s"] is None else human_duration(stats["median_s"]) + " median"


def _one_hour_line(ax, unit: float) -> None:
    ax.axhline(HOUR / unit, color=COLOURS["line"], linestyle="--", linewidth=1, label="elite: < 1 h")


def _draw_deploys(ax, freq: dict) -> None:
    ax.set_title(_title("Deployment frequency", f"{_number(freq['per_day'])} / day", freq["level"]))
    daily = freq["daily"]
    if not freq["events"]:
        return _empty(ax, "no promotion or rollback deploys in the period")
    x = list(range(len(daily)))
    bottom = [0] * len(daily)
    for key, label in (("promoted", "promotion"), ("rolled_back", "rollback"), ("failed", "failed deploy")):
        heights = [day[key] for day in daily]
        ax.bar(x, heights, bottom=bottom, color=COLOURS["ok" if key == "promoted" else key], label=label)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    rollback_days = [i for i, day in enumerate(daily) if day["rolled_back"]]
    ax.scatter(rollback_days, [bottom[i] + 0.15 for i in rollback_days], marker="v", color=COLOURS["rolled_back"],
               zorder=3)
    step = max(1, len(daily) // 10)
    ax.set_xticks(x[::step], [day["date"][5:] for day in daily][::step], rotation=45, ha="right")
    ax.set_ylabel("deploys per day")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper left", fontsize="small")


def _draw_lead_time(ax, lead: dict) -> None:
    ax.set_title(_title("Lead time (snapshot → answering)", _median(lead), lead["level"]))
    events = lead["events"]
    if not events:
        return _empty(ax, "no promotion with a known snapshot in the period")
    minutes = [e["seconds"] / MINUTE for e in events]
    x = list(range(len(events)))
    ax.scatter(x, minutes, color=COLOURS["ok"], zorder=3)
    for i, e in enumerate(events):
        ax.annotate(human_duration(e["seconds"]), (i, minutes[i]), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize="small")
    _one_hour_line(ax, MINUTE)
    ax.set_yscale("log")
    ax.set_ylim(min([*minutes, HOUR / MINUTE]) / 2, max([*minutes, HOUR / MINUTE]) * 2.5)
    ax.set_xticks(x, [f"v{e['version']}" for e in events])
    ax.set_xlim(-0.5, len(events) - 0.5)
    ax.set_ylabel("minutes (log scale)")
    ax.legend(loc="upper left", fontsize="small")


def _draw_failures(ax, cfr: dict) -> None:
    value = "—" if cfr["rate"] is None else f"{cfr['rate'] * 100:.0f} % ({cfr['failed']} of {cfr['changes']})"
    ax.set_title(_title("Change failure rate", value, cfr["level"]))
    events = cfr["events"]
    if not events:
        return _empty(ax, "no promotion attempts in the period")
    styles = {"ok": ("ok", "ok"), "health_check_failed": ("failed", "failed health check"),
              "rolled_back": ("rolled_back", "rolled back later")}
    shown = set()
    for i, e in enumerate(events):
        colour, label = styles[e["status"]]
        ax.bar(i, 1, color=COLOURS[colour], label=None if label in shown else label)
        shown.add(label)
    ax.set_xticks(range(len(events)), [f"v{e['version']}\n{e['at'][5:10]}" for e in events])
    ax.set_yticks([])
    ax.set_ylim(0, 1.4)
    ax.set_xlabel("promotion attempts, in order")
    ax.legend(loc="upper right", fontsize="small", ncols=3)


def _draw_restores(ax, ttr: dict) -> None:
    ax.set_title(_title("Time to restore (rollback request → answering)", _median(ttr), ttr["level"]))
    events = ttr["events"]
    if not events:
        text = "no rollbacks in the period"
        if ttr["no_outage"]:
            text += f"\n({_plural(len(ttr['no_outage']), 'failed deploy')}: no outage, the old version kept serving)"
        return _empty(ax, text)
    x = list(range(len(events)))
    minutes = [(e["seconds"] or 0) / MINUTE for e in events]
    ax.bar(x, minutes, width=0.6, color=[COLOURS["ok"] if e["restored"] else COLOURS["none"] for e in events])
    for i, e in enumerate(events):
        text = human_duration(e["seconds"]) if e["restored"] else "not restored"
        ax.annotate(text, (i, minutes[i]), textcoords="offset points", xytext=(0, 4), ha="center", fontsize="small",
                    color="black" if e["restored"] else COLOURS["failed"])
    _one_hour_line(ax, MINUTE)
    ax.set_ylim(0, max([*minutes, HOUR / MINUTE]) * 1.2)
    ax.set_xlim(-0.5, max(len(events), 3) - 0.5)  # a lone bar stays bar-sized
    ax.set_xticks(x, [f"v{e['from_version']}→v{e['to_version']}" for e in events])
    ax.set_ylabel("minutes")
    if ttr["no_outage"]:
        ax.set_xlabel(f"{_plural(len(ttr['no_outage']), 'failed deploy')} not counted: no outage")
    ax.legend(loc="upper left", fontsize="small")


def draw_chart(result: dict[str, Any], path: Path | str) -> Path:
    """The report as a 2×2 PNG: deploys per day, lead time per change, change failures, time to restore."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(13, 8.5), layout="constrained")
    FigureCanvasAgg(figure)  # Agg, without pyplot's global state
    (deploys_ax, lead_ax), (failures_ax, restores_ax) = figure.subplots(2, 2)
    _draw_deploys(deploys_ax, result["deployment_frequency"])
    _draw_lead_time(lead_ax, result["lead_time"])
    _draw_failures(failures_ax, result["change_failure_rate"])
    _draw_restores(restores_ax, result["time_to_restore"])
    period = result["period"]
    figure.suptitle(f"DORA measures, {period['start'][:16].replace('T', ' ')} → "
                    f"{period['end'][:16].replace('T', ' ')} UTC "
                    f"({_number(period['days'])} days)", fontsize="large")
    figure.savefig(path, dpi=110)
    return path


# ---- command line ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python -m stockops dora``: print the table, write the JSON and the chart, print where."""
    parser = argparse.ArgumentParser(prog="stockops dora",
                                     description="The four DORA measures from this home's own records.")
    parser.add_argument("--days", type=float, default=30, help="report period in days, ending now (default 30)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON (default reports/dora.json)")
    parser.add_argument("--chart", type=Path, default=None, help="where to write the PNG (default reports/dora.png)")
    args = parser.parse_args(argv)
    if args.days <= 0:
        parser.error(f"--days {args.days}: the period must be longer than zero days")
    settings = get_settings()
    result = report(settings, days=args.days)
    json_path = args.json or settings.reports_dir / "dora.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    chart_path = draw_chart(result, args.chart or settings.reports_dir / "dora.png")
    print(format_table(result))
    print(f"\nJSON:  {json_path}\nchart: {chart_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
