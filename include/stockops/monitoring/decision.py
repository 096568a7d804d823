"""The decision: retrain or not (thresholds, cool-down, queued runs), and whether to propose a rollback."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockops.core import audit
from stockops.core.settings import Settings
from stockops.model.drift_features import FEATURES

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

TRAINING_DAG_ID = "stock_train"
PROPOSAL_DAG_ID = "stock_rollback_proposal"
NAMED_TICKERS = 20  # drifted tickers the reason names, nearest drift first; the report and decision.json hold all


def last_trigger(monitor_log: Path) -> dict | None:
    """The most recent decision that triggered a retrain, from the decision log."""
    return next((e for e in reversed(audit.read(monitor_log)) if e.get("triggered")), None)


def decide(drift: dict | None, error: dict | None, settings: Settings, *, active_training_runs: int = 0,
           previous_trigger: dict | None = None, now: datetime | None = None,
           scorecard: dict | None = None) -> dict[str, Any]:
    """Which thresholds were crossed, and whether that triggers a retrain now (debounced).

    ``scorecard`` (:func:`stockops.monitoring.scorecard.calibration_scorecard`) adds the calibration
    checks: the Kupiec test rejecting the pooled 95 % or 99 % VaR, or a pooled QLIKE worse than
    HARX-GKO's by more than ``monitor_qlike_margin``; an ``insufficient`` one only says so.
    """
    now = now or datetime.now(UTC)
    crossed: list[str] = []
    calm: list[str] = []
    drift = _as_watchlist(drift, settings)
    drift_share: float | None = drift["drift_share"] if drift else None
    if drift is not None and drift_share is not None:
        high = drift_share >= settings.monitor_drift_tickers_share
        per_ticker = drift["per_ticker"]
        text = (f"{len(drift['drifted_tickers'])} of {len(per_ticker)} tickers drifted (share {drift_share:.2f}"
                f"{' ≥ ' if high else ' < '}{settings.monitor_drift_tickers_share:.2f}; a ticker drifts when "
                f"≥ {settings.monitor_drift_share:.2f} of its {len(FEATURES)} input features do)")
        drifted = drift["drifted_tickers"]
        if drifted:
            named = [t for t in drift.get("ranking") or drifted if per_ticker[t]["drifted"]][:NAMED_TICKERS]
            text += ": " + ", ".join(f"{t} ({', '.join(per_ticker[t]['drifted_columns'])})" for t in named)
            if len(drifted) > len(named):
                text += f" and {len(drifted) - len(named)} more (the drift report lists every ticker)"
        (crossed if high else calm).append(f"data drift: {text}")
    live_ratio = error.get("rmse_ratio") if error else None
    persistence_ratio = error.get("persistence_ratio") if error else None
    basis = f", from {error['basis']}" if error and error.get("basis") else ""  # said once, on the first error line
    if live_ratio is not None and not math.isnan(live_ratio):
        high = live_ratio >= settings.monitor_error_ratio
        (crossed if high else calm).append(f"live error {live_ratio:.2f}× the champion's holdout RMSE "
                                           f"({'≥' if high else '<'} {settings.monitor_error_ratio:.2f}×){basis}")
        basis = ""
    if persistence_ratio is not None and not math.isnan(persistence_ratio):
        high = persistence_ratio >= settings.monitor_persistence_ratio
        (crossed if high else calm).append(f"live RMSE {persistence_ratio:.3f}× persistence's "
                                           f"({'≥' if high else '<'} {settings.monitor_persistence_ratio:.2f}×){basis}")
    if scorecard:
        from stockops.monitoring.scorecard import scorecard_verdict

        card_crossed, card_calm = scorecard_verdict(scorecard, settings.monitor_kupiec_p, settings.monitor_qlike_margin)
        crossed += card_crossed
        calm += card_calm

    blockers = []
    if crossed and active_training_runs:
        blockers.append(f"{TRAINING_DAG_ID} already has {active_training_runs} run(s) queued or running")
    if crossed and previous_trigger:
        since = now - datetime.fromisoformat(previous_trigger["at"])
        cooldown = timedelta(hours=settings.monitor_cooldown_h)
        if since < cooldown:
            blockers.append(f"the last retrain was triggered {since.total_seconds() / 3600:.1f} h ago "
                            f"({previous_trigger['at']}), within the {settings.monitor_cooldown_h:g} h cool-down")
    triggered = bool(crossed) and not blockers
    if triggered:
        reason = "retrain: " + "; ".join(crossed)
    elif crossed:
        reason = "crossed, but not triggered: " + "; ".join(blockers) + ". Crossed: " + "; ".join(crossed)
    else:
        reason = "nothing crossed: " + ("; ".join(calm) or "no drift or error could be computed")
    return {"drift_share": drift_share, "drifted_columns": drift["drifted_columns"] if drift else [],
            "live_rmse_ratio": live_ratio, "persistence_ratio": persistence_ratio, "triggered": triggered,
            "reason": reason, "crossed": crossed, "debounced_by": blockers, "scorecard": scorecard}


def _as_watchlist(drift: dict | None, settings: Settings) -> dict | None:
    """One series' drift (:func:`assess_drift`) as a watchlist of that one series; a watchlist's as it is."""
    if drift is None or "per_ticker" in drift:
        return drift
    drifted = drift["drift_share"] >= settings.monitor_drift_share
    return {"drift_share": float(drifted), "drifted_tickers": ["series"] if drifted else [],
            "drifted_columns": [f"series:{c}" for c in drift["drifted_columns"]] if drifted else [],
            "per_ticker": {"series": {**drift, "drifted": drifted}}}


def last_proposal(monitor_log: Path, comparison: dict | None) -> dict | None:
    """The most recent decision that proposed rolling back the same champion to the same version."""
    if not comparison:
        return None
    pair = (comparison["champion"], comparison["previous"])
    return next((e for e in reversed(audit.read(monitor_log))
                 if (e.get("rollback") or {}).get("propose")
                 and (e["rollback"].get("from_version"), e["rollback"].get("to_version")) == pair), None)


def rollback_proposal(comparison: dict | None, settings: Settings, *, previous_proposal: dict | None = None,
                      now: datetime | None = None, active_proposals: int = 0) -> dict[str, Any]:
    """Whether to ask an operator to roll the champion back to the previous one: ``{propose, reason, ...}``.

    Proposed when the champion is clearly worse (:func:`scorecard.rollback_verdict`), unless a
    proposal is still waiting for its answer, or the same one was made within the cool-down: a
    person who said no is not asked again every day.
    """
    from stockops.monitoring.scorecard import rollback_verdict

    now = now or datetime.now(UTC)
    worse, why = rollback_verdict(comparison, settings.monitor_rollback_margin, settings.monitor_rollback_dm_t)
    out: dict[str, Any] = {"propose": False, "clearly_worse": worse, "reason": why, "comparison": comparison}
    if comparison:
        out.update(from_version=comparison["champion"], to_version=comparison["previous"])
    if not worse:
        return out
    if active_proposals:
        out["reason"] = f"not proposed again: {active_proposals} proposal run(s) still wait for an answer. {why}"
        return out
    if previous_proposal:
        since = now - datetime.fromisoformat(previous_proposal["at"])
        if since < timedelta(hours=settings.monitor_cooldown_h):
            out["reason"] = (f"not proposed again: the same rollback was proposed {since.total_seconds() / 3600:.1f} h "
                             f"ago, within the {settings.monitor_cooldown_h:g} h cool-down. {why}")
            return out
    out.update(propose=True, reason=f"rollback proposed: {why}")
    return out
