"""The DORA measures, computed from the record lists as plain data (:func:`compute`), and their levels.

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
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

from stockops.reporting.dora.records import (
    CHANGE_KINDS,
    DAY,
    HOUR,
    MONTH,
    WEEK,
    _answered,
    _at,
    _events,
    _iso,
    _kind,
    _succeeded,
    _when,
)
from stockops.reporting.dora.text import _plural

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


def _seconds(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds(), 2)


def _stats(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0, "median_s": None, "mean_s": None, "max_s": None}
    return {"n": len(seconds), "median_s": round(statistics.median(seconds), 2),
            "mean_s": round(statistics.fmean(seconds), 2), "max_s": max(seconds)}



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
