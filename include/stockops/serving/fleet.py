"""Several serving hosts behind one front proxy: the agents' heartbeats, and the version the fleet serves.

Each serving agent (:mod:`~stockops.serving.agent`, one per serving host) writes its heartbeat every ``BEAT_S``:
the pointer ``serving/agents/<host>`` of the records' database, naming the host, where its stable address is
reached (``STOCKOPS_SERVING_ADVERTISE_URL``) and the version and bento it serves. An agent whose heartbeat is older
than ``STALE_S`` is gone: no deploy waits for it and no request is routed to it.

The version the fleet serves is the pointer ``serving/champion``: moved with ``@champion`` inside the deploy
critical section (:func:`~stockops.serving.deploy.move_champion`), and set by reconcile when it finds the two
apart (the alias moved by hand in MLflow), so the front proxy reads one database and never asks MLflow.

The front proxy (``python -m stockops.serving.proxy --fleet-db URL``, :class:`FleetView`) routes to every live agent
that serves that version, in turn; while a deploy switches the hosts one after the other, a host not switched yet
takes no request, so every answer comes from the champion. If no live host serves it (every switch failed), the
live hosts still answer, each with its own version in its answer: an endpoint that answers honestly rather than
not at all.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("stockops.serving.proxy")

AGENTS = "serving/agents/"
CHAMPION = "serving/champion"
BEAT_S = 1.0
STALE_S = 10.0
SUSPECT_S = 10.0  # a host that failed a request is tried last for this long (its heartbeat may still look fresh)


def beat(settings: Any, started_at: str) -> dict:
    """Write this host's heartbeat (what its ``current.json`` serves); returns it."""
    from stockops.serving import state
    from stockops.storage import state_store

    try:
        served = state.current_or_empty(settings)
    except state.CorruptState:
        served = {}
    record = {"host": settings.serving_host, "url": settings.advertise_url, "version": served.get("version"),
              "bento_tag": served.get("bento_tag"), "beat": time.time(), "started_at": started_at}
    state_store(settings).put(AGENTS + settings.serving_host, record)
    return record


_AGENT: dict = {}  # this process's agent (settings, start), when it is one: switches beat at once


def register(settings: Any, started_at: str) -> None:
    _AGENT.update(settings=settings, started_at=started_at)


def after_switch() -> None:
    """Beat now if this process is a serving agent (called by every switch of its stable address), so the front
    proxy learns the host's new version before ``@champion`` (``serving/champion``) names it."""
    if _AGENT:
        try:
            beat(_AGENT["settings"], _AGENT["started_at"])
        except Exception as exc:  # noqa: BLE001 - the switch is done; the beat thread says it within BEAT_S
            log.warning("could not beat after a switch: %s", exc)


def leave(settings: Any) -> None:
    """Remove this host's heartbeat (an agent that stops): no request is routed to it, no deploy waits for it."""
    from stockops.storage import state_store

    _AGENT.clear()
    state_store(settings).delete(AGENTS + settings.serving_host)


def agents(store: Any, stale_s: float = STALE_S) -> list[dict]:
    """Every agent's last heartbeat, each with ``live`` (beat within ``stale_s``), by host name."""
    now = time.time()
    return [{**p.value, "live": now - float(p.value.get("beat") or 0) <= stale_s} for p in store.pointers(AGENTS)
            if isinstance(p.value, dict)]


def live_hosts(settings: Any) -> list[str]:
    """The names of the serving hosts whose agents beat now."""
    from stockops.storage import state_store

    return sorted(a["host"] for a in agents(state_store(settings)) if a["live"])


def note_champion(settings: Any, version: str | None) -> None:
    """Set the fleet's version (``serving/champion``) unless it already names ``version``."""
    from stockops.serving.state import now
    from stockops.storage import state_store

    if version is None:
        return
    store = state_store(settings)
    current = store.get(CHAMPION)
    if current is None or current.value.get("version") != str(version):
        store.put(CHAMPION, {"version": str(version), "at": now()})


class FleetView:
    """The front proxy's view of the fleet, read from the records' database (call :meth:`read` off the event loop).

    ``state``: what ``/-/stockops/upstream`` shows (the version routed to, the hosts); ``urls``: the stable addresses
    of the live hosts serving it, rotated by one on every call (requests go to the hosts in turn; a connection
    error is retried on the next)."""

    def __init__(self, db_url: str, stale_s: float = STALE_S):
        from stockops.storage.records import StateStore

        self.store = StateStore(db_url)
        self.stale_s = stale_s
        self.state: dict = {}
        self._urls: list[str] = []
        self._turn = 0
        self._suspect: dict[str, float] = {}

    def read(self) -> dict:
        hosts = agents(self.store, self.stale_s)
        champion = self.store.get(CHAMPION)
        version = champion.value.get("version") if champion is not None else None
        live = [a for a in hosts if a["live"] and a.get("url") and a.get("version")]
        serving = [a for a in live if a["version"] == version] or live
        first = serving[0] if serving else {}
        if [a["url"] for a in serving] != self._urls or version != self.state.get("champion"):
            log.info("fleet: v%s routed to %s (hosts: %s)", first.get("version"), [a["host"] for a in serving] or "none",
                     {a.get("host"): (a.get("version"), "live" if a["live"] else "gone") for a in hosts})
        self.state = {"upstream": first.get("url"), "version": first.get("version"),
                      "bento_tag": first.get("bento_tag"), "champion": version, "fleet": True,
                      "hosts": [{k: a.get(k) for k in ("host", "url", "version", "bento_tag", "live")} for a in hosts],
                      "routed": [a["host"] for a in serving]}
        self._urls = [a["url"] for a in serving]
        return self.state

    def refresh(self) -> None:
        """Nothing: :meth:`read` is called off the event loop every ``FLEET_POLL_S``."""

    @property
    def url(self) -> str | None:
        return self.state.get("upstream")

    def suspect(self, url: str) -> None:
        """``url`` failed a request (refused, or no answer in time): try it last for ``SUSPECT_S``."""
        self._suspect[url] = time.monotonic() + SUSPECT_S

    @property
    def urls(self) -> list[str]:
        urls = self._urls
        if len(urls) < 2:
            return list(urls)
        self._turn = (self._turn + 1) % len(urls)
        turn = urls[self._turn:] + urls[:self._turn]
        now = time.monotonic()
        return sorted(turn, key=lambda url: self._suspect.get(url, 0.0) > now)  # stable: the turn, suspects last
