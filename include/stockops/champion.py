"""Champion changes and rollback: who served, since when, why, and going back in seconds.

Every change of the ``champion`` alias — a promotion, a forced promotion, a rollback — goes
through :func:`record_change`: one line in the audit log under the home (durable, append-only)
and tags on the MLflow model versions involved (``champion_change`` on the new one,
``replaced_by`` on the old one). :func:`history` reads the changes back
(``python -m stockops history``).

A rollback is the ``stock_rollback`` DAG's chain, each step a plain function:
``plan_rollback`` (refuses an unknown version, the current champion, or a version the gate
refused unless forced — before anything changes) → ``rollback_bento`` (the version's bento,
built if missing) → ``deploy_rollback`` (the same health-checked switch as a promotion) →
``complete_rollback`` (moves ``champion``, records the change).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from stockops import audit, registry
from stockops.config import Settings, get_settings

log = logging.getLogger(__name__)

CHANGES = ("promotion", "rollback")


class RollbackRefused(ValueError):
    """The requested rollback is not allowed; nothing was changed."""


# ---- the record of changes ----------------------------------------------------------------------
def record_change(settings: Settings, event: str, *, from_version: Any, to_version: Any, reason: str,
                  dag_run_id: str = "", **fields: Any) -> dict:
    """Append one champion change to the audit log and tag it on the MLflow model versions."""
    entry = audit.record(settings.audit_log, event, ticker=settings.ticker, model=settings.model_name,
                         from_version=None if from_version is None else str(from_version),
                         to_version=str(to_version), reason=reason, dag_run_id=dag_run_id, **fields)
    kind = describe(entry)
    source = f"v{from_version}" if from_version is not None else "none"
    registry.tag_version(settings, to_version,
                         champion_change=f"{entry['at']} {kind}: {source} -> v{to_version}; why: {reason}; "
                                         f"dag run: {dag_run_id or 'none'}"[:5000],
                         champion_since=entry["at"])
    if from_version is not None and str(from_version) != str(to_version):
        registry.tag_version(settings, from_version, replaced_by=f"v{to_version} ({kind}) at {entry['at']}")
    return entry


def describe(entry: dict) -> str:
    """``promotion``, ``forced promotion``, ``rollback`` or ``forced rollback``."""
    forced = entry.get("decision") == "forced" or entry.get("forced") is True
    return f"{'forced ' if forced else ''}{entry['event']}"


def history(settings: Settings | None = None) -> list[dict]:
    """Every champion change, oldest first."""
    settings = settings or get_settings()
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


# ---- the rollback steps -------------------------------------------------------------------------
def plan_rollback(version: Any = "", why: str = "", force: Any = False, requested_at: str = "") -> dict:
    """Check the request against the registry and the gate's record; refuse before anything changes.

    (``why``, not ``reason``: Airflow reserves ``reason`` as a task context key.)
    """
    from mlflow.exceptions import MlflowException

    settings = get_settings()
    registry.setup(settings)
    reason = (why or "").strip()
    if not reason:
        raise RollbackRefused("a rollback needs a reason (the `reason` param): it goes into the audit trail")
    forced = str(force).lower() in ("true", "1", "yes")
    champion = registry.champion_version(settings)
    if champion is None:
        raise RollbackRefused(f"{settings.model_name} has no champion: there is nothing to roll back from")
    target = str(version).strip().removeprefix("v") if version not in (None, "") else ""
    if not target:
        target = previous_champion(settings, champion.version) or ""
        if not target:
            raise RollbackRefused(f"v{champion.version} is the first champion of {settings.model_name}: there is no "
                                  "earlier one to roll back to; name a `version`")
    try:
        chosen = registry.get_version(settings, target)
    except MlflowException:
        known = sorted(int(v.version) for v in registry.list_versions(settings))
        raise RollbackRefused(f"{settings.model_name} has no version {target!r} (versions: "
                              f"{', '.join(map(str, known)) or 'none'})") from None
    if str(chosen.version) == str(champion.version):
        raise RollbackRefused(f"v{target} is already the champion of {settings.model_name}: nothing to roll back")
    decision = chosen.tags.get("gate_decision", "")
    if decision == "refused" and not forced:
        raise RollbackRefused(f"v{target} was refused by the gate ({chosen.tags.get('gate_reason', 'no reason kept')}); "
                              "roll back to it only with force=true")
    plan = {"model_name": settings.model_name, "from_version": str(champion.version), "version": str(target),
            "reason": reason, "forced": forced, "gate_decision": decision or "unknown",
            "requested_at": requested_at or datetime.now(UTC).isoformat(timespec="seconds"),
            "run_id": chosen.run_id}
    log.info("rollback of %s: v%s -> v%s%s; why: %s", settings.model_name, champion.version, target,
             " (forced past the gate)" if forced and decision == "refused" else "", reason)
    return plan


def rollback_bento(plan: dict) -> dict:
    """The target version's bento: reused if it was built before, built now otherwise."""
    from stockops.serving import build_bento

    return {**plan, "bento": build_bento(get_settings(), plan["model_name"], plan["version"])}


def deploy_rollback(planned: dict, dag_run_id: str = "") -> dict:
    """The same health-checked switch as a promotion; a failure leaves the current champion serving."""
    from stockops.serving import deploy

    settings = get_settings()
    bento = planned["bento"]
    record = deploy(settings, bento["bento_tag"], planned["version"], reason=f"rollback: {planned['reason']}",
                    dag_run_id=dag_run_id, window=bento["window"], kind="rollback",
                    snapshot_hash=bento["snapshot_hash"])
    return {**planned, "deploy": record}


def complete_rollback(deployed: dict, dag_run_id: str = "") -> dict:
    """Move ``champion`` to the rolled-back version and record the change."""
    settings = get_settings()
    registry.setup(settings)
    registry.set_alias(settings, registry.CHAMPION, deployed["version"])
    entry = record_change(settings, "rollback", from_version=deployed["from_version"],
                          to_version=deployed["version"], reason=deployed["reason"], dag_run_id=dag_run_id,
                          forced=deployed["forced"], requested_at=deployed["requested_at"],
                          bento_tag=deployed["bento"]["bento_tag"], gate_decision=deployed["gate_decision"])
    log.info("champion: %s v%s -> v%s (rollback); %s answers with v%s", settings.model_name,
             deployed["from_version"], deployed["version"], settings.serve_url, deployed["version"])
    return entry


def rollback(version: Any = "", reason: str = "", force: bool = False, dag_run_id: str = "") -> dict:
    """The whole rollback without Airflow (tests, bench)."""
    planned = rollback_bento(plan_rollback(version, reason, force))
    return complete_rollback(deploy_rollback(planned, dag_run_id), dag_run_id)
