"""The record of champion changes: one audit-log line per change of ``@champion``, tagged on the versions.

Every change of the ``champion`` alias — a promotion, a forced promotion, a rollback, a
reconciliation — goes through :func:`record_change`: one line in the audit log under the home
(durable, append-only) and tags on the MLflow model versions involved (``champion_change`` on the
new one, ``replaced_by`` on the old one). :func:`history` reads the changes back
(``python -m stockops history``). The serving deploy (the critical section that moves the alias)
and the rollback steps both write through here.
"""

from __future__ import annotations

import logging
from typing import Any

from stockops import registry
from stockops.contracts import BASELINE, FORCED
from stockops.core import audit
from stockops.core.settings import Settings

log = logging.getLogger(__name__)

CHANGES = ("promotion", "rollback", "reconciliation")


def record_change(settings: Settings, event: str, *, from_version: Any, to_version: Any, reason: str,
                  dag_run_id: str = "", **fields: Any) -> dict:
    """Append one champion change to the audit log and tag it on the MLflow model versions."""
    entry = audit.record(settings.audit_log, event, ticker=settings.ticker, model=settings.model_name,
                         from_version=None if from_version is None else str(from_version),
                         to_version=str(to_version), reason=reason, dag_run_id=dag_run_id, **fields)
    kind = describe(entry)
    source = f"v{from_version}" if from_version is not None else "none"
    try:  # the audit entry and the alias are the record; these tags only repeat it on the versions
        registry.tag_version(settings, to_version,
                             champion_change=f"{entry['at']} {kind}: {source} -> v{to_version}; why: {reason}; "
                                             f"dag run: {dag_run_id or 'none'}"[:5000],
                             champion_since=entry["at"])
        if from_version is not None and str(from_version) != str(to_version):
            registry.tag_version(settings, from_version, replaced_by=f"v{to_version} ({kind}) at {entry['at']}")
    except Exception as exc:  # noqa: BLE001 - MLflow refused a tag write after the change was made
        log.warning("champion change recorded in %s, but tagging it on the model versions failed: %s",
                    settings.audit_log, exc)
    return entry


def describe(entry: dict) -> str:
    """``promotion``, ``forced promotion``, ``baseline promotion`` (the classical baseline serving while no LSTM
    passes the gate), ``rollback`` or ``forced rollback``."""
    forced = entry.get("decision") == FORCED or entry.get("forced") is True  # the gate's label, as recorded
    baseline = entry.get("decision") == BASELINE
    return f"{'forced ' if forced else 'baseline ' if baseline else ''}{entry['event']}"


NOTE_CHARS = 1000  # Airflow keeps a DAG run note of at most this many characters


def training_note(settings: Settings, dag_run_id: str) -> str | None:
    """What a ``stock_train`` run decided, in one line for its DAG run note (the grid shows it): the gate's verdict
    on the candidate, the baseline that serves instead, and whether a deploy changed the champion; None when the
    run recorded no gate decision (it failed before the gate)."""
    entries = [e for e in audit.read(settings.audit_log) if e.get("dag_run_id") == dag_run_id]
    gate = next((e for e in reversed(entries) if e.get("event") == "gate"), None)
    if gate is None:
        return None
    baseline = next((e for e in reversed(entries) if e.get("event") == "baseline"), None)
    promoted = next((e for e in reversed(entries) if e.get("event") == "promotion"), None)
    verdict = str(gate.get("decision", "")).upper()
    note = f"{verdict} v{gate.get('version')}: {gate.get('reason', '')}"
    if baseline is not None:
        served = promoted is not None and str(promoted.get("to_version")) == str(baseline.get("version"))
        note = (f"v{baseline.get('version')} HARX-GKO baseline {'serves' if served else 'NOT deployed'} "
                f"({baseline.get('reason', '')}). Candidate {note}")
    elif promoted is None:
        note += " | champion unchanged" if verdict == "REFUSED" else " | NOT deployed"
    return note[:NOTE_CHARS]


def history(settings: Settings) -> list[dict]:
    """Every champion change, oldest first."""
    return [e for e in audit.read(settings.audit_log) if e.get("event") in CHANGES]


def format_history(changes: list[dict]) -> str:
    if not changes:
        return "no champion changes yet: no model has passed the gate"
    lines = [f"{'when (UTC)':<25} {'change':<17} {'from':>5} → {'to':<5} {'dag run':<40} why"]
    for e in changes:
        source = f"v{e['from_version']}" if e.get("from_version") else "none"
        lines.append(f"{e['at']:<25} {describe(e):<17} {source:>5} → v{e['to_version']:<4} "
                     f"{(e.get('dag_run_id') or '-'):<40} {e.get('reason', '')}")
    return "\n".join(lines)


def previous_champion(settings: Settings, current: str) -> str | None:
    """The champion before ``current``: where the change that made ``current`` champion came from."""
    for entry in reversed(history(settings)):
        if str(entry["to_version"]) == str(current):
            return entry.get("from_version")
    return None


def record_rollback_answer(settings: Settings, proposal: dict, *, approved: bool, by: str, reason: str,
                           dag_run_id: str = "") -> dict:
    """An operator's answer to the monitor's rollback proposal, in the audit log (the rollback itself is recorded
    by the change it makes)."""
    return audit.record(settings.audit_log, "rollback_proposal", ticker=settings.ticker, model=settings.model_name,
                        from_version=str(proposal["from_version"]), to_version=str(proposal["to_version"]),
                        decision="approved" if approved else "rejected", by=by, reason=reason,
                        evidence=proposal.get("evidence", ""), dag_run_id=dag_run_id)
