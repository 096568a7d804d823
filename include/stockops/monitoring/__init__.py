"""Monitoring that closes the loop: is the champion still fit for the data it now sees?

Each check (the ``stock_monitor`` DAG, or ``make demo``) compares two things and decides:

* **data drift** — Evidently's ``DataDriftPreset`` on the model's input features (returns,
  volatility, intraday range, volume), the champion's training window (recorded with the model
  at training time) against the last ``monitor_current_days`` trading days;
* **live error** — the champion's forecasts for those days against the closes that followed, as
  RMSE, as a ratio to the champion's own holdout RMSE (both in % of price, so a higher price
  level is not mistaken for error), as a ratio to persistence on the same days, and the coverage
  of its 50 % and 90 % intervals;
* **calibration** — the live scorecard (:mod:`stockops.monitoring.scorecard`): every ticker's own
  forecasts by the champion, realized, per ticker and pooled: interval coverage, 95 %/99 % VaR
  breaches with the Kupiec test, QLIKE and pinball loss against HARX-GKO on the same pairs.

The monitor trusts only the platform's own records. Its first step, :func:`score_watchlist`,
forecasts the next session of every watchlist ticker with the champion loaded from the registry,
on that ticker's latest published (validated, hash-checked) snapshot, and appends one record per
(ticker, day, model version) to ``<home>/monitoring/forecasts.jsonl``. Live error and calibration
join those records with the closes that later snapshots published. Until
``monitor_min_forecast_days`` of them are realized in the window (a fresh platform, a new
champion), the champion is replayed on the snapshot's days instead, and the reason says so. The
endpoint's log (``serving/predictions.jsonl``, rotated at its size cap with a per-version summary)
holds whatever clients sent — any ``as_of``, any closes — so it is counted as traffic and never scored.

The decision is plain data, ``{drift_share, drifted_columns, live_rmse_ratio, persistence_ratio,
scorecard, triggered, reason, ...}``, kept as JSON beside the Evidently HTML report (the scorecard
also on its own, ``scorecard.json``), appended to the decision log and logged to MLflow (the
pooled scorecard as ``scorecard_*`` metrics). A crossed threshold triggers a retrain unless one is queued or
running, or the last trigger is within the cool-down: one drift episode, one retrain.

Evidently (~8 s to import) and TensorFlow are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockops import registry
from stockops.contracts import MonitorDecision, Scored, ShadowScored
from stockops.core import audit
from stockops.core.settings import Settings, get_settings
from stockops.model.drift_features import FEATURES, current_features
from stockops.model.portable.prediction_log import request_counts as prediction_log_counts

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)
# The stock_monitor DAG file imports this module: numpy and pandas are imported inside the functions.

REFERENCE_ARTIFACT = "monitoring/reference_features.parquet"
TRAINING_DAG_ID = "stock_train"
PROPOSAL_DAG_ID = "stock_rollback_proposal"
MIN_REFERENCE_ROWS = 60  # training-window days a ticker needs for its drift to be tested


# ---- data drift ------------------------------------------------------------------------------
def assess_watchlist_drift(references: dict[str, pd.DataFrame], currents: dict[str, pd.DataFrame],
                           threshold: float, share: float, tickers_share: float = 0.5):
    """Every ticker's drift in ONE Evidently report; returns (summary, snapshot).

    One ``DataDriftPreset`` per ticker (normed Wasserstein distance per feature) over the columns
    ``<TICKER>:<feature>``: a feature drifted when its distance (in reference standard deviations)
    is ≥ ``threshold``; a ticker drifted when the share of its features that drifted is ≥ ``share``
    (the thresholds ``bench/monitor_drift.py`` measured on one ticker); the watchlist's
    ``drift_share`` is the share of checked tickers that drifted, compared with ``tickers_share``
    (one bad ticker is named in the reason, it does not retrain a global model on its own).
    Tickers are padded with missing values to one table: Evidently drops them per column.
    """
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    tickers = sorted(set(references) & set(currents))
    if not tickers:
        raise ValueError("no ticker has both a training-window reference and current features")
    columns = {t: [f"{t}:{c}" for c in FEATURES] for t in tickers}

    def wide(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
        return pd.concat([frames[t][list(FEATURES)].reset_index(drop=True).set_axis(columns[t], axis=1)
                          for t in tickers], axis=1)

    every = [c for t in tickers for c in columns[t]]
    definition = DataDefinition(numerical_columns=every)
    report = Report([DataDriftPreset(columns=columns[t], method="wasserstein", threshold=threshold, drift_share=share)
                     for t in tickers])
    snapshot = report.run(Dataset.from_pandas(wide(currents), data_definition=definition),
                          Dataset.from_pandas(wide(references), data_definition=definition))
    metrics = snapshot.dict()["metrics"]
    distances = {m["config"]["column"]: float(m["value"]) for m in metrics
                 if m["config"]["type"].endswith("ValueDrift")}
    counts = {tuple(m["config"]["columns"]): m["value"] for m in metrics
              if m["config"]["type"].endswith("DriftedColumnsCount")}
    per_ticker: dict[str, dict[str, Any]] = {}
    for t in tickers:
        drifted = [c.split(":", 1)[1] for c in columns[t] if distances[c] >= threshold]
        counted = counts[tuple(columns[t])]
        if len(drifted) != int(counted["count"]):
            raise RuntimeError(f"Evidently counted {counted['count']} drifted columns of {t}, the distances say {drifted}")
        per_ticker[t] = {"drift_share": float(counted["share"]), "drifted": float(counted["share"]) >= share,
                         "drifted_columns": drifted,
                         "distances": {c.split(":", 1)[1]: round(distances[c], 4) for c in columns[t]},
                         "reference_rows": len(references[t]), "current_rows": len(currents[t])}
    drifted_tickers = [t for t in tickers if per_ticker[t]["drifted"]]
    summary = {"drift_share": len(drifted_tickers) / len(tickers), "drifted_tickers": drifted_tickers,
               "drifted_columns": [f"{t}:{c}" for t in drifted_tickers for c in per_ticker[t]["drifted_columns"]],
               "tickers_checked": tickers, "per_ticker": per_ticker, "method": "wasserstein (normed)",
               "threshold": threshold, "feature_share": share, "tickers_share": tickers_share}
    return summary, snapshot


def assess_drift(reference: pd.DataFrame, current: pd.DataFrame, threshold: float, share: float):
    """One series' drift (:func:`assess_watchlist_drift` of one ticker): ({drift_share, drifted_columns, distances}, snapshot).

    ``drift_share`` here is the share of the series' features that drifted.
    """
    summary, snapshot = assess_watchlist_drift({"series": reference}, {"series": current}, threshold, share)
    one = summary["per_ticker"]["series"]
    return {"drift_share": one["drift_share"], "drifted_columns": one["drifted_columns"],
            "distances": one["distances"], "method": summary["method"], "threshold": threshold}, snapshot


def drift_inputs(reference: pd.DataFrame | None, frames: dict[str, pd.DataFrame], days: int, model_ticker: str
                 ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], dict[str, str]]:
    """(references, currents, not checked: ticker -> why) for the tickers in ``frames``.

    ``reference``: the champion's training-window features (a ``ticker`` column since the watchlist
    model; without one it is ``model_ticker``'s, as older champions recorded it).
    """
    references: dict[str, pd.DataFrame] = {}
    if reference is not None:
        if "ticker" in reference:
            references = {str(t): g.drop(columns="ticker") for t, g in reference.groupby("ticker", sort=True)}
        else:
            references = {model_ticker: reference}
    currents, skipped = {}, {}
    for ticker, frame in frames.items():
        if len(references.get(ticker, ())) < MIN_REFERENCE_ROWS:
            skipped[ticker] = (f"the champion's training window holds {len(references.get(ticker, ()))} days of it "
                               f"with complete features, fewer than {MIN_REFERENCE_ROWS}")
            continue
        try:
            currents[ticker] = current_features(frame, days)
        except ValueError as exc:
            skipped[ticker] = str(exc)
    return {t: references[t] for t in currents}, currents, skipped


# ---- the platform's own forecasts ---------------------------------------------------------------
FORECAST_EVENT = "forecast"
INTERVALS = {"coverage_50": ("q25", "q75"), "coverage_90": ("q05", "q95")}
TABLE_COLUMNS = ("as_of", "forecast_for", "last_close", "point", "q05", "q25", "q75", "q95")


def next_session(day: str) -> str:
    """The NYSE session after ``day`` (ISO date): the day a forecast made on ``day``'s close is for."""
    from datetime import date

    from stockops.data.calendar import sessions

    after = date.fromisoformat(day) + timedelta(days=1)
    return str(sessions(after, after + timedelta(days=14))[0])


def market_series(settings: Settings) -> pd.Series | None:
    """The market reference's closes by date (its latest published snapshot), or None without one."""
    from stockops.data import store_for

    if not settings.market:
        return None
    store = store_for(settings, settings.market)
    if store.latest() is None:
        return None
    return store.load().set_index("Date")["Close"]


def market_closes(market: pd.Series | None, frame: pd.DataFrame) -> np.ndarray | None:
    """``market``'s closes on ``frame``'s days (:func:`stockops.model.portable.risk_inputs.align_market`), or None."""
    from stockops.model.portable.risk_inputs import align_market

    return align_market(frame["Date"], market)


def forecast_records(model, snapshots: dict[str, tuple[Any, pd.DataFrame]], market: pd.Series | None,
                     version: str, made_at: str) -> tuple[list[dict], dict[str, str]]:
    """One forecast record per ticker, for the session after its snapshot's last day; and the tickers skipped, why.

    ``snapshots``: ticker -> (snapshot entry, its frame). The whole watchlist goes through the
    model's pyfunc contract (:meth:`Forecaster.predict_frame`) in one batch.
    """
    import pandas as pd

    from stockops.model.portable.forecaster import OUTPUT_COLUMNS

    need = model.calibration.history
    skipped = {t: f"{len(frame)} published days, the model needs {need}" for t, (_, frame) in snapshots.items()
               if len(frame) < need}
    tails = []
    for ticker, (_, frame) in snapshots.items():
        if ticker not in skipped:
            tail = frame.iloc[-need:].assign(ticker=ticker)
            closes = market_closes(market, tail)
            tails.append(tail if closes is None else tail.assign(Market=closes))
    if not tails:
        return [], skipped
    quantiles = [c for c in OUTPUT_COLUMNS if c.startswith("q")]
    records = []
    for row in model.predict_frame(pd.concat(tails, ignore_index=True)).itertuples(index=False):
        entry = snapshots[row.ticker][0]
        records.append({
            "ticker": row.ticker, "as_of": entry.last_date, "forecast_for": next_session(entry.last_date),
            "model_version": version, "snapshot_hash": entry.hash, "last_close": float(row.last_close),
            "point": float(row.point), "forecast": float(row.forecast_close),
            "quantiles": {q: float(getattr(row, q)) for q in quantiles}, "variance": float(row.variance),
            "made_at": made_at})
    return records, skipped


def _forecast_key(entry: dict) -> tuple[str, str, str]:
    return str(entry.get("ticker")), str(entry.get("as_of")), str(entry.get("model_version"))


def record_forecasts(forecast_log: Path, records: list[dict]) -> list[dict]:
    """Append the records the log does not hold yet (same ticker, as_of and model version); returns those written.

    Re-scoring a day (a retried task, a second check on the same snapshot) therefore adds nothing.
    """
    held = {_forecast_key(e) for e in audit.read(forecast_log)}
    written = []
    for record in records:
        if _forecast_key(record) not in held:
            written.append(audit.record(forecast_log, FORECAST_EVENT, **record))
            held.add(_forecast_key(record))
    return written


def score_watchlist(dag_run_id: str = "") -> Scored:
    """Forecast the next session of every watchlist ticker with the champion and log each forecast once.

    Only the platform's own inputs go in — the champion loaded in this process from the registry,
    each ticker's latest published snapshot (validated, and checked against its hash on load) —
    so no client can put a forecast, a day or a close into these records: live error is measured
    on them.
    """
    from stockops.data import store_for

    settings = get_settings()
    registry.setup(settings)
    champion = registry.champion_version(settings)
    if champion is None:
        log.info("no champion yet: nothing to score")
        return Scored(model_version=None, recorded=[], already_recorded=[], skipped={})
    version = str(champion.version)
    snapshots: dict[str, tuple[Any, pd.DataFrame]] = {}
    skipped: dict[str, str] = {}
    for ticker in settings.tickers:
        store = store_for(settings, ticker)
        entry = store.latest()
        if entry is None:
            skipped[ticker] = "no published snapshot yet"
        else:
            snapshots[ticker] = (entry, store.load(entry))
    made_at, market = datetime.now(UTC).isoformat(timespec="seconds"), market_series(settings)
    model = registry.load_forecaster(registry.model_uri(settings.model_name, version))
    records, too_short = forecast_records(model, snapshots, market, version, made_at=made_at)
    skipped.update(too_short)
    written = record_forecasts(settings.forecast_log, [{**r, "role": "champion", "dag_run_id": dag_run_id}
                                                       for r in records])
    recorded = [e["ticker"] for e in written]
    log.info("champion v%s scored %d ticker(s) into %s: %d new, %d already recorded%s", version, len(records),
             settings.forecast_log, len(recorded), len(records) - len(recorded),
             "".join(f"; {t} skipped: {why}" for t, why in skipped.items()))
    shadow = _score_previous(settings, version, snapshots, market, made_at, dag_run_id)
    return Scored(model_version=version, recorded=recorded,
                  already_recorded=[r["ticker"] for r in records if r["ticker"] not in recorded], skipped=skipped,
                  previous=shadow)


def _score_previous(settings: Settings, champion: str, snapshots: dict, market, made_at: str,
                    dag_run_id: str) -> ShadowScored | None:
    """The previous champion forecasts the same days in the shadow (``role: shadow``): what a rollback is judged on.

    A previous version that cannot be loaded any more (deleted, an older model format) is logged and
    skipped: the champion's own scoring never depends on it.
    """
    from stockops.registry.changes import previous_champion

    previous = previous_champion(settings, champion)
    if previous is None or str(previous) == str(champion):
        return None
    try:
        model = registry.load_forecaster(registry.model_uri(settings.model_name, previous))
        records, _ = forecast_records(model, snapshots, market, str(previous), made_at=made_at)
    except Exception as exc:  # noqa: BLE001 - the shadow is optional; its absence is reported
        log.warning("the previous champion v%s could not forecast in the shadow (%s: %s): no rollback can be "
                    "proposed until it does", previous, type(exc).__name__, exc)
        return ShadowScored(model_version=str(previous), error=f"{type(exc).__name__}: {exc}")
    written = record_forecasts(settings.forecast_log, [{**r, "role": "shadow", "dag_run_id": dag_run_id}
                                                       for r in records])
    log.info("previous champion v%s scored %d ticker(s) in the shadow: %d new", previous, len(records), len(written))
    return ShadowScored(model_version=str(previous), recorded=[e["ticker"] for e in written])


def own_forecasts(forecast_log: Path, ticker: str, version: str) -> pd.DataFrame:
    """The platform's forecasts for ``ticker`` by model ``version``, one per ``as_of`` (the first recorded)."""
    import pandas as pd

    found: dict[str, dict] = {}
    for entry in audit.read(forecast_log):  # a line cut short by a crash is skipped there
        if entry.get("ticker") == ticker and str(entry.get("model_version")) == str(version):
            found.setdefault(entry["as_of"], {"as_of": entry["as_of"], "forecast_for": entry["forecast_for"],
                                              "last_close": entry["last_close"], "point": entry["point"],
                                              **{q: entry["quantiles"][q] for q in TABLE_COLUMNS[4:]}})
    return pd.DataFrame(list(found.values()), columns=list(TABLE_COLUMNS))


def traffic_requests(prediction_log: Path, version: str) -> int:
    """How many requests the endpoint logged for ``version``: traffic only, as any client can write anything there.

    The log rotates at its size cap: the files rotated out are counted in its summary
    (:mod:`stockops.model.portable.prediction_log`), so this reads at most two capped files and a small JSON.
    """
    return prediction_log_counts(prediction_log)[str(version)]


# ---- live error ------------------------------------------------------------------------------
def replay_forecasts(model_uri: str, frame: pd.DataFrame, market: np.ndarray | None, ends: np.ndarray,
                     ticker: str | None = None) -> pd.DataFrame:
    """The model's forecasts made at each end index of ``frame`` (``ticker``'s rows: a per-ticker baseline uses its
    fit for it), for the row after it, as :func:`own_forecasts` tabulates them (end indices whose history the
    model's window does not fit are left out)."""
    import numpy as np
    import pandas as pd

    from stockops.model.portable.forecaster import LEVELS, WARMUP, feature_matrix, windows

    model = registry.load_forecaster(model_uri)
    window = model.calibration.window
    ends = ends[ends >= window - 1 + WARMUP]
    dates = pd.to_datetime(frame["Date"]).dt.strftime("%Y-%m-%d").to_numpy()
    result = model.predict_windows(windows(feature_matrix(frame, market), ends, window),
                                   None if ticker is None else np.full(len(ends), ticker, dtype=object))
    quantiles = {f"q{round(level * 100):02d}": result["quantiles"][:, i] for i, level in enumerate(LEVELS)}
    return pd.DataFrame({"as_of": dates[ends], "forecast_for": dates[ends + 1],
                         "last_close": frame["Close"].to_numpy(dtype="float64")[ends], "point": result["point"],
                         **{q: quantiles[q] for q in TABLE_COLUMNS[4:]}}, columns=list(TABLE_COLUMNS))


def live_error(frame: pd.DataFrame, days: int, own: pd.DataFrame, min_own_days: int, replay) -> dict[str, Any]:
    """The champion's forecasts for the last ``days`` trading days of ``frame`` against the closes it published.

    ``own`` (:func:`own_forecasts`) is used alone once ``min_own_days`` of its forecasts fall on
    those days; before that ``replay(ends)`` (:func:`replay_forecasts`) forecasts every day of the
    window. Persistence is scored on the same days, and the 50 % / 90 % intervals by their coverage.
    """
    import numpy as np
    import pandas as pd

    from stockops.model.evaluation import forecast_metrics
    from stockops.model.scoring import coverage

    dates = pd.to_datetime(frame["Date"]).dt.strftime("%Y-%m-%d").to_numpy()
    realized = pd.Series(frame["Close"].to_numpy(dtype="float64"), index=dates)
    ends = np.arange(max(0, len(dates) - 1 - days), len(dates) - 1)  # forecast made at t, for t + 1
    mine = own[own["forecast_for"].isin(dates[ends + 1])]
    if len(mine) >= min_own_days:
        table = mine
        source = {"source": "own", "basis": f"the platform's own forecasts of {len(mine)} days", "replayed": 0}
    else:
        table = replay(ends)
        source = {"source": "replay", "replayed": len(table),
                  "basis": f"the champion replayed on the snapshot's last {len(table)} days: only {len(mine)} of "
                           f"the platform's own forecasts are realized there, fewer than {min_own_days} "
                           "(STOCKOPS_MONITOR_MIN_FORECAST_DAYS)"}
    source["own_days"] = len(mine)
    if table.empty:
        return {**source, "days": 0}
    table = table.sort_values("forecast_for")
    actual, last = realized[table["forecast_for"]].to_numpy(), table["last_close"].to_numpy(dtype="float64")
    model = forecast_metrics(actual, last * np.exp(table["point"].to_numpy(dtype="float64")), last)
    persistence = forecast_metrics(actual, last, last)
    returns = np.log(actual / last)
    return {**source, "days": len(table), "first_day": str(table["forecast_for"].iloc[0]),
            "last_day": str(table["forecast_for"].iloc[-1]), "rmse": model["rmse"], "rmspe": model["rmspe"],
            "persistence_rmse": persistence["rmse"],
            "persistence_ratio": model["rmse"] / persistence["rmse"] if persistence["rmse"] > 0 else math.nan,
            **{name: coverage(table[lo].to_numpy(), table[hi].to_numpy(), returns)
               for name, (lo, hi) in INTERVALS.items()}}


# ---- the decision ----------------------------------------------------------------------------
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
        if drift["drifted_tickers"]:
            text += ": " + ", ".join(f"{t} ({', '.join(per_ticker[t]['drifted_columns'])})"
                                     for t in drift["drifted_tickers"])
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


# ---- one check, end to end -------------------------------------------------------------------
def run_monitor(active_training_runs: int = 0, dag_run_id: str = "", dry_run: bool = False,
                active_proposals: int = 0) -> dict[str, Any]:
    """Check the champion against the latest snapshot; write, record and return the decision.

    ``dry_run`` (``make demo``) reports what would happen but never counts as a trigger.
    """
    from stockops.data import store_for
    settings = get_settings()
    started = datetime.now(UTC)
    registry.setup(settings)
    champion = registry.champion_version(settings)
    store = store_for(settings)
    snapshot = store.latest()
    base = {"checked_at": started.isoformat(timespec="seconds"), "ticker": settings.ticker,
            "dag_run_id": dag_run_id, "dry_run": dry_run}
    if champion is None or snapshot is None:
        missing = "no champion yet" if champion is None else "no published snapshot yet"
        decision = {**base, "drift_share": None, "drifted_columns": [], "live_rmse_ratio": None,
                    "persistence_ratio": None, "triggered": False, "crossed": [], "debounced_by": [], "scorecard": None,
                    "rollback": {"propose": False, "reason": "no champion to compare"},
                    "reason": f"{missing}: nothing to monitor (a model must pass the gate first)"}
        log.info("MONITOR: %s", decision["reason"])
        return _record(settings, decision, folder=None, snapshot=None)

    frame = store.load(snapshot)
    days = settings.monitor_current_days
    frames = {settings.ticker: frame, **latest_frames(settings, skip=(settings.ticker,))}
    reference = _champion_reference(champion.run_id)
    references, currents, not_checked = drift_inputs(reference, frames, days, settings.ticker)
    drift, evidently_snapshot = (None, None)
    if currents:
        drift, evidently_snapshot = assess_watchlist_drift(references, currents, settings.monitor_drift_threshold,
                                                           settings.monitor_drift_share,
                                                           settings.monitor_drift_tickers_share)
        drift["not_checked"] = not_checked
    else:
        log.warning("champion v%s: no ticker's drift can be checked (%s): %s", champion.version, REFERENCE_ARTIFACT,
                    "; ".join(f"{t}: {why}" for t, why in not_checked.items()))
    current = current_features(frame, days)
    model_uri = registry.model_uri(settings.model_name, champion.version)
    market = market_closes(market_series(settings), frame)
    error = live_error(frame, days, own_forecasts(settings.forecast_log, settings.ticker, champion.version),
                       settings.monitor_min_forecast_days,
                       replay=lambda ends: replay_forecasts(model_uri, frame, market, ends, settings.ticker))
    error.update(_holdout_ratio(champion.run_id, error))
    records = audit.read(settings.forecast_log)
    scorecard = live_scorecard(settings, str(champion.version), frames, records)
    comparison = previous_comparison(settings, str(champion.version), frames, records)
    decision = decide(drift, error, settings, active_training_runs=active_training_runs,
                      previous_trigger=None if dry_run else last_trigger(settings.monitor_log), now=started,
                      scorecard=scorecard)
    decision["rollback"] = rollback_proposal(comparison, settings, previous_proposal=None if dry_run else
                                             last_proposal(settings.monitor_log, comparison), now=started,
                                             active_proposals=active_proposals)
    if dry_run and decision["triggered"]:
        decision.update(triggered=False, reason=f"dry run, would trigger: {decision['reason']}")
    decision = {**base, **decision, "champion_version": str(champion.version), "champion_run_id": champion.run_id,
                "live_error_source": error["source"],
                "traffic_requests": traffic_requests(settings.prediction_log, champion.version),
                "snapshot_hash": snapshot.hash, "current_window": [current["Date"].iloc[0].date().isoformat(),
                                                                   current["Date"].iloc[-1].date().isoformat()],
                "reference_window": None if settings.ticker not in references else [
                    references[settings.ticker]["Date"].iloc[0].date().isoformat(),
                    references[settings.ticker]["Date"].iloc[-1].date().isoformat()],
                "reference_rows": len(references.get(settings.ticker, ())),
                "drift": drift, "live_error": error,
                "thresholds": {k: getattr(settings, k) for k in (
                    "monitor_current_days", "monitor_drift_threshold", "monitor_drift_share",
                    "monitor_error_ratio", "monitor_persistence_ratio", "monitor_cooldown_h",
                    "monitor_min_forecast_days", "monitor_kupiec_p", "monitor_qlike_margin",
                    "monitor_drift_tickers_share", "monitor_rollback_margin", "monitor_rollback_dm_t")}}
    folder = settings.monitoring_dir / f"{started.strftime('%Y%m%dT%H%M%S%fZ')}-{snapshot.last_date}"
    decision = _record(settings, decision, folder=folder, snapshot=evidently_snapshot)
    log.info("MONITOR: %s\n%s", decision["reason"], json.dumps(
        {k: decision[k] for k in ("drift_share", "drifted_columns", "live_rmse_ratio", "persistence_ratio",
                                  "triggered")}))
    return decision


def latest_frames(settings: Settings, skip: tuple[str, ...] = ()) -> dict[str, pd.DataFrame]:
    """Every watchlist ticker's latest published snapshot (hash-checked on load); a ticker without one is left out."""
    from stockops.data import store_for

    frames = {}
    for ticker in settings.tickers:
        if ticker in skip:
            continue
        store = store_for(settings, ticker)
        entry = store.latest()
        if entry is not None:
            frames[ticker] = store.load(entry)
    return frames


def live_scorecard(settings: Settings, version: str, frames: dict[str, pd.DataFrame],
                   records: list[dict] | None = None) -> dict[str, Any]:
    """The calibration scorecard of champion ``version`` on every watchlist ticker's own forecasts.

    ``frames``: the tickers' latest published snapshots (:func:`latest_frames`); ``records``: the
    forecast log, read here unless given.
    """
    from stockops.monitoring.scorecard import calibration_scorecard

    records = audit.read(settings.forecast_log) if records is None else records
    mine = [e for e in records if str(e.get("model_version")) == str(version)]
    return calibration_scorecard(mine, frames, version, settings.monitor_current_days,
                                 settings.monitor_min_forecast_days)


def previous_comparison(settings: Settings, version: str, frames: dict[str, pd.DataFrame],
                        records: list[dict]) -> dict[str, Any] | None:
    """Champion ``version`` against the champion before it, on the days both forecast (None without one)."""
    from stockops.monitoring.scorecard import compare_versions
    from stockops.registry.changes import previous_champion

    previous = previous_champion(settings, version)
    if previous is None or str(previous) == str(version):
        return None
    return compare_versions(records, frames, version, str(previous), settings.monitor_current_days,
                            settings.monitor_min_forecast_days)


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


def _champion_reference(run_id: str) -> pd.DataFrame | None:
    """The training-window features recorded with the champion's MLflow run, if it has them."""
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REFERENCE_ARTIFACT)
    except (MlflowException, OSError):
        return None
    return pd.read_parquet(path)


def _holdout_ratio(run_id: str, error: dict) -> dict:
    """Live error over the champion's holdout error: in % of price where the run has it, else in price units."""
    if not error.get("days"):
        return {"rmse_ratio": None}
    metrics = registry.get_run(run_id).data.metrics
    if metrics.get("rmspe"):
        return {"holdout_rmspe": metrics["rmspe"], "rmse_ratio": error["rmspe"] / metrics["rmspe"],
                "ratio_basis": "rmse in % of price"}
    if metrics.get("rmse"):
        return {"holdout_rmse": metrics["rmse"], "rmse_ratio": error["rmse"] / metrics["rmse"],
                "ratio_basis": "rmse in price units (the champion's run has no rmspe)"}
    return {"rmse_ratio": None}


def _record(settings: Settings, decision: dict, folder: Path | None, snapshot) -> dict:
    """Write decision JSON (+ scorecard JSON, Evidently HTML), append to the decision log, log both to MLflow."""
    import mlflow

    from stockops.monitoring.scorecard import pooled_metrics

    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        decision["decision_path"] = str(folder / "decision.json")
        decision["report"] = None
        if snapshot is not None:
            decision["report"] = str(folder / "drift_report.html")
            snapshot.save_html(decision["report"])
        if decision.get("scorecard") is not None:
            decision["scorecard_path"] = str(folder / "scorecard.json")
            Path(decision["scorecard_path"]).write_text(json.dumps(decision["scorecard"], indent=2, default=str))
        Path(decision["decision_path"]).write_text(json.dumps(decision, indent=2, default=str))
    with mlflow.start_run(experiment_id=registry.experiment_id(settings, settings.monitoring_experiment),
                          run_name=f"monitor-{decision['checked_at'][:10]}") as run:
        mlflow.set_tags({"triggered": str(decision["triggered"]), "reason": decision["reason"][:5000],
                         "champion_version": decision.get("champion_version", "none"),
                         "airflow_dag_run_id": decision["dag_run_id"]})
        mlflow.log_metrics({k: float(decision[k]) for k in ("drift_share", "live_rmse_ratio", "persistence_ratio")
                            if decision.get(k) is not None} | {"triggered": float(decision["triggered"])}
                           | pooled_metrics(decision.get("scorecard")))
        # The Evidently HTML (~0.5 MB per ticker) is stored once, in the report folder (the run names it);
        # MLflow keeps the decision and the scorecard.
        if decision.get("report"):
            mlflow.set_tag("evidently_report", decision["report"])
        mlflow.log_dict(decision, "monitor/decision.json")
        if decision.get("scorecard") is not None:
            mlflow.log_dict(decision["scorecard"], "monitor/scorecard.json")
    decision["mlflow_run_id"] = run.info.run_id
    audit.record(settings.monitor_log, "monitor", **{k: v for k, v in decision.items() if k not in ("drift",)})
    if folder is not None:
        log.info("monitor decision: %s\nEvidently report: %s", decision["decision_path"], decision["report"])
        pruned = prune_reports(settings.monitoring_dir, settings.monitor_keep_reports, settings.monitor_keep_days)
        if pruned:
            log.info("pruned %d monitor report folder(s) beyond %d or older than %g days: %s", len(pruned),
                     settings.monitor_keep_reports, settings.monitor_keep_days, ", ".join(p.name for p in pruned))
    return decision


def report_folders(monitoring_dir: Path) -> list[Path]:
    """The per-check report folders (``<UTC timestamp>-<day>``, each with its ``decision.json``), oldest first."""
    if not monitoring_dir.is_dir():
        return []
    return sorted(p for p in monitoring_dir.iterdir()
                  if p.is_dir() and not p.is_symlink() and (p / "decision.json").is_file() and p.name[:8].isdigit())


def prune_reports(monitoring_dir: Path, keep: int, keep_days: float, now: datetime | None = None) -> list[Path]:
    """Delete report folders beyond the newest ``keep`` or older than ``keep_days``; the newest always stays.

    Age is read from the folder's name (the check's UTC start), never from file times a copy can change.
    The decision log keeps every decision; a pruned decision's ``report`` then names a missing file.
    """
    import shutil

    now = now or datetime.now(UTC)
    folders = report_folders(monitoring_dir)
    doomed = folders[:-keep] if len(folders) > keep else []
    for folder in folders[len(doomed):-1]:
        try:
            started = datetime.strptime(folder.name[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            continue
        if now - started > timedelta(days=keep_days):
            doomed.append(folder)
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return doomed


def should_retrain(decision: MonitorDecision) -> bool:
    """Short-circuit: go on to the trigger only if the check decided to retrain."""
    if decision.triggered:
        log.warning("RETRAIN: %s (report %s)", decision.reason, decision.report)
    else:
        log.info("no retrain: %s", decision.reason)
    return decision.triggered


def should_propose_rollback(decision: MonitorDecision) -> bool:
    """Short-circuit: go on to ask an operator only if the check proposes a rollback."""
    rollback = decision.rollback
    (log.warning if rollback.propose else log.info)("rollback: %s", rollback.reason)
    return rollback.propose

