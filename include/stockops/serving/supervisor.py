"""The serving supervisor: it heals the proxy and the bento, keeps serving on ``@champion``, and shouts.

Every ``settings.supervise_interval_s`` (1 s) it checks:

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
* every few seconds, :func:`stockops.serving.deploy.reconcile` (serving and the audit log follow
  ``@champion``) and the orphan sweep (owned processes no state file names are stopped) — both
  only while no deploy holds the lock.

Each outage becomes an **incident** in ``serving/incidents.jsonl``: component, cause, when it was
last seen healthy (``started_at``), ``detected_at``, ``recovered_at`` — the DORA report counts them.
An outage it cannot heal in ``MAX_ATTEMPTS`` tries is recorded ``unrecovered`` and keeps being
retried; ``stockops.serving.deploy.verify`` (the last step of every deploy) turns the task red.

Local mode runs it as its own process (``python -m stockops.serving supervise``, started with the
proxy); the serving agent (compose) calls :meth:`Supervisor.tick` in its own loop.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

from stockops import audit
from stockops.config import Settings
from stockops.serving import runtime, state

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
RECONCILE_EVERY_S = 3.0


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

    # ---- one round -----------------------------------------------------------------------------
    def tick(self) -> None:
        self._check("proxy", self._proxy_fault, self._heal_proxy)
        self._check("bento", self._bento_fault, self._heal_bento)
        self._keep_spares()
        if time.monotonic() >= self.next_reconcile:
            self.next_reconcile = time.monotonic() + RECONCILE_EVERY_S
            self._reconcile()

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
        from stockops.serving.deploy import Change, LocalDeployer

        served = state.current_or_empty(self.settings)
        with state.try_deploy_lock(self.settings) as free:
            if not free:
                return None  # a deploy is replacing it right now
            if served != state.current_or_empty(self.settings):
                return "changed by a deploy meanwhile"
            spares = [s for s in served.get("spares", []) if state.pid_matches(s) and runtime.bento_ready(s["upstream"])]
            if spares:
                return self._fail_over(served, spares)
            record = LocalDeployer(self.settings)._apply(Change(
                kind="heal", version=str(served["version"]), bento_tag=served["bento_tag"], window=served.get("window"),
                reason=f"supervisor: {self.open.get('bento', {}).get('cause', 'bento down')}"))
        return f"restarted {served['bento_tag']} (deploy in {record['seconds']} s)"

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
        from stockops.processes import free_port, wait_until

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
    """The supervisor process: tick until SIGTERM."""
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
