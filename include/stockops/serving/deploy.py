"""Changing what is served: one critical section from the switch to the champion alias and the audit log.

Three records say which model serves: the stable address's upstream (``current.json``), the
registry's ``@champion`` alias, and the last champion change in the audit log. They must agree.
A change of champion (a promotion or a rollback, :class:`~stockops.serving.change.Change`) therefore happens in one
critical section under the deploy lock (``state.deploy_lock``), in this order:

1. the smoke request is built (the latest snapshot) — a corrupt snapshot stops here, nothing touched;
2. the bento starts (or the warm standby is reused), must pass ``/readyz`` and the smoke forecast;
3. the stable address switches to it (``current.json``; the proxy follows within 0.1 s);
4. ``@champion`` moves — if MLflow refuses (down, read-only), the address switches back, the
   deploy is recorded as failed and :class:`~stockops.serving.change.DeployError` names what still serves;
5. the change is appended to the audit log (and tagged on the model versions).

Every attempt is in the deploy log before it touches anything and ends with its outcome; the
record of one whose process died is completed by :func:`reconcile` (see :mod:`~stockops.serving.records`).

A rollback names the champion it was planned against (``Change.expect_champion``); inside the
lock the plan is checked again: if its target already is the champion (a second request for
"the previous champion"), nothing is done (outcome ``unchanged``); if another change moved the
champion meanwhile, the rollback goes ahead from the champion it finds, and its record and audit
entry say so (``replanned_from``).

A process killed between 3 and 5 leaves the records apart; the **desired state is the
``@champion`` alias** (the registry is what every reader — the gate, the monitor, the rollback —
trusts), and :func:`reconcile` makes the others follow it: serving switches back to the
champion, a missing audit entry is written as a ``reconciliation``. The supervisor runs it every
few seconds and every deploy runs it first, so a split lasts seconds. Why not the other way
round (the alias follows what serves): a bento that started serving is not yet a decision — the
gate's or the operator's decision is recorded only when the alias moves.

With several serving hosts (:mod:`~stockops.serving.fleet`), each host carries out the same request in turn: the
deploy lock of a change of champion (and of reconcile) is then first the records' database's (``serving/deploy``,
shared by every host), the first host moves ``@champion`` and writes the audit entry, and each other host finds its
outcome inside the lock and only switches to the version (kind ``follow``, :meth:`LocalDeployer._follow`).

Where deploys happen is chosen in one place, ``stockops.serving.steps.deployer``:
:class:`LocalDeployer` on this machine, or ``stockops.serving.agent.AgentDeployer`` (compose:
the ``serving`` container).

Around it: :mod:`~stockops.serving.change` (what a deploy is asked to do),
:mod:`~stockops.serving.records` (the deploy log and the audit log's champion changes) and
:mod:`~stockops.serving.checks` (the smoke check of a bento, and :func:`~stockops.serving.checks.verify`).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import replace

from stockops import registry
from stockops.contracts import DeployRecord
from stockops.core import audit
from stockops.core.processes import free_port, http_json, wait_until
from stockops.core.settings import Settings
from stockops.registry.online_states import seed_online_state
from stockops.serving import fleet, runtime, state
from stockops.serving.change import Change, DeployError
from stockops.serving.checks import _routed_to, check_bento, history_rows, smoke_body, synthetic_smoke_body
from stockops.serving.records import (
    _reconcile_records,
    _record_attempt,
    _record_deploy,
    _version,
    complete_interrupted,
    deploys,
)
from stockops.serving.runtime import checkpoint

log = logging.getLogger(__name__)


# ---- the local deployer: the critical section -------------------------------------------------------
class LocalDeployer:
    def __init__(self, settings: Settings, beat=None):
        self.settings = replace(settings, serving_mode="local")
        self.beat = beat  # called while it waits for a bento (the supervisor's heartbeat: a cold start is no hang)

    def apply(self, change: Change) -> DeployRecord:
        with state.deploy_lock(self.settings, what=f"{change.kind} of v{change.version} (pid {os.getpid()})",
                               shared=change.kind != "heal"):
            runtime.ensure_running(self.settings)
            if change.kind not in ("heal", "reconcile"):
                _reconcile_records(self.settings)
                complete_interrupted(self.settings)
            followed = self._follow(change)
            if isinstance(followed, DeployRecord):
                return followed
            change = followed
            if change.expect_champion:
                replanned = self._replan(change)
                if isinstance(replanned, DeployRecord):
                    return replanned
                change = replanned
            return self._apply(change)

    def _replan(self, change: Change) -> Change | DeployRecord:
        """Check a planned change against the champion now (inside the lock): done already, or re-made."""
        registry.setup(self.settings)
        now = registry.champion_version(self.settings)
        champion = str(now.version) if now else ""
        served = state.current_or_empty(self.settings)
        if champion == change.version and served.get("version") == change.version and state.pid_matches(served):
            log.warning("v%s is already the champion and serves (planned from v%s; an earlier request did it): "
                        "nothing to do", change.version, change.expect_champion)
            return self._unchanged(change, served, champion, f"v{change.version} was already the champion: an "
                                   "earlier request carried this one out", planned_from=change.expect_champion)
        if champion != change.expect_champion:
            log.warning("the %s was planned from v%s, but the champion is now v%s (changed while it waited): "
                        "it goes ahead from v%s", change.kind, change.expect_champion, champion, champion)
            return replace(change, audit_fields={**change.audit_fields, "replanned_from": change.expect_champion})
        return change

    def _unchanged(self, change: Change, served: dict, champion: str, note: str, **details) -> DeployRecord:
        """Record (and return) a change that needed nothing done: ``note`` says why."""
        record = DeployRecord(
            at=state.now(), kind=change.kind, outcome="unchanged", version=change.version, bento_tag=change.bento_tag,
            previous_version=_version(served.get("version")), seconds=0.0, champion_before=champion, note=note)
        return _record_deploy(self.settings, record, reason=change.reason, dag_run_id=change.dag_run_id,
                              previous_bento_tag=served.get("bento_tag"), started_at=record.at, **details,
                              **({"request_id": change.request_id} if change.request_id else {}))

    def _follow(self, change: Change) -> Change | DeployRecord:
        """A request another serving host carried out already (several hosts behind a front proxy): this host only
        serves the version it made champion (kind ``follow``: ``@champion`` and the audit log are not touched
        again), nothing if it serves it already, and nothing either if a later change moved ``@champion`` since."""
        if not change.request_id or not change.moves_champion:
            return change
        me = self.settings.serving_host
        done = [r for r in deploys(self.settings) if r.get("request_id") == change.request_id
                and r.get("host", me) != me and r.get("outcome") in ("succeeded", "unchanged")]
        if not done:
            return change
        registry.setup(self.settings)
        now = registry.champion_version(self.settings)
        champion, version, elsewhere = str(now.version) if now else "", change.version, done[-1]["host"]
        served = state.current_or_empty(self.settings)
        if champion != version:
            return self._unchanged(change, served, champion, f"{elsewhere} carried out this {change.kind} of "
                                   f"v{version}, and a later change made v{champion} the champion: this host "
                                   "follows that one", followed=elsewhere)
        if served.get("version") == version and state.pid_matches(served):
            return self._unchanged(change, served, champion, f"{elsewhere} carried out this {change.kind}; this "
                                   f"host serves v{version} already", followed=elsewhere)
        log.info("%s carried out %s of v%s (request %s): this host follows", elsewhere, change.kind, version,
                 change.request_id)
        return replace(change, kind="follow", expect_champion="",
                       reason=f"follows the {change.kind} of v{version} carried out on {elsewhere}: {change.reason}")

    def _apply(self, change: Change) -> DeployRecord:
        """The critical section's work (call with the deploy lock held); every attempt ends with its record."""
        settings = self.settings
        started, started_at = time.monotonic(), state.now()
        previous, warm = state.current_or_empty(settings), state.standby(settings)
        base = {"kind": change.kind, "snapshot_hash": change.snapshot_hash, "reason": change.reason,
                "dag_run_id": change.dag_run_id, "bento_tag": change.bento_tag, "version": change.version,
                "previous_version": previous.get("version"), "previous_bento_tag": previous.get("bento_tag"),
                "started_at": started_at, "attempt": uuid.uuid4().hex, "host": settings.serving_host,
                **({"request_id": change.request_id} if change.request_id else {}),
                **({"replanned_from": change.audit_fields["replanned_from"]}
                   if "replanned_from" in change.audit_fields else {})}
        # the attempt, recorded before anything is touched: a kill at any later step leaves it in the log
        audit.record(settings.deploy_log, "deploy_started", ticker=settings.ticker, pid=os.getpid(),
                     create_time=state._create_time(os.getpid()), **base)

        def failed(error: str) -> DeployError:
            base["recorded"] = True
            _record_attempt(settings, {**{k: v for k, v in base.items() if k != "recorded"}, "outcome": "failed",
                                       "error": error, "seconds": round(time.monotonic() - started, 2)})
            where = (f"v{previous.get('version')} ({previous.get('bento_tag')}) keeps serving at {settings.serve_url}"
                     if previous else f"nothing was serving at {settings.serve_url} and nothing is now")
            return DeployError(f"deploy of {change.bento_tag} v{change.version} {error}. {where}")

        try:
            return self._attempt(change, base, started, previous, warm, failed)
        except DeployError:
            raise
        except BaseException as exc:  # an error no step expected: the attempt is still recorded, as failed
            if not base.get("recorded"):
                failed(f"stopped by an unexpected error: {type(exc).__name__}: {exc}")
            raise

    def _attempt(self, change: Change, base: dict, started: float, previous: dict, warm: dict,
                 failed) -> DeployRecord:
        settings = self.settings
        heal = change.kind == "heal"
        if heal:  # nothing serves: the bento starts first, its smoke request is read while it boots
            proc, pid, url, port = self._start(change, warm, base)
        try:
            body = smoke_body(settings, history_rows(change.window))
        except Exception as exc:  # a corrupt snapshot: refuse a new decision before any process is touched
            if change.moves_champion:
                raise failed(f"refused: no smoke request could be built from the latest snapshot ({exc})") from exc
            # healing (or serving) the champion, a version already decided: checked on a synthetic series instead
            log.warning("no smoke request from the latest snapshot (%s): checking %s on a synthetic series", exc,
                        change.bento_tag)
            body = synthetic_smoke_body(history_rows(change.window))
        if not heal:
            proc, pid, url, port = self._start(change, warm, base)
        checkpoint("started")
        try:
            wait_until(lambda: self._beat() or runtime.bento_ready(url, timeout=1),
                       timeout=settings.serve_ready_timeout_s, interval=0.1, what=f"{change.bento_tag} /readyz at {url}",
                       proc=proc)
            smoke = check_bento(url, body, change.version)
        except Exception as exc:
            _stop(settings, [{"pid": pid}])
            if warm.get("pid") == pid:
                settings.serving_standby.unlink(missing_ok=True)
            raise failed(f"failed its health check: {exc}") from exc
        checkpoint("checked")
        if not heal:  # named before the switch: a kill right after it leaves no running bento unnamed
            _name_standby(settings, previous, pid)
        self._switch({"upstream": url, "port": port, "pid": pid, "bento_tag": change.bento_tag,
                      "version": change.version, "since": state.now(), "reason": change.reason,
                      "window": change.window, "create_time": _create_time_of(settings, pid),
                      "spares": previous.get("spares", []) if heal else []})
        checkpoint("switched")
        entry = None
        champion_before = None
        if change.moves_champion:
            try:
                entry = move_champion(settings, change)
                champion_before = entry.get("from_version")
            except Exception as exc:  # noqa: BLE001 - MLflow down or read-only: go back, say so
                self._switch_back(previous, warm, pid)
                raise failed(f"passed its checks, but @champion could not be moved ({exc}); the stable address "
                             "was switched back") from exc
        switched = time.monotonic()
        if heal:  # the dead one's leftovers go; the warm standby stays as it was
            _stop(settings, [previous] if previous.get("pid") != pid else [])
        else:  # the standby before, and the replaced bento's spares, took no traffic now: stopped
            _stop(settings, [r for r in (warm, *previous.get("spares", [])) if r.get("pid") not in (None, pid)
                             and r.get("pid") != previous.get("pid")])
        record = _record_deploy(settings, DeployRecord(
            at=state.now(), kind=change.kind, outcome="succeeded", version=change.version, bento_tag=change.bento_tag,
            previous_version=_version(previous.get("version")), seconds=round(time.monotonic() - started, 2),
            audit_at=entry["at"] if entry else None, champion_before=_version(champion_before)),
            **base, url=settings.serve_url, switched_after_s=round(switched - started, 2),
            smoke_forecast=smoke["forecast"])
        log.info("%s v%s now answers at %s (%s, %.1f s; previous: %s)", change.bento_tag, change.version,
                 settings.serve_url, change.kind, record.seconds, previous.get("bento_tag") or "none")
        return record

    def _beat(self) -> bool:
        """Beat (if asked to); never ready by itself."""
        if self.beat is not None:
            self.beat()
        return False

    def _start(self, change: Change, warm: dict, base: dict):
        if warm.get("bento_tag") == change.bento_tag:  # going back to the previous bento: it still runs
            base["warm_standby"] = True
            log.info("%s is the warm standby (pid %d): checking it and switching back, no start-up",
                     change.bento_tag, warm["pid"])
            return None, int(warm["pid"]), warm["upstream"], int(warm["port"])
        port = free_port()
        proc = runtime.start_bento(self.settings, change.bento_tag, port)
        return proc, proc.pid, f"http://127.0.0.1:{port}", port

    def _switch(self, upstream: dict) -> None:
        settings = self.settings
        upstream = {**upstream, **state.home_fields(settings)}
        state.write(settings.serving_state, upstream)
        wait_until(lambda: _routed_to(settings) == upstream["upstream"], timeout=10, interval=0.05,
                   what="proxy switch")
        fleet.after_switch()

    def _switch_back(self, previous: dict, warm: dict, new_pid: int) -> None:
        settings = self.settings
        if previous and state.pid_matches(previous):
            self._switch(previous)
        else:
            settings.serving_state.unlink(missing_ok=True)
        if warm and warm.get("pid") != new_pid:
            state.write(settings.serving_standby, warm)
        else:
            settings.serving_standby.unlink(missing_ok=True)
        _stop(settings, [{"pid": new_pid}])


def _create_time_of(settings: Settings, pid: int) -> float | None:
    return next((p.get("create_time") for p in state.owned(settings) if p.get("pid") == pid), None)


def _name_standby(settings: Settings, previous: dict, serving_pid: int) -> None:
    """The bento about to be replaced becomes the warm standby (a rollback to it is then a switch, seconds).
    So at most two bentos of different versions run (plus the served one's spare)."""
    if previous.get("pid") not in (None, serving_pid) and state.pid_matches(previous):
        state.write(settings.serving_standby, {**{k: v for k, v in previous.items() if k != "spares"},
                                               "standby_since": state.now()})
    else:
        settings.serving_standby.unlink(missing_ok=True)


def _stop(settings: Settings, records: list[dict]) -> None:
    runtime.stop_owned(settings, {int(r["pid"]) for r in records if r.get("pid")})


# ---- the champion alias and its audit entry ---------------------------------------------------------
def move_champion(settings: Settings, change: Change) -> dict:
    """Move ``@champion`` to ``change.version`` and append the change to the audit log."""
    from stockops.registry.changes import record_change

    registry.setup(settings)
    before = registry.champion_version(settings)
    registry.set_alias(settings, registry.CHAMPION, change.version)
    checkpoint("aliased")
    fleet.note_champion(settings, change.version)  # what a front proxy routes to (a kill here: reconcile sets it)
    seed_online_state(settings, str(change.version))
    return record_change(settings, change.kind, from_version=before.version if before else None,
                         to_version=change.version, reason=change.reason, dag_run_id=change.dag_run_id,
                         bento_tag=change.bento_tag, snapshot_hash=change.snapshot_hash, **change.audit_fields)



# ---- reconcile: serving and the audit log follow @champion ------------------------------------------
def reconcile(settings: Settings, *, wait: bool = True) -> dict:
    """Make serving and the audit log follow ``@champion``; what was found and done.

    ``wait=False`` (the supervisor): do nothing if a deploy holds the lock — it is mid-change; ask MLflow
    *before* taking the lock (a hung MLflow then holds up this caller only, never the lock that healing
    needs), and again inside it only if a change began meanwhile (the deploy and audit logs grew); leave a
    dead process of the right version to the healer (it fails over to a spare).
    """
    settings = replace(settings, serving_mode="local")
    if not wait:
        generation = _generation(settings)
        registry.setup(settings)
        champion = registry.champion_version(settings)
    with (state.deploy_lock(settings, what=f"reconcile (pid {os.getpid()})", shared=True) if wait
          else state.try_deploy_lock(settings, what=f"the supervisor's reconcile (pid {os.getpid()})",
                                     shared=True)) as free:
        if free is False:
            return {"skipped": "a deploy holds the lock", "actions": []}
        if wait or _generation(settings) != generation:
            registry.setup(settings)
            champion = registry.champion_version(settings)
        served = state.current_or_empty(settings)
        actions: list[str] = []
        found = {"champion": str(champion.version) if champion else None, "served": served.get("version"),
                 "actions": actions}
        if champion is None:
            return found
        fleet.note_champion(settings, champion.version)
        if _reconcile_records(settings, champion):
            actions.append("audit")
        if complete_interrupted(settings, champion):
            actions.append("deploy_log")
        right_version = served.get("version") == str(champion.version)
        if not wait and right_version and served.get("upstream"):
            return found  # a dead process of the champion's bento: the healer's (a spare takes over at once)
        if not right_version or not state.pid_matches(served):
            built = _bento_for(settings, champion.version)
            runtime.ensure_proxy(settings)
            if _adopt(settings, built, str(champion.version)):
                actions.append("adopt")
                return found
            LocalDeployer(settings)._apply(Change(
                kind="reconcile", version=str(champion.version), bento_tag=built["bento_tag"], window=built["window"],
                snapshot_hash=built["snapshot_hash"],
                reason=f"reconcile: serving v{served.get('version') or 'none'} but @champion is v{champion.version}"))
            actions.append("serve")
        return found


def _generation(settings: Settings) -> tuple:
    """The stamps of the deploy and audit logs: every change of champion appends to them (in the lock, first
    thing)."""
    return audit.stamp(settings.deploy_log), audit.stamp(settings.audit_log)


def _adopt(settings: Settings, built: dict, version: str) -> bool:
    """Serve a running bento of ``version`` again without a restart when ``current.json`` was lost or is
    corrupt: the proxy's last good state if it names it (spares included; asked again on a busy machine), else the
    oldest owned one of that bento (the first started: the one that served, its spares came after)."""
    status, routed = 0, None  # the proxy's answer: (HTTP status, its upstream record)
    for _ in range(3):
        try:
            status, routed = http_json(f"{settings.serve_url}/-/stockops/upstream", timeout=5)
        except OSError:
            continue
        break
    if status == 200 and isinstance(routed, dict) and routed.get("bento_tag") == built["bento_tag"] \
            and state.pid_matches(routed) and runtime.bento_ready(routed.get("upstream", ""), timeout=5):
        upstream = {k: v for k, v in routed.items() if not k.startswith("upstream_")}
    else:
        record = next((r for r in state.owned(settings) if r.get("role") == "bento"
                       and r.get("bento_tag") == built["bento_tag"] and state.pid_matches(r)
                       and runtime.bento_ready(f"http://127.0.0.1:{r['port']}")), None)
        if record is None:
            return False
        upstream = {"upstream": f"http://127.0.0.1:{record['port']}", "port": record["port"], "pid": record["pid"],
                    "create_time": record.get("create_time"), "bento_tag": built["bento_tag"], "spares": []}
    LocalDeployer(settings)._switch({**upstream, "version": version, "window": built["window"], "since": state.now(),
                                     "reason": "adopted by reconcile"})
    if state.standby(settings).get("pid") == upstream["pid"]:  # the standby it named now serves: no standby
        settings.serving_standby.unlink(missing_ok=True)
    log.warning("adopted running bento %s (pid %d) as the served v%s", built["bento_tag"], upstream["pid"], version)
    return True


def _bento_for(settings: Settings, version: str) -> dict:
    from stockops.serving.build import build_bento

    return build_bento(settings, settings.model_name, version)
