"""The DORA report for people: durations as words, the table of measures and the details behind it."""

from __future__ import annotations

from typing import Any

from stockops.core.humanize import human_duration
from stockops.core.humanize import number as _number
from stockops.core.humanize import plural as _plural


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
