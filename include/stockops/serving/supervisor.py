"""The serving supervisor: it heals the proxy and the bento, keeps serving on ``@champion``, and shouts.

Every ``settings.supervise_interval_s`` (0.5 s) it checks:

* the **proxy** — its process alive and answering at the stable address; else it starts a new
  one on the same port (about a second);
* the **bento** behind it — its process alive and ``/readyz`` answering (two misses in a row: a
  hung bento is treated as a dead one); else it fails over to a **spare** (another process of
  the same bento, kept ready: ``settings.serve_spares``; the proxy already retries a failed
  request there, so a killed bento costs no request), or, without one, starts the same bento on
  a new port, checks it with the smoke forecast and switches (a ``heal`` deploy, recorded like
  any other);
* the spares — a dead one is dropped, a missing one started in the background (a cold bento
  start takes 15-50 s on two cores: too slow to wait for when a process dies);
* the records — one that cannot be read is set aside for evidence (``<name>.corrupt-<time>``) and
  rebuilt from what runs: ``proxy.json`` from the proxy found listening on the port,
  ``standby.json`` from the running bento of another version, ``processes.json`` from the
  records that name processes, ``current.json`` by reconcile's adoption of what the proxy routes to; its own
  ``supervisor.json`` is its heartbeat, rewritten every round;
* every few seconds, in **a thread of its own**, :func:`stockops.serving.deploy.reconcile` (serving
  and the audit log follow ``@champion``) and the orphan sweep (owned processes no state file names
  are stopped) — both only while no deploy holds the lock. A hung MLflow delays only that thread:
  healing goes on every second.

**Who watches the supervisor**: its heartbeat (``heartbeat_at`` in ``supervisor.json``, every
round; ``busy_until`` while it restarts a bento). ``make run``'s launcher checks it every second
and ``stock_monitor``'s health step on each run (:func:`stockops.serving.runtime.watch_supervisor`):
a dead supervisor, or one whose heartbeat is older than ``STOCKOPS_SUPERVISOR_STALE_S`` (10 s;
hung, SIGSTOPped), is stopped and replaced, and the outage is an incident. Under compose the
container's restart policy and its health check on the same heartbeat do it. One supervisor per
home: it holds ``serving/.supervisor.lock`` for its life, and a second one exits at once.

Each outage becomes an **incident** in ``serving/incidents.jsonl``: component, cause, when it was
last seen healthy (``started_at``), ``detected_at``, ``recovered_at`` — the DORA report counts them.
An outage it cannot heal in ``MAX_ATTEMPTS`` tries is recorded ``unrecovered`` and keeps being
retried; ``stockops.serving.checks.verify`` (the last step of every deploy) turns the task red.

Local mode runs it as its own process (``python -m stockops.serving supervise``, started with the
proxy); the serving agent (compose) calls :meth:`Supervisor.tick` in its own loop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

from stockops.core import audit
from stockops.core.settings import Settings
from stockops.serving import runtime, state

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
RECONCILE_EVERY_S = 3.0
BUSY_S = 30.0  # the longest a heal's step may keep it from beating (a smoke request on a loaded machine)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")


class Supervisor:
    def __init__(self, settings: Settings):
        self.settings = replace(settings, serving_mode="local")
        self.last_ok: dict[str, float] = {}
        self.open: dict[str, dict] = {}
        self.misses = 0
        self.next_reconcile = 0.0
        self.reconcile_error = ""
        self.starting: set[int] = set()  # spares being started (not orphans)
        self.spare_thread: threading.Thread | None = None
        self.reconcile_thread: threading.Thread | None = None
        self.started_at = state.now()

    # ---- one round -----------------------------------------------------------------------------
    def tick(self) -> None:
        self.repair()  # first: an unreadable heartbeat record is kept for evidence before the beat replaces it
        self.beat()
        self._check("proxy", self._proxy_fault, self._heal_proxy)
        self._check("bento", self._bento_fault, self._heal_bento)
        self._keep_spares()
        busy = self.reconcile_thread is not None and self.reconcile_thread.is_alive()
        if time.monotonic() >= self.next_reconcile and not busy:
            self.next_reconcile = time.monotonic() + RECONCILE_EVERY_S
            self.reconcile_thread = threading.Thread(target=self._reconcile, daemon=True, name="reconcile")
            self.reconcile_thread.start()

    def beat(self, busy_for: float = 0.0) -> None:
        """The heartbeat its watcher reads (``busy_for``: seconds it may not beat, restarting a bento)."""
        now = time.time()
        state.write(state.supervisor_record_path(self.settings), {
            "pid": os.getpid(), "create_time": state._create_time(os.getpid()), "started_at": self.started_at,
            "heartbeat_at": now, "busy_until": now + busy_for, **state.home_fields(self.settings)}, durable=False)

    # ---- unreadable records ------------------------------------------------------------------------
    def repair(self) -> None:
        """Set every unreadable record aside and rebuild it from what runs (never stop a server for one)."""
        for path in state.unreadable(self.settings):
            kept = state.set_aside(path)
            log.error("%s was unreadable: set aside as %s; rebuilding it from the running processes", path, kept)
            audit.record(self.settings.incident_log, "record_repaired", file=str(path), kept_as=str(kept))
            if path == self.settings.serving_standby:
                self._rebuild_standby()
            elif path == self.settings.serving_processes:
                self._rebuild_processes()
        if not runtime.proxy_record(self.settings) and state.current_or_empty(self.settings).get("upstream"):
            found = runtime.proxy_on_port(self.settings)
            if found:  # the proxy runs, its record was lost: name it again (else _proxy_fault restarts it)
                state.write(state.proxy_record_path(self.settings), found)
                log.warning("rebuilt %s from the proxy listening on %s (pid %d)",
                            state.proxy_record_path(self.settings), self.settings.serve_url, found["pid"])

    def _rebuild_standby(self) -> None:
        served = state.current_or_empty(self.settings)
        named = {served.get("pid"), *(s.get("pid") for s in served.get("spares", []))}
        candidates = [r for r in state.owned(self.settings) if r.get("role") == "bento" and r["pid"] not in named
                      and r.get("bento_tag") != served.get("bento_tag") and state.pid_matches(r)
                      and runtime.bento_ready(f"http://127.0.0.1:{r['port']}")]
        if candidates:
            r = candidates[-1]
            version = str(r["bento_tag"].split(":", 1)[1].split("-", 1)[0].removeprefix("v"))
            state.write(self.settings.serving_standby, {
                "upstream": f"http://127.0.0.1:{r['port']}", "port": r["port"], "pid": r["pid"],
                "create_time": r.get("create_time"), "bento_tag": r["bento_tag"], "version": version,
                "standby_since": state.now(), "rebuilt": True, **state.home_fields(self.settings)})
            log.warning("rebuilt the warm standby: %s v%s (pid %d)", r["bento_tag"], version, r["pid"])

    def _rebuild_processes(self) -> None:
        import psutil

        from stockops.core.processes import PROCESS_TOKEN

        served = state.current_or_empty(self.settings)
        named = [({**served, "role": "bento"}, served), *(({**s, "role": "bento"}, served)
                                                          for s in served.get("spares", [])),
                 ({**state.standby(self.settings), "role": "bento"}, state.standby(self.settings)),
                 ({**runtime.proxy_record(self.settings), "role": "proxy"}, {}),
                 ({"pid": os.getpid(), "create_time": state._create_time(os.getpid()), "role": "supervisor"}, {})]
        records = []
        for record, parent in named:
            if not record.get("pid") or not state.pid_matches(record):
                continue
            try:
                token = psutil.Process(int(record["pid"])).environ().get(PROCESS_TOKEN)
            except psutil.Error:
                token = None
            records.append({"pid": record["pid"], "create_time": record.get("create_time"), "role": record["role"],
                            "started_at": state.now(), "token": token, "port": record.get("port"),
                            "bento_tag": parent.get("bento_tag") or record.get("bento_tag"),
                            "rebuilt": True, **state.home_fields(self.settings)})
        state.write(self.settings.serving_processes, {"processes": records})

    def _check(self, component: str, fault, heal) -> None:
        cause = fault()
        if cause is None:
            if component in self.open:
                self._close(component, recovered=True)
            self.last_ok[component] = time.time()
            return
        incident = self.open.get(component)
        if incident is None:
            incident = self.open[component] = {
                "component": component, "cause": cause, "attempts": 0, "detected_at": _iso(time.time()),
                "started_at": _iso(self.last_ok.get(component, time.time()))}
            log.error("serving incident: %s (%s) — healing", cause, component)
            audit.record(self.settings.incident_log, "incident", status="open", **incident)
        incident["attempts"] += 1
        try:
            action = heal()
        except Exception as exc:  # noqa: BLE001 - record it and try again next round
            incident["last_error"] = str(exc)[:1000]
            log.error("healing %s failed (attempt %d): %s", component, incident["attempts"], exc)
            if incident["attempts"] == MAX_ATTEMPTS:
                audit.record(self.settings.incident_log, "incident", status="unrecovered", **incident)
            return
        if action:
            incident["action"] = action
            if fault() is None:
                self._close(component, recovered=True)
                self.last_ok[component] = time.time()

    def _close(self, component: str, recovered: bool) -> None:
        incident = self.open.pop(component)
        ended = time.time()
        started = datetime.fromisoformat(incident["started_at"]).timestamp()
        detected = datetime.fromisoformat(incident["detected_at"]).timestamp()
        audit.record(self.settings.incident_log, "incident", status="recovered" if recovered else "closed",
                     recovered_at=_iso(ended), downtime_s=round(ended - started, 2),
                     detection_s=round(detected - started, 2), **incident)
        log.info("serving incident over: %s recovered after %.1f s (%s)", component, ended - started,
                 incident.get("action", ""))

    # ---- the proxy -------------------------------------------------------------------------------
    def _proxy_fault(self) -> str | None:
        record = runtime.proxy_record(self.settings)
        if not record:
            return None  # never started (nothing deployed yet) or stopped on purpose
        if not state.pid_matches(record):
            return f"the proxy (pid {record.get('pid')}) is gone"
        if not runtime.proxy_answers(self.settings.serve_url, timeout=2):
            return f"the proxy (pid {record['pid']}) does not answer at {self.settings.serve_url}"
        return None

    def _heal_proxy(self) -> str:
        record = runtime.ensure_proxy(self.settings)
        return f"restarted the proxy (pid {record['pid']})"

    # ---- the bento --------------------------------------------------------------------------------
    def _bento_fault(self) -> str | None:
        served = state.current_or_empty(self.settings)
        if not served.get("upstream"):
            return None  # nothing deployed, or the state is unreadable: reconcile's job
        if not state.pid_matches(served):
            self.misses = 0
            return f"the bento {served.get('bento_tag')} (pid {served.get('pid')}) is gone"
        if runtime.bento_ready(served["upstream"], timeout=2):
            self.misses = 0
            return None
        self.misses += 1
        if self.misses < 2:
            return None
        return f"the bento {served.get('bento_tag')} (pid {served['pid']}) does not answer /readyz"

    def _heal_bento(self) -> str | None:
        from stockops.serving.change import Change
        from stockops.serving.deploy import LocalDeployer

        served = state.current_or_empty(self.settings)
        with state.try_deploy_lock(self.settings) as free:
            if not free:
                return None  # a deploy is replacing it right now
            if served != state.current_or_empty(self.settings):
                return "changed by a deploy meanwhile"
            spares = [s for s in served.get("spares", []) if state.pid_matches(s) and runtime.bento_ready(s["upstream"])]
            if spares:
                return self._fail_over(served, spares)
            self.beat(busy_for=BUSY_S)  # a cold start beats while it waits for the bento, not between its steps
            record = LocalDeployer(self.settings, beat=lambda: self.beat(busy_for=BUSY_S))._apply(Change(
                kind="heal", version=str(served["version"]), bento_tag=served["bento_tag"], window=served.get("window"),
                reason=f"supervisor: {self.open.get('bento', {}).get('cause', 'bento down')}"))
        return f"restarted {served['bento_tag']} (deploy in {record.seconds} s)"

    def _fail_over(self, served: dict, spares: list[dict]) -> str:
        """The first ready spare becomes the primary (call with the deploy lock held)."""
        from stockops.serving.deploy import LocalDeployer, _stop

        spare = spares[0]
        LocalDeployer(self.settings)._switch({**served, **{k: spare[k] for k in ("upstream", "port", "pid")},
                                              "create_time": spare.get("create_time"), "spares": spares[1:],
                                              "since": state.now(), "reason": "failover to a spare"})
        _stop(self.settings, [served])  # the dead primary's leftover workers, found by its session
        return f"failed over to the spare {served['bento_tag']} pid {spare['pid']}"

    # ---- spares ----------------------------------------------------------------------------------
    def _keep_spares(self) -> None:
        """Drop dead spares; start a missing one in the background."""
        served = state.current_or_empty(self.settings)
        if not served.get("pid") or not state.pid_matches(served):
            return
        alive = [s for s in served.get("spares", []) if state.pid_matches(s)]
        if len(alive) != len(served.get("spares", [])):
            with state.try_deploy_lock(self.settings) as free:
                if free and state.current_or_empty(self.settings) == served:
                    state.write(self.settings.serving_state, {**served, "spares": alive})
        busy = self.spare_thread is not None and self.spare_thread.is_alive()
        if len(alive) < self.settings.serve_spares and not busy:
            self.spare_thread = threading.Thread(target=self._start_spare, args=(served,), daemon=True,
                                                 name="start-spare")
            self.spare_thread.start()

    def _start_spare(self, served: dict) -> None:
        from stockops.core.processes import free_port, wait_until

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = runtime.start_bento(self.settings, served["bento_tag"], port)
        self.starting.add(proc.pid)
        try:
            wait_until(lambda: runtime.bento_ready(url), timeout=self.settings.serve_ready_timeout_s, interval=0.5,
                       what=f"spare {served['bento_tag']} at {url}", proc=proc)
            with state.deploy_lock(self.settings):
                now_served = state.current_or_empty(self.settings)
                if now_served.get("bento_tag") != served["bento_tag"] or not state.pid_matches(now_served):
                    raise RuntimeError("the served bento changed while the spare started")
                record = next(r for r in state.owned(self.settings) if r["pid"] == proc.pid)
                spare = {"upstream": url, "port": port, "pid": proc.pid, "create_time": record["create_time"]}
                state.write(self.settings.serving_state,
                            {**now_served, "spares": [*now_served.get("spares", []), spare]})
            log.info("spare %s ready at %s (pid %d)", served["bento_tag"], url, proc.pid)
        except Exception as exc:  # noqa: BLE001 - retried on a later round
            log.warning("spare of %s not added: %s", served["bento_tag"], exc)
            runtime.stop_owned(self.settings, {proc.pid}, grace=5)
        finally:
            self.starting.discard(proc.pid)

    # ---- the records -------------------------------------------------------------------------------
    def _reconcile(self) -> None:
        from stockops.serving.deploy import reconcile

        try:
            found = reconcile(self.settings, wait=False)
            with state.try_deploy_lock(self.settings) as free:
                if free:
                    runtime.stop_orphans(self.settings, frozenset(self.starting))
        except Exception as exc:  # noqa: BLE001 - e.g. MLflow unreachable: the desired state is unknown
            if str(exc) != self.reconcile_error:
                log.error("reconcile failed (will retry every %.0f s): %s", RECONCILE_EVERY_S, exc)
            self.reconcile_error = str(exc)
            return
        self.reconcile_error = ""
        if found.get("actions"):
            log.warning("reconciled: %s", found)


def incidents(settings: Settings) -> list[dict]:
    """Every incident record (open, recovered, unrecovered), oldest first."""
    return [e for e in audit.read(settings.incident_log) if e.get("event") == "incident"]


def run(settings: Settings) -> None:
    """The supervisor process: tick until SIGTERM. One per home: a second one (its lock taken) exits at once."""
    lock = state.supervisor_lock(settings)
    if lock is None:
        log.warning("another serving supervisor (%s) runs for %s: this one (pid %d) exits",
                    state.supervisor_lock_holder(settings), settings.home, os.getpid())
        return
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    supervisor = Supervisor(settings)
    log.info("serving supervisor for %s (every %.1f s)", settings.serve_url, settings.supervise_interval_s)
    while not stopping:
        started = time.monotonic()
        try:
            supervisor.tick()
        except Exception:  # noqa: BLE001 - a supervisor that dies heals nothing
            log.exception("supervisor round failed")
        time.sleep(max(0.05, settings.supervise_interval_s - (time.monotonic() - started)))
