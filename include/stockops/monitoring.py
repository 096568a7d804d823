"""Monitoring that closes the loop: is the champion still fit for the data it now sees?

Each check (the ``stock_monitor`` DAG, or ``make demo``) compares two things and decides:

* **data drift** — Evidently's ``DataDriftPreset`` on the model's input features (returns,
  volatility, intraday range, volume), the champion's training window (recorded with the model
  at training time) against the last ``monitor_current_days`` trading days;
* **live error** — the champion's forecasts for those days against the closes that followed:
  the forecasts it served (``serving/predictions.jsonl``) where there are any, the champion
  replayed over the window for the other days. As RMSE, as a ratio to the champion's own
  holdout RMSE (both in % of price, so a higher price level is not mistaken for error) and as a
  ratio to persistence on the same days.

The decision is plain data, ``{drift_share, drifted_columns, live_rmse_ratio, persistence_ratio,
triggered, reason, ...}``, kept as JSON beside the Evidently HTML report, appended to the
decision log and logged to MLflow. A crossed threshold triggers a retrain unless one is queued or
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

from stockops import audit, registry
from stockops.config import Settings, get_settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)
# The stock_monitor DAG file imports this module: numpy and pandas are imported inside the functions.

FEATURES = ("log_return", "abs_return", "volatility_20d", "range_pct", "volume_ratio")
REFERENCE_ARTIFACT = "monitoring/reference_features.parquet"
TRAINING_DAG_ID = "stock_train"


# ---- features ------------------------------------------------------------------------------
def monitor_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Per trading day: the model's input signal and its context, each from data up to that day.

    ``log_return`` and ``abs_return`` are what the LSTM's windows are made of; ``volatility_20d``
    (20-day std of log returns), ``range_pct`` ((high - low) / close) and ``volume_ratio`` (log of
    volume over its 50-day mean) describe the regime. All are scale-free, so a stock that simply
    rose is not "drift". Days before the rolling windows fill are dropped.
    """
    import numpy as np
    import pandas as pd

    log_return = np.log(frame["Close"].astype("float64")).diff()
    volume = frame["Volume"].astype("float64")
    features = pd.DataFrame({
        "Date": pd.to_datetime(frame["Date"]),
        "log_return": log_return,
        "abs_return": log_return.abs(),
        "volatility_20d": log_return.rolling(20).std(),
        "range_pct": (frame["High"] - frame["Low"]) / frame["Close"],
        "volume_ratio": np.log(volume / volume.rolling(50).mean()),
    })
    return features.replace([np.inf, -np.inf], np.nan).dropna().reset_index(drop=True)


def reference_features(frame: pd.DataFrame, last_training_index: int) -> pd.DataFrame:
    """The features of the days a model was trained on: rows ``0..last_training_index`` of ``frame``."""
    return monitor_features(frame.iloc[: last_training_index + 1])


def current_features(frame: pd.DataFrame, days: int) -> pd.DataFrame:
    """The features of the last ``days`` trading days of ``frame``."""
    features = monitor_features(frame)
    if len(features) < days:
        raise ValueError(f"the snapshot has {len(features)} days with complete features, fewer than the "
                         f"{days} the monitor compares (STOCKOPS_MONITOR_CURRENT_DAYS)")
    return features.iloc[-days:].reset_index(drop=True)


# ---- data drift ------------------------------------------------------------------------------
def assess_drift(reference: pd.DataFrame, current: pd.DataFrame, threshold: float, share: float):
    """Evidently's DataDriftPreset, normed Wasserstein distance per feature; returns (summary, snapshot).

    A feature drifted when its distance (in reference standard deviations) is ≥ ``threshold``.
    Evidently 0.7 has no dataset-drift flag: the share comes from ``DriftedColumnsCount``.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = list(FEATURES)
    definition = DataDefinition(numerical_columns=columns)
    report = Report([DataDriftPreset(columns=columns, method="wasserstein", threshold=threshold, drift_share=share)])
    snapshot = report.run(Dataset.from_pandas(current[columns], data_definition=definition),
                          Dataset.from_pandas(reference[columns], data_definition=definition))
    metrics = snapshot.dict()["metrics"]
    counted = next(m["value"] for m in metrics if m["config"]["type"].endswith("DriftedColumnsCount"))
    distances = {m["config"]["column"]: float(m["value"]) for m in metrics
                 if m["config"]["type"].endswith("ValueDrift")}
    drifted = [c for c in columns if distances[c] >= threshold]
    if len(drifted) != int(counted["count"]):
        raise RuntimeError(f"Evidently counted {counted['count']} drifted columns, the distances say {drifted}")
    summary = {"drift_share": float(counted["share"]), "drifted_columns": drifted,
               "distances": {c: round(distances[c], 4) for c in columns},
               "method": "wasserstein (normed)", "threshold": threshold}
    return summary, snapshot


# ---- live error ------------------------------------------------------------------------------
def served_forecasts(prediction_log: Path, version: str, as_of_days: set[str]) -> dict[str, float]:
    """``as_of -> forecast`` for the days asked, from forecasts the endpoint served with ``version``.

    Only entries with an ``as_of`` date can be matched to a day; the latest one per day wins.
    """
    found: dict[str, float] = {}
    for entry in audit.read(prediction_log):  # a line cut short by a crash is skipped there
        if str(entry.get("model_version")) == str(version) and entry.get("as_of") in as_of_days:
            found[entry["as_of"]] = float(entry["forecast"])
    return found


def replay_forecasts(model_uri: str, frame: pd.DataFrame, market: np.ndarray | None, ends: np.ndarray) -> np.ndarray:
    """The model's next-day close forecasts made at each end index (NaN where its history does not fit)."""
    import numpy as np

    from stockops.forecaster import WARMUP, feature_matrix, windows

    model = registry.load_forecaster(model_uri)
    window = model.calibration.window
    out = np.full(len(ends), np.nan)
    fits = ends >= window - 1 + WARMUP
    if fits.any():
        point = model.predict_windows(windows(feature_matrix(frame, market), ends[fits], window))["point"]
        out[fits] = frame["Close"].to_numpy(dtype="float64")[ends[fits]] * np.exp(point)
    return out


def market_closes(settings: Settings, frame: pd.DataFrame) -> np.ndarray | None:
    """The market reference's closes on ``frame``'s days (latest published snapshot), or None without one."""
    from stockops.ingest import store_for

    if not settings.market:
        return None
    store = store_for(settings, settings.market)
    if store.latest() is None:
        return None
    market = store.load().set_index("Date")["Close"]
    return market.reindex(frame["Date"]).ffill().bfill().to_numpy(dtype="float64")


def live_error(frame: pd.DataFrame, days: int, version: str, prediction_log: Path,
               replay=None) -> dict[str, Any]:
    """Forecasts for the last ``days`` trading days against what happened, and persistence on the same days.

    ``replay(ends)`` supplies the champion's forecasts for days the log does not cover.
    """
    import numpy as np
    import pandas as pd

    from stockops.evaluation import forecast_metrics

    closes = frame["Close"].to_numpy(dtype="float64")
    dates = pd.to_datetime(frame["Date"]).dt.strftime("%Y-%m-%d").to_numpy()
    ends = np.arange(max(0, len(closes) - 1 - days), len(closes) - 1)  # forecast made at t, for t + 1
    logged = served_forecasts(prediction_log, version, set(dates[ends]))
    forecasts = np.array([logged.get(day, np.nan) for day in dates[ends]])
    missing = np.isnan(forecasts)
    if missing.any() and replay is not None:
        forecasts[missing] = replay(ends[missing])
    scored = ~np.isnan(forecasts)
    if not scored.any():
        return {"days": 0, "from_log": 0, "replayed": 0}
    ends, forecasts = ends[scored], forecasts[scored]
    actual, last = closes[ends + 1], closes[ends]
    model = forecast_metrics(actual, forecasts, last)
    persistence = forecast_metrics(actual, last, last)
    return {"days": int(scored.sum()), "from_log": len(logged), "replayed": int(scored.sum()) - len(logged),
            "first_day": str(dates[ends[0] + 1]), "last_day": str(dates[ends[-1] + 1]),
            "rmse": model["rmse"], "rmspe": model["rmspe"], "persistence_rmse": persistence["rmse"],
            "persistence_ratio": model["rmse"] / persistence["rmse"] if persistence["rmse"] > 0 else math.nan}


# ---- the decision ----------------------------------------------------------------------------
def last_trigger(monitor_log: Path) -> dict | None:
    """The most recent decision that triggered a retrain, from the decision log."""
    return next((e for e in reversed(audit.read(monitor_log)) if e.get("triggered")), None)


def decide(drift: dict | None, error: dict | None, settings: Settings, *, active_training_runs: int = 0,
           previous_trigger: dict | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Which thresholds were crossed, and whether that triggers a retrain now (debounced)."""
    now = now or datetime.now(UTC)
    crossed, calm = [], []
    drift_share = drift["drift_share"] if drift else None
    if drift is not None:
        text = (f"{len(drift['drifted_columns'])} of {len(FEATURES)} input features drifted "
                f"(share {drift_share:.2f}{' ≥ ' if drift_share >= settings.monitor_drift_share else ' < '}"
                f"{settings.monitor_drift_share:.2f})")
        if drift["drifted_columns"]:
            text += ": " + ", ".join(drift["drifted_columns"])
        (crossed if drift_share >= settings.monitor_drift_share else calm).append(f"data drift: {text}")
    live_ratio = error.get("rmse_ratio") if error else None
    persistence_ratio = error.get("persistence_ratio") if error else None
    if live_ratio is not None and not math.isnan(live_ratio):
        high = live_ratio >= settings.monitor_error_ratio
        (crossed if high else calm).append(f"live error {live_ratio:.2f}× the champion's holdout RMSE "
                                           f"({'≥' if high else '<'} {settings.monitor_error_ratio:.2f}×)")
    if persistence_ratio is not None and not math.isnan(persistence_ratio):
        high = persistence_ratio >= settings.monitor_persistence_ratio
        (crossed if high else calm).append(f"live RMSE {persistence_ratio:.3f}× persistence's "
                                           f"({'≥' if high else '<'} {settings.monitor_persistence_ratio:.2f}×)")

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
            "reason": reason, "crossed": crossed, "debounced_by": blockers}


# ---- one check, end to end -------------------------------------------------------------------
def run_monitor(active_training_runs: int = 0, dag_run_id: str = "", dry_run: bool = False) -> dict[str, Any]:
    """Check the champion against the latest snapshot; write, record and return the decision.

    ``dry_run`` (``make demo``) reports what would happen but never counts as a trigger.
    """
    from stockops.ingest import store_for
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
                    "persistence_ratio": None, "triggered": False, "crossed": [], "debounced_by": [],
                    "reason": f"{missing}: nothing to monitor (a model must pass the gate first)"}
        log.info("MONITOR: %s", decision["reason"])
        return _record(settings, decision, folder=None, snapshot=None)

    frame = store.load(snapshot)
    days = settings.monitor_current_days
    current = current_features(frame, days)
    reference = _champion_reference(champion.run_id)
    drift, evidently_snapshot = (None, None)
    if reference is not None:
        drift, evidently_snapshot = assess_drift(reference, current, settings.monitor_drift_threshold,
                                                 settings.monitor_drift_share)
    else:
        log.warning("champion v%s has no recorded training window (%s): data drift is not checked; the next "
                    "promotion records one", champion.version, REFERENCE_ARTIFACT)
    model_uri = registry.model_uri(settings.model_name, champion.version)
    market = market_closes(settings, frame)
    error = live_error(frame, days, champion.version, settings.prediction_log,
                       replay=lambda ends: replay_forecasts(model_uri, frame, market, ends))
    error.update(_holdout_ratio(champion.run_id, error))
    decision = decide(drift, error, settings, active_training_runs=active_training_runs,
                      previous_trigger=None if dry_run else last_trigger(settings.monitor_log), now=started)
    if dry_run and decision["triggered"]:
        decision.update(triggered=False, reason=f"dry run, would trigger: {decision['reason']}")
    decision = {**base, **decision, "champion_version": str(champion.version), "champion_run_id": champion.run_id,
                "snapshot_hash": snapshot.hash, "current_window": [current["Date"].iloc[0].date().isoformat(),
                                                                   current["Date"].iloc[-1].date().isoformat()],
                "reference_window": None if reference is None else [
                    reference["Date"].iloc[0].date().isoformat(), reference["Date"].iloc[-1].date().isoformat()],
                "reference_rows": 0 if reference is None else len(reference),
                "drift": drift, "live_error": error,
                "thresholds": {k: getattr(settings, k) for k in (
                    "monitor_current_days", "monitor_drift_threshold", "monitor_drift_share",
                    "monitor_error_ratio", "monitor_persistence_ratio", "monitor_cooldown_h")}}
    folder = settings.monitoring_dir / f"{started.strftime('%Y%m%dT%H%M%S%fZ')}-{snapshot.last_date}"
    decision = _record(settings, decision, folder=folder, snapshot=evidently_snapshot)
    log.info("MONITOR: %s\n%s", decision["reason"], json.dumps(
        {k: decision[k] for k in ("drift_share", "drifted_columns", "live_rmse_ratio", "persistence_ratio",
                                  "triggered")}))
    return decision


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
    """Write decision JSON (+ Evidently HTML), append to the decision log, log both to MLflow."""
    import mlflow

    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        decision["decision_path"] = str(folder / "decision.json")
        decision["report"] = None
        if snapshot is not None:
            decision["report"] = str(folder / "drift_report.html")
            snapshot.save_html(decision["report"])
        Path(decision["decision_path"]).write_text(json.dumps(decision, indent=2, default=str))
    with mlflow.start_run(experiment_id=registry.experiment_id(settings, settings.monitoring_experiment),
                          run_name=f"monitor-{decision['checked_at'][:10]}") as run:
        mlflow.set_tags({"triggered": str(decision["triggered"]), "reason": decision["reason"][:5000],
                         "champion_version": decision.get("champion_version", "none"),
                         "airflow_dag_run_id": decision["dag_run_id"]})
        mlflow.log_metrics({k: float(decision[k]) for k in ("drift_share", "live_rmse_ratio", "persistence_ratio")
                            if decision.get(k) is not None} | {"triggered": float(decision["triggered"])})
        if folder is not None:
            mlflow.log_artifacts(str(folder), "monitor")
        else:
            mlflow.log_dict(decision, "monitor/decision.json")
    decision["mlflow_run_id"] = run.info.run_id
    audit.record(settings.monitor_log, "monitor", **{k: v for k, v in decision.items() if k not in ("drift",)})
    if folder is not None:
        log.info("monitor decision: %s\nEvidently report: %s", decision["decision_path"], decision["report"])
    return decision


# ---- Airflow glue ------------------------------------------------------------------------------
def monitor_task(dag_run_id: str = "") -> dict[str, Any]:
    """``stock_monitor``'s check: counts queued/running training runs through the Task SDK, then decides."""
    from airflow.sdk import get_current_context

    ti = get_current_context()["ti"]
    active = ti.get_dr_count(dag_id=TRAINING_DAG_ID, states=["queued", "running"])
    return run_monitor(active_training_runs=active, dag_run_id=dag_run_id)


def should_retrain(decision: dict) -> bool:
    """Short-circuit: go on to the trigger only if the check decided to retrain."""
    if decision["triggered"]:
        log.warning("RETRAIN: %s (report %s)", decision["reason"], decision.get("report"))
    else:
        log.info("no retrain: %s", decision["reason"])
    return bool(decision["triggered"])
