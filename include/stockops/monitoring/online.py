"""The champion's online calibration, kept by the monitor day by day from its own realised forecast records.

The state (:class:`~stockops.model.portable.online_calibration.OnlineState`, one model version's variance scale and
quantile offsets) lives at ``Settings.online_calibration_path``; the bento corrects its answers with it and
:func:`~stockops.monitoring.forecasts.score_watchlist` corrects the champion's recorded forecasts with it, so the
forecast log holds what was served. Each monitor run, before the champion forecasts,
:func:`update_online_calibration` feeds the state every day realised since its ``through``: the champion's own
records (role ``champion``, the first record of a (ticker, day)) joined with the close the ticker's latest
published snapshot holds for that day, in day order. A day realised for some tickers only is applied with those
(the state then drops the late ones: its days come in order).

A state file of another version (the champion changed) is replaced by the state the champion's registration kept
(its holdout walk's, ``evaluation/online-v<N>.json``) or else a neutral one, and an unreadable one likewise, with a
warning: the monitor never stops on it. A state written by someone else while
the monitor worked (training warming a newly promoted version's) is left as it is.
:func:`online_summary` is what the monitor's scorecard says of the state.

Imports numpy only inside its functions: :mod:`stockops.monitoring.forecasts`, which the ``stock_monitor`` DAG
file imports, imports this module.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockops.core.settings import Settings
from stockops.registry.online_states import kept_online_state

if TYPE_CHECKING:
    import pandas as pd

    from stockops.model.portable.online_calibration import OnlineState

log = logging.getLogger(__name__)

Z_05 = 1.6448536269514722  # the standard normal's 95 % quantile: the 90 % interval's half-width in sigmas


def quantile_names() -> tuple[str, ...]:
    """The forecast record's quantile keys in the state's level order (``q01`` .. ``q99``)."""
    from stockops.model.portable.online_calibration import LEVELS

    return tuple(f"q{round(level * 100):02d}" for level in LEVELS)


def update_online_calibration(*, settings: Settings, version: str, records: Iterable[dict],
                              frames: dict[str, pd.DataFrame]) -> OnlineState:
    """Apply every day realised since the state's ``through`` to champion ``version``'s state; save it; return it.

    ``records``: the forecast log's entries (any versions and roles); ``frames``: ticker -> its latest published
    snapshot. The state is saved when it changed (a day applied, or a fresh state started), unless the file was
    replaced since it was read (then that file stays: it is newer than what this run started from).
    """
    from stockops.core import pointers

    path = settings.online_calibration_path
    stamp = pointers.stamp(path)
    state, fresh = champion_state(path, str(version), kept_online_state(settings, str(version)))
    applied = apply_days(state, realised_days(records, frames, str(version), state.through))
    if applied or fresh:
        _save_unless_replaced(state, path, stamp)
    log.info("online calibration of v%s: %d realised day(s) applied, through %s (%d days; market variance "
             "factor %.3f)", version, len(applied), state.through, state.days, math.exp(state.market_log_scale))
    return state


def champion_state(path: Path, version: str, kept: Path | None = None) -> tuple[OnlineState, bool]:
    """The state at ``path`` if it is ``version``'s, else (and True: fresh) the one kept for ``version`` at
    registration (its holdout walk's, ``kept``) or a neutral one."""
    from stockops.model.portable.online_calibration import OnlineState
    from stockops.registry.online_states import has_state, load_state

    def fresh(why: str) -> tuple[OnlineState, bool]:
        if kept is not None and has_state(kept):
            try:
                state = load_state(kept)
                log.info("%s: starting v%s from its kept state (%s)", why, version, kept)
                return state, True
            except (OSError, ValueError, TypeError) as exc:
                log.warning("v%s's kept state is unreadable (%s)", version, exc)
        log.info("%s: starting a neutral one for v%s", why, version)
        return OnlineState(model_version=version), True

    if not has_state(path):
        return fresh(f"no online calibration state yet ({path})")
    try:
        state = load_state(path)
    except (OSError, ValueError, TypeError, AttributeError) as exc:  # torn, or not a state: never stop the monitor
        log.warning("the online calibration state is unreadable (%s)", exc)
        return fresh("unreadable state")
    if str(state.model_version) != version:
        return fresh(f"the online calibration state {path} is v{state.model_version}'s, not the champion v{version}'s")
    return state, False


def realised_days(records: Iterable[dict], frames: dict[str, pd.DataFrame], version: str,
                  after: str | None) -> dict[str, list[tuple[str, float, dict]]]:
    """Day -> [(ticker, realised log return, record)] of ``version``'s own forecasts for days after ``after``.

    One record per (ticker, day): the first recorded; shadow records are another role and left out; a record
    whose day its ticker's snapshot does not hold yet is not realised.
    """
    chosen: dict[tuple[str, str], dict] = {}
    for entry in records:
        day, ticker = entry.get("forecast_for"), entry.get("ticker")
        if (str(entry.get("model_version")) != version or entry.get("role") not in (None, "champion")
                or ticker not in frames or not isinstance(day, str) or (after is not None and day <= after)):
            continue
        chosen.setdefault((ticker, day), entry)
    closes = {ticker: _closes_after(frames[ticker], after) for ticker in {t for t, _ in chosen}}
    days: dict[str, list[tuple[str, float, dict]]] = {}
    for (ticker, day), entry in chosen.items():
        close = closes[ticker].get(day)
        try:
            ret = math.log(close / float(entry["last_close"])) if close is not None else None
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            ret = None
        if ret is not None:
            days.setdefault(day, []).append((ticker, ret, entry))
    return days


def _closes_after(frame: pd.DataFrame, after: str | None) -> dict[str, float]:
    """The snapshot's closes by ISO day, of the days after ``after`` only (usually a few)."""
    import numpy as np

    days = np.datetime_as_string(np.asarray(frame["Date"], dtype="datetime64[D]"), unit="D")
    first = 0 if after is None else int(np.searchsorted(days, after, side="right"))
    return dict(zip(days[first:].tolist(), frame["Close"].to_numpy(dtype="float64")[first:].tolist(), strict=True))


def apply_days(state: OnlineState, days: dict[str, list[tuple[str, float, dict]]]) -> list[str]:
    """Feed ``days`` to ``state`` in day order (each day's cross-section as served); returns the days applied."""
    import numpy as np

    names = quantile_names()
    applied = []
    for day in sorted(days):
        rows = []
        for ticker, ret, entry in days[day]:
            try:
                rows.append((ticker, ret, float(entry["point"]), float(entry["variance"]),
                             [float(entry["quantiles"][q]) for q in names]))
            except (KeyError, TypeError, ValueError):  # a record of another shape: not applied
                log.warning("online calibration: %s's record for %s is incomplete: left out", ticker, day)
        if rows and state.update(day, [r[0] for r in rows], np.array([r[1] for r in rows]),
                                 np.array([r[2] for r in rows]), np.array([r[3] for r in rows]),
                                 np.array([r[4] for r in rows])):
            applied.append(day)
    return applied


def _save_unless_replaced(state: OnlineState, path: Path, stamp: tuple | None) -> None:
    from stockops.core import pointers
    from stockops.registry.online_states import save_state

    if pointers.stamp(path) != stamp:
        log.warning("the online calibration state %s was replaced while the monitor updated it: the newer file "
                    "is kept, v%s's update through %s is not saved", path, state.model_version, state.through)
        return
    save_state(state, path)


def served_state(settings: Settings, version: str) -> OnlineState | None:
    """The state as the bento reads it when it is ``version``'s; None otherwise (missing, unreadable, another's)."""
    from stockops.registry.online_states import load_state

    try:
        state = load_state(settings.online_calibration_path)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return state if str(state.model_version) == str(version) else None


def online_summary(state: OnlineState | None, version: str) -> dict[str, Any]:
    """What the scorecard says of champion ``version``'s online calibration: its lineage and each ticker's factors.

    Per ticker: the variance factor ``exp(market + ticker)``, the quantile offsets of the 90 % interval's bounds
    (``offset_05``, ``offset_95``, standardised units) and the interval's width factor they and the variance
    factor imply against the raw forecast (``sqrt(factor) * ((z95 + d95) - (z05 + d05)) / (z95 - z05)``, z of
    the normal), its own days and last day.
    """
    if state is None:
        return {"model_version": str(version), "status": "none",
                "basis": f"no online calibration state of v{version} yet (neutral: forecasts served as the model made them)"}
    market = math.exp(state.market_log_scale)
    low, high = quantile_names().index("q05"), quantile_names().index("q95")
    per_ticker = {}
    for ticker, own in sorted(state.tickers.items()):
        factor = math.exp(state.market_log_scale + own.log_scale)
        d05, d95 = own.offsets[low], own.offsets[high]
        per_ticker[ticker] = {
            "variance_factor": factor, "offset_05": d05, "offset_95": d95,
            "interval_90_factor": math.sqrt(factor) * (2 * Z_05 + d95 - d05) / (2 * Z_05),
            "days": own.days, "through": own.through}
    return {"model_version": state.model_version, "status": "ok", "through": state.through, "days": state.days,
            "started_from": state.started_from, "updated_at": state.updated_at, "market_variance_factor": market,
            "per_ticker": per_ticker}


def online_metrics(scorecard: dict | None) -> dict[str, float]:
    """The online calibration's market variance factor and days as MLflow metrics (``online_*``); empty without."""
    online = (scorecard or {}).get("online_calibration") or {}
    return {f"online_{k}": float(online[k]) for k in ("market_variance_factor", "days") if online.get(k) is not None}
