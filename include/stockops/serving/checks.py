"""Checks of what serves: the smoke request and the smoke check of a bento before any switch, where the
stable address routes, and :func:`verify` — the invariant after a change (serving == ``@champion`` == audit)."""

from __future__ import annotations

import math
from typing import TypeGuard

from stockops import registry
from stockops.core.processes import http_json, wait_until
from stockops.core.settings import Settings
from stockops.serving import state
from stockops.serving.change import DeployError
from stockops.serving.runtime import ServingError


def _proxy_state(settings: Settings) -> dict:
    """What the stable address says it routes to (``/-/stockops/upstream``: the upstream, its version and bento);
    {} when it does not answer."""
    try:
        status, body = http_json(f"{settings.serve_url}/-/stockops/upstream", timeout=2)
    except OSError:
        return {}
    return body if status == 200 and isinstance(body, dict) else {}


def _routed_to(settings: Settings) -> str | None:
    return _proxy_state(settings).get("upstream")


def _ready_at_stable_address(settings: Settings) -> bool:
    """The bento behind the stable address passes ``/readyz`` (asked through the proxy, from any host)."""
    try:
        status, _ = http_json(f"{settings.serve_url}/readyz", timeout=5)
    except OSError:
        return False
    return status == 200


def verify(settings: Settings, version: str, timeout: float = 30) -> dict:
    """The invariant, checked: the stable address serves ``version``, which is ``@champion`` and the audit
    log's last change. Raises ServingError (the task turns red) if it does not hold within ``timeout``.

    Checked through the stable address (``STOCKOPS_SERVE_HOST``), so it holds on any host: a worker host has no
    serving records of its own. On the serving host its own record (``current.json``, readable) must also be what
    the proxy routes to. With several serving hosts, every live one must serve ``version`` (their agents'
    heartbeats, :mod:`~stockops.serving.fleet`)."""
    from stockops.registry.changes import history

    seen: dict = {}

    def agree() -> bool:
        registry.setup(settings)
        champion = registry.champion_version(settings)
        changes = history(settings)
        routed = _proxy_state(settings)
        # the serving host's own record (unreadable: nothing agrees until it is rebuilt); a host that serves
        # nothing (a worker of a multi-host deployment) has none: what the proxy says it serves
        serves_here = settings.serving_state.exists() or settings.serving_processes.exists()
        served = state.current_or_empty(settings) if serves_here else routed
        seen.update(champion=str(champion.version) if champion else None, served=served.get("version"),
                    audit=changes[-1]["to_version"] if changes else None,
                    routed=bool(routed.get("upstream")) and routed.get("upstream") == served.get("upstream"),
                    ready=_ready_at_stable_address(settings), hosts=_fleet_versions(settings))
        return (seen["champion"] == seen["served"] == seen["audit"] == str(version)) and seen["routed"] \
            and seen["ready"] and all(v == str(version) for v in seen["hosts"].values())

    try:
        wait_until(agree, timeout=timeout, interval=0.5, what="serving == @champion == audit")
    except TimeoutError:
        raise ServingError(f"v{version} should be serving and champion, but after {timeout:.0f} s: {seen}"
                           f"{_undone(settings, version)}") from None
    return seen


def _fleet_versions(settings: Settings) -> dict:
    """What each live serving host's agent says it serves ({} on one machine, where no agent beats)."""
    from stockops.serving import fleet
    from stockops.storage import state_store

    return {a["host"]: a.get("version") for a in fleet.agents(state_store(settings)) if a["live"]}


def _undone(settings: Settings, version: str) -> str:
    """Why ``version`` is not the champion any more, when a later change replaced it (a rollback racing it)."""
    from stockops.registry.changes import describe, history

    changes = history(settings)
    made = [i for i, c in enumerate(changes) if str(c.get("to_version")) == str(version)]
    later = changes[made[-1] + 1:] if made else []
    if not later:
        return ""
    c = later[-1]
    return (f". v{version} did become the champion at {changes[made[-1]]['at']}, but a later {describe(c)} "
            f"({c['at']}, dag run {c.get('dag_run_id') or 'none'}) moved it to v{c['to_version']}: "
            f"{c.get('reason', '')}")


# ---- the smoke request ------------------------------------------------------------------------------
def history_rows(window: int | None) -> int:
    """Rows the model of ``window`` needs (window + the features' warm-up)."""
    from stockops.model.portable.forecaster import WARMUP

    return (window or 100) + WARMUP  # no window given: enough days for any usual one


def synthetic_smoke_body(history: int) -> dict:
    """A smoke request on a synthetic OHLCV series (the bento's health, without any snapshot)."""
    from stockops.model.portable.forecaster import synthetic_ohlcv
    from stockops.serving.requests import request_body

    return request_body(synthetic_ohlcv(2 * history))


def smoke_body(settings: Settings, history: int) -> dict:
    """A real request: the model ticker's latest snapshot, its last ``2 * history`` rows, with the market
    reference's closes when it has a snapshot; a synthetic OHLCV series in a home without data."""
    from stockops.data import store_for
    from stockops.model.portable.forecaster import synthetic_ohlcv
    from stockops.serving.requests import market_frame, request_body

    store = store_for(settings)
    if store.latest() is not None:
        return request_body(store.load(), market=market_frame(settings), rows=2 * history)
    return request_body(synthetic_ohlcv(2 * history))


def check_bento(url: str, body: dict, version: str) -> dict:
    """A smoke prediction: a finite forecast within 50 % of the last close, quantiles in order, a positive
    volatility, from the right version."""
    status, answer = http_json(f"{url}/predict", body, timeout=30, headers={"X-Stockops-Smoke": "1"})
    if status != 200 or not isinstance(answer, dict):
        raise DeployError(f"smoke prediction at {url} answered HTTP {status}: {str(answer)[:500]}")
    last_close = body["closes"][-1]
    forecast = answer.get("forecast")
    if not _finite(forecast) or forecast <= 0 or abs(forecast / last_close - 1) > 0.5:
        raise DeployError(f"smoke prediction at {url} is implausible: {forecast!r} after a last close of {last_close}")
    quantiles = list((answer.get("quantiles") or {}).values())
    if len(quantiles) != 7 or not all(_finite(q) for q in quantiles) \
            or any(b < a for a, b in zip(quantiles, quantiles[1:], strict=False)):
        raise DeployError(f"smoke prediction at {url} has missing, non-finite or crossing quantiles: "
                          f"{answer.get('quantiles')!r}")
    volatility = answer.get("volatility")
    if not _finite(volatility) or volatility <= 0:
        raise DeployError(f"smoke prediction at {url} has a volatility of {volatility!r}")
    if answer.get("model_version") != str(version):
        raise DeployError(f"smoke prediction at {url} came from version {answer.get('model_version')!r}, "
                          f"not {version}")
    return answer


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)
