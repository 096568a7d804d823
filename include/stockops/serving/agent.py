"""Agent mode: the endpoint runs elsewhere (compose: the ``serving`` container), deploys are requests.

:class:`AgentDeployer` appends the :class:`~stockops.serving.change.Change` to the deploy requests log
(``settings.deploy_requests_log``, a log of the records' database: the requester and the agent share no disk) and
waits for the agent's deploy record with its request id. :func:`run_agent` is the agent: it serves ``@champion`` at
start, carries out each request that has no outcome yet with the local deployer (the same critical section: switch,
alias, audit), and runs the supervisor's round between requests, so the endpoint heals there as it does on one
machine. A request its requester gave up on is withdrawn (a record saying so): an agent started later never acts on
it.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from dataclasses import replace

from stockops.contracts import DeployRecord
from stockops.core import audit
from stockops.core.settings import Settings
from stockops.serving import runtime, state
from stockops.serving.change import Change, DeployError
from stockops.serving.deploy import LocalDeployer, reconcile
from stockops.serving.records import _record_attempt, deploys

log = logging.getLogger(__name__)


class AgentDeployer:
    def __init__(self, settings: Settings):
        self.settings = settings

    def apply(self, change: Change) -> DeployRecord:
        settings = self.settings
        change = replace(change, request_id=change.request_id or uuid.uuid4().hex)
        request = {**change.to_dict(), "requested_at": state.now()}
        audit.append(settings.deploy_requests_log, request)
        log.info("deploy of %s v%s handed to the serving agent (request %s)", change.bento_tag, change.version,
                 change.request_id)
        deadline = time.monotonic() + settings.serve_ready_timeout_s + 60
        while time.monotonic() < deadline:
            record = next((r for r in deploys(settings) if r.get("request_id") == change.request_id), None)
            if record is not None:
                if record["outcome"] not in ("succeeded", "unchanged"):
                    raise DeployError(f"the serving agent could not deploy {change.bento_tag}: {record['error']}")
                return DeployRecord.from_record(record)  # the agent's record, read back from the deploy log
            time.sleep(0.2)
        audit.append(settings.deploy_requests_log, {"request_id": change.request_id, "withdrawn": state.now()})
        raise DeployError(f"no serving agent took deploy request {change.request_id} within "
                          f"{settings.serve_ready_timeout_s + 60:.0f} s: is `python -m stockops.serving agent` (the "
                          "compose `serving` service) running against the same records' database "
                          "(STOCKOPS_STATE_DB)? Nothing was changed.")


def pending_requests(settings: Settings, taken: set[str]) -> list[dict]:
    """The requests no agent has an outcome for, not withdrawn and not ``taken`` by this agent, oldest first."""
    requests = audit.read(settings.deploy_requests_log)
    closed = taken | {r["request_id"] for r in requests if r.get("withdrawn")} | {
        r.get("request_id") for r in deploys(settings) if r.get("request_id")}
    return [r for r in requests if not r.get("withdrawn") and r.get("request_id") not in closed]


def _take(settings: Settings, request: dict, beat=None) -> None:
    """Carry out one request; its outcome goes to the deploy log under its request id."""
    try:
        change = Change.from_dict({k: v for k, v in request.items() if k != "requested_at"})
    except (ValueError, TypeError, KeyError) as exc:
        log.error("deploy request %s is unreadable (%s): dropped", request.get("request_id"), exc)
        return
    try:
        change = _with_local_bento(settings, change)
        LocalDeployer(settings, beat=beat).apply(change)
    except DeployError as exc:
        log.error("%s", exc)  # recorded by the deployer, with the request id, for the requester
    except Exception as exc:  # noqa: BLE001
        _record_attempt(settings, {**change.to_dict(), "outcome": "failed", "error": f"agent error: {exc}"})


def _with_local_bento(settings: Settings, change: Change) -> Change:
    """``change`` with a bento of its version from this host's BentoML store: the requester's own when this host
    built it (one machine), else packed here from the registry version (the model fetched from MLflow, whose
    artifacts are in the object store): a serving host shares no disk with the worker that built the bento."""
    from stockops.serving.build import build_bento, existing_bento

    if existing_bento(settings, change.bento_tag) is not None:
        return change
    built = build_bento(settings, settings.model_name, change.version)
    log.info("deploy request %s: %s is not in this host's store; v%s packed here as %s", change.request_id,
             change.bento_tag, change.version, built["bento_tag"])
    return replace(change, bento_tag=built["bento_tag"])


def run_agent(settings: Settings, interval: float = 0.25, once: bool = False) -> None:
    """The serving agent: keep the endpoint up (serving the champion at start), supervise it, carry out requests."""
    from stockops.serving.supervisor import Supervisor

    settings = replace(settings, serving_mode="local")  # the agent is where deploys happen
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    runtime.ensure_proxy(settings)
    try:
        reconcile(settings)  # serve @champion
    except Exception as exc:  # noqa: BLE001 - the agent must keep taking requests
        log.error("could not serve the champion at start: %s", exc)
    supervisor = Supervisor(settings)
    log.info("serving agent: endpoint %s, waiting for requests in %s", settings.serve_url,
             settings.deploy_requests_log)
    taken: set[str] = set()
    while not stopping:
        try:
            pending = pending_requests(settings, taken)
        except Exception as exc:  # noqa: BLE001 - the records' database away for a moment: serving goes on
            log.error("could not read the deploy requests: %s", exc)
            pending = []
        for request in pending:
            taken.add(request["request_id"])
            supervisor.beat(busy_for=settings.serve_ready_timeout_s + 120)  # a deploy: MLflow calls, a bento start
            _take(settings, request, beat=lambda: supervisor.beat(busy_for=settings.serve_ready_timeout_s + 120))
        if once:
            return
        try:
            supervisor.tick()
        except Exception:  # noqa: BLE001
            log.exception("supervisor round failed")
        time.sleep(interval)
    runtime.stop_serving(settings)
