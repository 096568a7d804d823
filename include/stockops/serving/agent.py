"""Agent mode: the endpoint runs elsewhere (compose: the ``serving`` container), deploys are requests.

:class:`AgentDeployer` appends the :class:`~stockops.serving.change.Change` to the deploy requests log
(``settings.deploy_requests_log``, a log of the records' database: the requester and the agents share no disk),
naming the serving hosts whose agents beat at that moment (:mod:`~stockops.serving.fleet`), and waits for each
one's deploy record with its request id. :func:`run_agent` is the agent of one serving host: it serves
``@champion`` at start, beats, carries out each request that names it and has no outcome of its own yet with the
local deployer (the same critical section: switch, alias, audit, under the records' database lock that every
serving host takes), and runs the supervisor's round between requests, so the endpoint heals there as it does on
one machine.

With several serving hosts, the first to take a request moves ``@champion``; the others find its outcome inside
the lock and only switch to the version (``follow``), so one change of champion is one audit entry whichever
host made it. The requester returns once every named host has an outcome or has stopped beating (a host that
comes back reconciles to ``@champion`` by itself); it fails only if no host carried the change out. A request is
closed when its requester stops waiting, and withdrawn when it gave up: an agent started later never acts on it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from dataclasses import replace

from stockops.contracts import DeployRecord
from stockops.core import audit
from stockops.core.settings import Settings
from stockops.serving import fleet, runtime, state
from stockops.serving.change import CHAMPION_CHANGES, Change, DeployError
from stockops.serving.deploy import LocalDeployer, reconcile
from stockops.serving.records import _record_attempt, deploys

log = logging.getLogger(__name__)
DONE = ("succeeded", "unchanged")


class AgentDeployer:
    def __init__(self, settings: Settings):
        self.settings = settings

    def apply(self, change: Change) -> DeployRecord:
        settings = self.settings
        change = replace(change, request_id=change.request_id or uuid.uuid4().hex)
        hosts = fleet.live_hosts(settings)
        audit.append(settings.deploy_requests_log, {**change.to_dict(), "requested_at": state.now(), "hosts": hosts})
        log.info("deploy of %s v%s handed to the serving agent%s (request %s)", change.bento_tag, change.version,
                 f"s of {', '.join(hosts)}" if hosts else "", change.request_id)
        waited = (settings.serve_ready_timeout_s + 60) * max(1, len(hosts))  # the hosts deploy one at a time
        deadline = time.monotonic() + waited
        outcomes: dict = {}
        while time.monotonic() < deadline:
            outcomes = {r.get("host"): r for r in deploys(settings) if r.get("request_id") == change.request_id}
            waiting = [h for h in hosts if h not in outcomes]
            beating = set(fleet.live_hosts(settings)) if waiting else set()
            gone = {h: "its agent stopped beating before it finished" for h in waiting if h not in beating}
            if (outcomes and not hosts) or (hosts and len(gone) == len(waiting) and (outcomes or gone)):
                audit.append(settings.deploy_requests_log, {"request_id": change.request_id, "closed": state.now()})
                return _result(change, outcomes, gone)
            time.sleep(0.2)
        if any(r["outcome"] in DONE for r in outcomes.values()):  # carried out, but a host too slow to wait for
            audit.append(settings.deploy_requests_log, {"request_id": change.request_id, "closed": state.now()})
            return _result(change, outcomes, {h: f"no outcome within {waited:.0f} s" for h in hosts
                                              if h not in outcomes})
        audit.append(settings.deploy_requests_log, {"request_id": change.request_id, "withdrawn": state.now()})
        raise DeployError(f"no serving agent took deploy request {change.request_id} within {waited:.0f} s"
                          f"{' (named: ' + ', '.join(hosts) + ')' if hosts else ''}: is `python -m stockops.serving "
                          "agent` (the compose `serving` service) running against the same records' database "
                          "(STOCKOPS_STATE_DB)? Nothing was changed.")


def _result(change: Change, outcomes: dict, missing: dict[str, str]) -> DeployRecord:
    """The deploy's record from each host's outcome: the one that moved ``@champion`` (its note naming the other
    hosts' outcomes, and why ``missing`` hosts have none); :class:`DeployError` when no host carried it out."""
    done = {h: r for h, r in outcomes.items() if r["outcome"] in DONE}
    failed = {h: r for h, r in outcomes.items() if h not in done}
    gone = list(missing)
    problems = [f"{h or 'the serving agent'}: {r.get('error')}" for h, r in failed.items()] + [
        f"{h}: {why}" for h, why in missing.items()]
    if not done:
        if len(outcomes) == 1 and not gone:
            raise DeployError(f"the serving agent could not deploy {change.bento_tag}: "
                              f"{next(iter(outcomes.values()))['error']}")
        raise DeployError(f"no serving host deployed {change.bento_tag}: {'; '.join(problems)}")
    main = next((r for r in done.values() if r.get("kind") in CHAMPION_CHANGES and r["outcome"] == "succeeded"),
                next(iter(done.values())))
    record = DeployRecord.from_record(main)  # the agent's record, read back from the deploy log
    if len(outcomes) + len(gone) < 2:
        return record
    hosts = ", ".join(f"{h} ({r.get('kind')}, {r['outcome']})" for h, r in sorted(done.items(), key=lambda i: str(i[0])))
    note = f"{record.note + '; ' if record.note else ''}serving hosts: {hosts}"
    if problems:
        note += f"; not switched: {'; '.join(problems)} (it serves again once its supervisor reconciles it to " \
                "@champion)"
        log.warning("deploy request %s: %s", change.request_id, note)
    return replace(record, note=note)


def pending_requests(settings: Settings, taken: set[str]) -> list[dict]:
    """The requests naming this host (or no host) that it has no outcome for, neither closed nor withdrawn nor
    ``taken`` by this agent, oldest first. A request naming no host (none beat when it was made) is any agent's:
    done once any host has an outcome for it."""
    me = settings.serving_host
    requests = audit.read(settings.deploy_requests_log)
    outcomes = [r for r in deploys(settings) if r.get("request_id")]
    closed = taken | {r["request_id"] for r in requests if r.get("withdrawn") or r.get("closed")}
    mine = {r["request_id"] for r in outcomes if r.get("host", me) == me}
    anyone = {r["request_id"] for r in outcomes}
    return [r for r in requests if "kind" in r and r.get("request_id") not in closed and (
        (me in r["hosts"] and r["request_id"] not in mine) if r.get("hosts") else r["request_id"] not in anyone)]


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
    beats = _start_beating(settings)
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
    beats.set()
    try:
        fleet.leave(settings)
    except Exception as exc:  # noqa: BLE001 - the records' database away: its heartbeat goes stale in 10 s anyway
        log.warning("could not remove this host's heartbeat: %s", exc)
    runtime.stop_serving(settings)


def _start_beating(settings: Settings) -> threading.Event:
    """Beat into the fleet every ``fleet.BEAT_S`` from a thread (a deploy's long steps do not stop it), and at
    once after every switch of this host; the event stops it."""
    stop = threading.Event()
    started_at = state.now()
    fleet.register(settings, started_at)

    def loop() -> None:
        failing = ""
        while not stop.is_set():
            try:
                fleet.beat(settings, started_at)
                failing = ""
            except Exception as exc:  # noqa: BLE001 - the records' database away: the next beat tries again
                if str(exc) != failing:
                    log.warning("could not beat into the fleet's records: %s", exc)
                failing = str(exc)
            stop.wait(fleet.BEAT_S)

    threading.Thread(target=loop, daemon=True, name="fleet-beat").start()
    return stop
