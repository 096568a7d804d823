"""Rollback: going back to an earlier champion in seconds (the record of changes: ``stockops.registry.changes``).

A rollback is the ``stock_rollback`` DAG's chain, each step a plain function:
``plan_rollback`` (refuses an unknown version, the current champion while it serves, or a
version the gate refused unless forced — before anything changes) → ``rollback_bento`` (the
version's bento, built if missing) → ``deploy_rollback`` (the same critical section as a
promotion: health-checked switch, ``champion`` moved, the change recorded) → ``complete_rollback``
(checks that serving, ``champion`` and the audit log agree). Asked for the champion while
another version serves (a split), it repairs: the champion is served again.

Each step is given its ``settings`` (the DAG adapter reads them when the task runs; :func:`rollback`'s caller
passes its own): none reads the environment.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from stockops import registry
from stockops.contracts import (
    REFUSED,
    Bento,
    RollbackBuilt,
    RollbackDeployed,
    RollbackPlan,
    RollbackVerified,
)
from stockops.core.settings import Settings
from stockops.registry.changes import CHANGES, describe, format_history, history, previous_champion, record_change

log = logging.getLogger(__name__)

__all__ = ["CHANGES", "RollbackRefused", "complete_rollback", "deploy_rollback", "describe", "format_history", "history",
           "plan_rollback", "previous_champion", "record_change", "rollback", "rollback_bento"]

class RollbackRefused(ValueError):
    """The requested rollback is not allowed; nothing was changed."""


# ---- the rollback steps -------------------------------------------------------------------------
def plan_rollback(version: str | int | None = None, reason: str | None = None, force: bool = False,
                  requested_at: str = "", *, settings: Settings) -> RollbackPlan:
    """Check the request against the registry and the gate's record; refuse before anything changes.

    ``version``: empty (None, the Trigger form's field left empty) for the champion before the current one. (``reason`` defaults to None: Airflow
    reserves the name as a context key and allows no other default.)
    """
    from mlflow.exceptions import MlflowException

    registry.setup(settings)
    reason = (reason or "").strip()
    if not reason:
        raise RollbackRefused("a rollback needs a reason (the `reason` param): it goes into the audit trail")
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
    refused = decision == REFUSED  # the gate's label, as recorded on the version (a record read back, not a message)
    if refused and not force:
        raise RollbackRefused(f"v{target} was refused by the gate ({chosen.tags.get('gate_reason', 'no reason kept')}); "
                              "roll back to it only with force=true")
    plan = RollbackPlan(model_name=settings.model_name, from_version=str(champion.version), version=str(target),
                        reason=reason, forced=force, gate_decision=decision or "unknown", repair=repair,
                        requested_at=requested_at or datetime.now(UTC).isoformat(timespec="seconds"),
                        run_id=chosen.run_id)
    log.info("rollback of %s: v%s -> v%s%s; why: %s", settings.model_name, champion.version, target,
             " (forced past the gate)" if force and refused else "", reason)
    return plan


def rollback_bento(plan: RollbackPlan, *, settings: Settings) -> RollbackBuilt:
    """The target version's bento: reused if it was built before, built now otherwise."""
    from stockops.serving import build_bento

    return RollbackBuilt(plan=plan, bento=Bento.from_xcom(build_bento(settings, plan.model_name, plan.version)))


def _served_version(settings: Settings) -> str | None:
    """The version the stable address serves (None if nothing, or if its state is unreadable)."""
    from stockops.serving.state import current_or_empty

    return current_or_empty(settings).get("version")


def deploy_rollback(built: RollbackBuilt, dag_run_id: str = "", *, settings: Settings) -> RollbackDeployed:
    """The health-checked switch, ``@champion`` and the audit entry in one critical section (as a promotion);
    a failure leaves the current champion serving. A repair (the champion is right, serving is not) serves
    the champion again without a champion change."""
    from stockops.serving import deploy

    plan, bento = built.plan, built.bento
    record = deploy(settings, bento.bento_tag, plan.version, reason=plan.reason,
                    dag_run_id=dag_run_id, window=bento.window, kind="serve" if plan.repair else "rollback",
                    snapshot_hash=bento.snapshot_hash,
                    audit_fields={"forced": plan.forced, "requested_at": plan.requested_at,
                                  "gate_decision": plan.gate_decision},
                    expect_champion="" if plan.repair else plan.from_version)
    if record.outcome == "unchanged":
        log.warning("nothing rolled back: %s", record.note)
    elif not plan.repair and record.champion_before not in (None, plan.from_version):  # re-planned in the lock
        log.warning("planned as v%s -> v%s, carried out as v%s -> v%s: the champion changed while it waited",
                    plan.from_version, plan.version, record.champion_before, plan.version)
    return RollbackDeployed(built=built, deploy=record)


def complete_rollback(deployed: RollbackDeployed, dag_run_id: str = "", *, settings: Settings) -> RollbackVerified:
    """Check the invariant: the rolled-back version serves, is ``@champion`` and the audit log's last change."""
    from stockops.serving import verify

    plan, record = deployed.plan, deployed.deploy
    seen = verify(settings, plan.version)
    # what really happened, found inside the lock: the champion it replaced, or nothing (an earlier request did it)
    source = record.champion_before or (plan.version if record.outcome == "unchanged" else plan.from_version)
    what = "unchanged" if record.outcome == "unchanged" else "repair" if plan.repair else "rollback"
    log.info("champion: %s v%s -> v%s (%s); %s answers with v%s", settings.model_name, source,
             plan.version, what, settings.serve_url, plan.version)
    return RollbackVerified(version=plan.version, from_version=source, repair=plan.repair,
                            deploy_at=record.at, outcome=record.outcome, **seen)


def rollback(version: str | int | None = None, reason: str = "", force: bool = False, dag_run_id: str = "", *,
             settings: Settings) -> RollbackVerified:
    """The whole rollback without Airflow (tests, bench)."""
    planned = rollback_bento(plan_rollback(version, reason, force, settings=settings), settings=settings)
    return complete_rollback(deploy_rollback(planned, dag_run_id, settings=settings), dag_run_id, settings=settings)
