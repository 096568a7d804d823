"""The serving entry points the DAGs, the CLI and ``make run`` call — and the one choice of deployer.

:func:`deployer` picks where deploys happen (``STOCKOPS_SERVING_MODE``): the local critical
section (``stockops.serving.deploy.LocalDeployer``) or the serving agent
(``stockops.serving.agent.AgentDeployer``). Everything below goes through it.

Every function here is given its ``settings`` (the DAG adapter reads them when the task runs; other callers
pass their own): none reads the environment.
"""

from __future__ import annotations

import logging

from stockops import registry
from stockops.contracts import (
    BASELINE,
    Bento,
    Built,
    Deployed,
    DeployRecord,
    GateDecision,
    Registered,
    ServingHealth,
    Verified,
)
from stockops.core.settings import Settings
from stockops.serving import runtime, state
from stockops.serving.agent import AgentDeployer
from stockops.serving.build import build_bento
from stockops.serving.change import Change, Deployer, DeployError
from stockops.serving.checks import verify
from stockops.serving.deploy import LocalDeployer
from stockops.serving.runtime import ServingError

log = logging.getLogger(__name__)


def deployer(settings: Settings) -> Deployer:
    """The one place that chooses where deploys happen (``STOCKOPS_SERVING_MODE``)."""
    if settings.serving_mode == "agent":
        return AgentDeployer(settings)
    return LocalDeployer(settings)


def deploy(settings: Settings, bento_tag: str, version: str, *, reason: str = "", dag_run_id: str = "",
           window: int | None = None, kind: str = "promotion", snapshot_hash: str = "", request_id: str = "",
           audit_fields: dict | None = None, expect_champion: str = "") -> DeployRecord:
    """Serve ``bento_tag`` (registry ``version``) through the configured deployer (see :class:`Change`)."""
    change = Change(kind=kind, version=str(version), bento_tag=bento_tag, reason=reason, window=window,
                    snapshot_hash=snapshot_hash, dag_run_id=dag_run_id, request_id=request_id,
                    audit_fields=audit_fields or {}, expect_champion=expect_champion)
    return deployer(settings).apply(change)


def serve_champion(settings: Settings, reason: str = "serve the current champion") -> dict | None:
    """Make the stable address serve ``@champion`` (build its bento if needed); what serves now (``current.json``'s
    record), or None without a champion."""
    registry.setup(settings)
    champion = registry.champion_version(settings)
    if champion is None:
        return None
    served = state.current_or_empty(settings)
    if served.get("version") == str(champion.version) and state.pid_matches(served) \
            and runtime.proxy_answers(settings.serve_url):
        runtime.ensure_supervisor(settings)
        return served
    built = build_bento(settings, settings.model_name, champion.version)
    deploy(settings, built["bento_tag"], champion.version, reason=reason, window=built["window"], kind="serve",
           snapshot_hash=built["snapshot_hash"])
    return state.current(settings)


# ---- the stock_train steps ----------------------------------------------------------------------
def build_candidate_bento(registered: Registered, decision: GateDecision | None = None, *,
                          settings: Settings) -> Built:
    """``stock_train``'s build step, only after a decision that deploys: the promoted candidate's bento, or the
    baseline's that serves in place of a refused one (a refused candidate itself is never built)."""
    if decision is not None and not decision.deploys:
        raise ValueError(f"v{registered.version} was refused by the gate ({decision.reason}): it is not built")
    version = decision.version_to_serve(registered.version) if decision is not None else registered.version
    bento = Bento.from_xcom(build_bento(settings, registered.model_name, version))
    return Built(registered=registered, decision=decision, bento=bento)


def deploy_candidate(built: Built, reason: str | None = None, dag_run_id: str = "", *,
                     settings: Settings) -> Deployed:
    """``stock_train``'s deploy step: the health-checked switch, ``@champion`` and the audit entry in one
    critical section; a failure leaves champion and endpoint as they were.

    (``reason`` defaults to None: Airflow reserves the name as a context key and allows no other default.)
    """
    registry.setup(settings)
    bento, version, model_name = built.bento, built.version, built.registered.model_name
    baseline = built.decision.baseline if built.decision else None
    label = BASELINE if baseline else (built.decision.label if built.decision else "")
    why = reason or "gate passed"
    if baseline:
        why = f"{reason}: v{built.registered.version} refused by the gate; {baseline.reason}" if reason else \
            baseline.reason
    try:
        record = deploy(settings, bento.bento_tag, version, reason=why,
                        dag_run_id=dag_run_id, window=bento.window, kind="promotion",
                        snapshot_hash=bento.snapshot_hash,
                        audit_fields={"decision": label, "model_kind": bento.model_kind,
                                      "run_id": baseline.run_id if baseline else built.registered.run_id})
    except DeployError as exc:
        registry.tag_version(settings, version, model_name=model_name, deploy=f"failed: {str(exc)[:4000]}")
        log.error("%s; champion stays where it was", exc)
        raise
    registry.tag_version(settings, version, model_name=model_name,
                         deploy=f"succeeded {record.at} as {bento.bento_tag}", promoted_at=record.audit_at or record.at)
    return Deployed(built=built, deploy=record)


def verify_candidate(deployed: Deployed, *, settings: Settings) -> Verified:
    """``stock_train``'s last step: serving, ``@champion`` and the audit log all name the new version."""
    seen = verify(settings, deployed.version)
    log.info("v%s serves at %s, is @champion and the audit log's last change", deployed.version, settings.serve_url)
    return Verified(model_name=deployed.built.registered.model_name, version=deployed.version,
                    previous=deployed.deploy.previous_version, **seen)


def check_serving(*, settings: Settings) -> ServingHealth:
    """``stock_monitor``'s health step: red when the endpoint serves nothing it should, or an outage the
    supervisor could not heal is open; green (with a note) where this home serves nothing yet."""
    from stockops.core.processes import http_json
    from stockops.serving.supervisor import incidents

    if settings.serving_mode == "local" and not state.current_or_empty(settings) \
            and not runtime.proxy_record(settings):
        log.info("nothing is served from this home yet (no deploy): nothing to check")
        return ServingHealth(served=None)
    if settings.serving_mode == "local":  # the supervisor's second watcher (make run's launcher is the first)
        runtime.watch_supervisor(settings)
    try:
        status, health = http_json(f"{settings.serve_url}/-/stockops/health", timeout=10)
    except OSError as exc:
        status, health = 0, {"error": f"{settings.serve_url} does not answer: {exc}"}
    last: dict[tuple, dict] = {}
    for record in incidents(settings):
        last[(record.get("component"), record.get("detected_at"))] = record
    stuck = [r for r in last.values() if r.get("status") == "unrecovered"]
    if status != 200 or stuck:
        raise ServingError(f"the endpoint {settings.serve_url} is unhealthy (HTTP {status}: {health}); "
                           f"unrecovered incidents: {[r['cause'] for r in stuck] or 'none'}. "
                           f"See {settings.incident_log} and {settings.serving_logs_dir}/supervisor.log")
    log.info("the endpoint %s is healthy: %s", settings.serve_url, health)
    served = health.get("version") if isinstance(health, dict) else None
    return ServingHealth(served=None if served is None else str(served), http=status)
