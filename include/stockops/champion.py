"""Rollback: going back to an earlier champion in seconds (the record of changes: ``stockops.changes``).

A rollback is the ``stock_rollback`` DAG's chain, each step a plain function:
``plan_rollback`` (refuses an unknown version, the current champion while it serves, or a
version the gate refused unless forced — before anything changes) → ``rollback_bento`` (the
version's bento, built if missing) → ``deploy_rollback`` (the same critical section as a
promotion: health-checked switch, ``champion`` moved, the change recorded) → ``complete_rollback``
(checks that serving, ``champion`` and the audit log agree). Asked for the champion while
another version serves (a split), it repairs: the champion is served again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from stockops import registry
from stockops.changes import CHANGES, describe, format_history, history, previous_champion, record_change
from stockops.config import Settings, get_settings

log = logging.getLogger(__name__)

__all__ = ["CHANGES", "RollbackRefused", "complete_rollback", "deploy_rollback", "describe", "format_history", "history",
           "plan_rollback", "previous_champion", "record_change", "rollback", "rollback_bento"]

class RollbackRefused(ValueError):
    """The requested rollback is not allowed; nothing was changed."""


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
    repair = str(chosen.version) == str(champion.version)
    if repair:
        served = _served_version(settings)
        if served == str(champion.version):
            raise RollbackRefused(f"v{target} is already the champion of {settings.model_name} and serves at "
                                  f"{settings.serve_url}: nothing to roll back")
        log.warning("v%s is @champion but v%s serves: this run repairs the split (serves the champion again)",
                    target, served or "nothing")
    decision = chosen.tags.get("gate_decision", "")
    if decision == "refused" and not forced:
        raise RollbackRefused(f"v{target} was refused by the gate ({chosen.tags.get('gate_reason', 'no reason kept')}); "
                              "roll back to it only with force=true")
    plan = {"model_name": settings.model_name, "from_version": str(champion.version), "version": str(target),
            "reason": reason, "forced": forced, "gate_decision": decision or "unknown", "repair": repair,
            "requested_at": requested_at or datetime.now(UTC).isoformat(timespec="seconds"),
            "run_id": chosen.run_id}
    log.info("rollback of %s: v%s -> v%s%s; why: %s", settings.model_name, champion.version, target,
             " (forced past the gate)" if forced and decision == "refused" else "", reason)
    return plan


def rollback_bento(plan: dict) -> dict:
    """The target version's bento: reused if it was built before, built now otherwise."""
    from stockops.serving import build_bento

    return {**plan, "bento": build_bento(get_settings(), plan["model_name"], plan["version"])}


def _served_version(settings: Settings) -> str | None:
    """The version the stable address serves (None if nothing, or if its state is unreadable)."""
    from stockops.serving.state import current_or_empty

    return current_or_empty(settings).get("version")


def deploy_rollback(planned: dict, dag_run_id: str = "") -> dict:
    """The health-checked switch, ``@champion`` and the audit entry in one critical section (as a promotion);
    a failure leaves the current champion serving. A repair (the champion is right, serving is not) serves
    the champion again without a champion change."""
    from stockops.serving import deploy

    settings = get_settings()
    bento = planned["bento"]
    record = deploy(settings, bento["bento_tag"], planned["version"], reason=planned["reason"],
                    dag_run_id=dag_run_id, window=bento["window"], kind="serve" if planned.get("repair") else "rollback",
                    snapshot_hash=bento["snapshot_hash"],
                    audit_fields={"forced": planned["forced"], "requested_at": planned["requested_at"],
                                  "gate_decision": planned["gate_decision"]})
    return {**planned, "deploy": record}


def complete_rollback(deployed: dict, dag_run_id: str = "") -> dict:
    """Check the invariant: the rolled-back version serves, is ``@champion`` and the audit log's last change."""
    from stockops.serving import verify

    settings = get_settings()
    seen = verify(settings, deployed["version"])
    log.info("champion: %s v%s -> v%s (%s); %s answers with v%s", settings.model_name, deployed["from_version"],
             deployed["version"], "repair" if deployed.get("repair") else "rollback", settings.serve_url,
             deployed["version"])
    return {**seen, "version": deployed["version"], "from_version": deployed["from_version"],
            "repair": bool(deployed.get("repair")), "deploy_at": deployed["deploy"]["at"]}


def rollback(version: Any = "", reason: str = "", force: bool = False, dag_run_id: str = "") -> dict:
    """The whole rollback without Airflow (tests, bench)."""
    planned = rollback_bento(plan_rollback(version, reason, force))
    return complete_rollback(deploy_rollback(planned, dag_run_id), dag_run_id)
