"""Monitoring that closes the loop: is the champion still fit for the data it now sees?

Each check (the ``stock_monitor`` DAG, or ``make demo``) compares two things and decides:

* **data drift** — Evidently's normed Wasserstein distance on the model's input features (returns,
  volatility, intraday range, volume) of every ticker, computed with numpy, the champion's training
  window (recorded with the model at training time) against the last ``monitor_current_days`` trading
  days; the report tabulates every ticker, nearest drift first, with Evidently's plots of the first
  (:mod:`stockops.monitoring.drift`);
* **live error** — the champion's forecasts for those days against the closes that followed, as
  RMSE, as a ratio to the champion's own holdout RMSE (both in % of price, so a higher price
  level is not mistaken for error), as a ratio to persistence on the same days, and the coverage
  of its 50 % and 90 % intervals;
* **calibration** — the live scorecard (:mod:`stockops.monitoring.scorecard`): every ticker's own
  forecasts by the champion, realized, per ticker and pooled: interval coverage, 95 %/99 % VaR
  breaches with the Kupiec test, QLIKE and pinball loss against HARX-GKO on the same pairs; and
  (``online_calibration``) the champion's online calibration state: its days, its market-wide and
  each ticker's variance factor and 90 % interval offsets.

The monitor trusts only the platform's own records. Its first step,
:func:`~stockops.monitoring.forecasts.score_watchlist`, forecasts the next session of every watchlist ticker
with the champion loaded from the registry, on that ticker's latest published (validated, hash-checked) snapshot, and appends one record per
(ticker, day, model version) to ``<home>/monitoring/forecasts.jsonl``. Before it forecasts, it brings the
champion's **online calibration** up to date (:mod:`~stockops.monitoring.online`): the state at
``monitoring/online_calibration`` (a pointer of the records' database: a variance scale and quantile offsets per ticker, which the bento
applies to its answers) takes every day realized since its last, from the champion's own records; the
recorded forecasts are then corrected with it, as the bento serves them. Live error and calibration
join those records with the closes that later snapshots published. Until
``monitor_min_forecast_days`` of them are realized in the window (a fresh platform, a new
champion), the champion is replayed on the snapshot's days instead, and the reason says so. The
endpoint's log (``serving/predictions.jsonl``, rotated at its size cap with a per-version summary)
holds whatever clients sent — any ``as_of``, any closes — so it is counted as traffic and never scored.

The decision is a :class:`~stockops.contracts.MonitorRecord` (``drift_share``, ``drifted_columns``,
``live_rmse_ratio``, ``persistence_ratio``, ``scorecard``, ``triggered``, ``reason``, ...), kept as JSON beside
the Evidently HTML report (the scorecard also on its own, ``scorecard.json``), appended to the decision log and
logged to MLflow (the pooled scorecard as ``scorecard_*`` metrics, the online calibration's market-wide
variance factor and days as ``online_*``); later tasks get its
:class:`~stockops.contracts.MonitorDecision`. A crossed threshold triggers a retrain unless one is queued or
running, or the last trigger is within the cool-down: one drift episode, one retrain.

One job per module: :mod:`~stockops.monitoring.drift`, :mod:`~stockops.monitoring.forecasts` (the platform's
own forecast records), :mod:`~stockops.monitoring.online` (the champion's online calibration state),
:mod:`~stockops.monitoring.live_error`, :mod:`~stockops.monitoring.scorecard`,
:mod:`~stockops.monitoring.decision`; this package runs one check end to end (:func:`run_monitor`).

Evidently (~8 s to import) and TensorFlow are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockops import registry
from stockops.contracts import MonitorDecision, MonitorRecord
from stockops.core import audit
from stockops.core.settings import Settings
from stockops.model.drift_features import current_features
from stockops.monitoring.decision import (
    decide,
    last_proposal,
    last_trigger,
    rollback_proposal,
)
from stockops.monitoring.drift import assess_watchlist_drift, drift_inputs
from stockops.monitoring.forecasts import market_closes, market_series, own_forecasts, traffic_requests
from stockops.monitoring.live_error import live_error, replay_forecasts
from stockops.monitoring.online import online_metrics, online_summary, served_state

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
# The stock_monitor DAG file imports this module: numpy and pandas are imported inside the functions.

REFERENCE_ARTIFACT = "monitoring/reference_features.parquet"


THRESHOLDS = ("monitor_current_days", "monitor_drift_threshold", "monitor_drift_share", "monitor_error_ratio",
              "monitor_persistence_ratio", "monitor_cooldown_h", "monitor_min_forecast_days", "monitor_kupiec_p",
              "monitor_qlike_margin", "monitor_drift_tickers_share", "monitor_rollback_margin",
              "monitor_rollback_dm_t")  # the settings each decision records it was made under


def run_monitor(active_training_runs: int = 0, dag_run_id: str = "", dry_run: bool = False, active_proposals: int = 0,
                *, settings: Settings) -> MonitorRecord:
    """Check the champion against the latest snapshot; write, record and return the decision.

    ``dry_run`` (``make demo``) reports what would happen but never counts as a trigger.
    """
    from stockops.data import store_for

    started = datetime.now(UTC)
    registry.setup(settings)
    champion = registry.champion_version(settings)
    store = store_for(settings)
    snapshot = store.latest()
    checked_at = started.isoformat(timespec="seconds")
    if champion is None or snapshot is None:
        missing = "no champion yet" if champion is None else "no published snapshot yet"
        idle = MonitorRecord(
            checked_at=checked_at, ticker=settings.ticker, dag_run_id=dag_run_id, dry_run=dry_run, drift_share=None,
            drifted_columns=[], live_rmse_ratio=None, persistence_ratio=None, triggered=False,
            reason=f"{missing}: nothing to monitor (a model must pass the gate first)", crossed=[], debounced_by=[],
            scorecard=None, rollback={"propose": False, "reason": "no champion to compare"})
        log.info("MONITOR: %s", idle.reason)
        return _record(settings, idle, folder=None, report=None)

    frame = store.load(snapshot)
    days = settings.monitor_current_days
    frames = {settings.ticker: frame, **latest_frames(settings, skip=(settings.ticker,))}
    reference = _champion_reference(champion.run_id)
    references, currents, not_checked = drift_inputs(reference, frames, days, settings.ticker)
    drift, drift_report = (None, None)
    if currents:
        drift, drift_report = assess_watchlist_drift(references, currents, settings.monitor_drift_threshold,
                                                     settings.monitor_drift_share, settings.monitor_drift_tickers_share)
        drift["not_checked"] = not_checked
    else:
        log.warning("champion v%s: no ticker's drift can be checked (%s): %s", champion.version, REFERENCE_ARTIFACT,
                    "; ".join(f"{t}: {why}" for t, why in not_checked.items()))
    current = current_features(frame, days)
    model_uri = registry.model_uri(settings.model_name, champion.version)
    market = market_closes(market_series(settings), frame)
    records = audit.read(settings.forecast_log)  # read once: it holds every ticker's days of every version
    error = live_error(frame, days, own_forecasts(settings.forecast_log, settings.ticker, champion.version, records),
                       settings.monitor_min_forecast_days,
                       replay=lambda ends: replay_forecasts(model_uri, frame, market, ends, settings.ticker))
    error.update(_holdout_ratio(champion.run_id, error))
    scorecard = live_scorecard(settings, str(champion.version), frames, records)
    comparison = previous_comparison(settings, str(champion.version), frames, records)
    decision = decide(drift, error, settings, active_training_runs=active_training_runs,
                      previous_trigger=None if dry_run else last_trigger(settings.monitor_log), now=started,
                      scorecard=scorecard)
    rollback = rollback_proposal(comparison, settings, previous_proposal=None if dry_run else
                                 last_proposal(settings.monitor_log, comparison), now=started,
                                 active_proposals=active_proposals)
    triggered, reason = decision["triggered"], decision["reason"]
    if dry_run and triggered:
        triggered, reason = False, f"dry run, would trigger: {reason}"
    window = references.get(settings.ticker)  # the model ticker's own training window
    record = MonitorRecord(
        checked_at=checked_at, ticker=settings.ticker, dag_run_id=dag_run_id, dry_run=dry_run,
        drift_share=decision["drift_share"], drifted_columns=decision["drifted_columns"],
        live_rmse_ratio=decision["live_rmse_ratio"], persistence_ratio=decision["persistence_ratio"],
        triggered=triggered, reason=reason, crossed=decision["crossed"], debounced_by=decision["debounced_by"],
        scorecard=decision["scorecard"], rollback=rollback,
        champion_version=str(champion.version), champion_run_id=champion.run_id, live_error_source=error["source"],
        traffic_requests=traffic_requests(settings.prediction_log, champion.version), snapshot_hash=snapshot.hash,
        current_window=[current["Date"].iloc[0].date().isoformat(), current["Date"].iloc[-1].date().isoformat()],
        reference_window=None if window is None else [window["Date"].iloc[0].date().isoformat(),
                                                      window["Date"].iloc[-1].date().isoformat()],
        reference_rows=len(references.get(settings.ticker, ())), drift=drift, live_error=error,
        thresholds={k: getattr(settings, k) for k in THRESHOLDS})
    folder = settings.monitoring_dir / f"{started.strftime('%Y%m%dT%H%M%S%fZ')}-{snapshot.last_date}"
    record = _record(settings, record, folder=folder, report=drift_report)
    log.info("MONITOR: %s\n%s", record.reason, json.dumps(
        {"drift_share": record.drift_share, "drifted_columns": record.drifted_columns,
         "live_rmse_ratio": record.live_rmse_ratio, "persistence_ratio": record.persistence_ratio,
         "triggered": record.triggered}))
    return record


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
    """The calibration scorecard of champion ``version`` on every watchlist ticker's own forecasts, with what its
    online calibration state says (``online_calibration``: :func:`~stockops.monitoring.online.online_summary`).

    ``frames``: the tickers' latest published snapshots (:func:`latest_frames`); ``records``: the
    forecast log, read here unless given.
    """
    from stockops.monitoring.scorecard import calibration_scorecard

    records = audit.read(settings.forecast_log) if records is None else records
    mine = [e for e in records if str(e.get("model_version")) == str(version)]
    card = calibration_scorecard(mine, frames, version, settings.monitor_current_days,
                                 settings.monitor_min_forecast_days)
    return {**card, "online_calibration": online_summary(served_state(settings, version), version)}


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


def _record(settings: Settings, record: MonitorRecord, folder: Path | None, report) -> MonitorRecord:
    """Write decision JSON (+ scorecard JSON, the drift report's HTML), append to the decision log, log both to MLflow.

    Returns ``record`` with what recording it added: the files' paths, the MLflow run.
    """
    import mlflow

    from stockops.monitoring.scorecard import pooled_metrics

    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        record = replace(record, decision_path=str(folder / "decision.json"),
                         report=None if report is None else str(folder / "drift_report.html"),
                         scorecard_path=None if record.scorecard is None else str(folder / "scorecard.json"))
        if report is not None:
            report.save_html(record.report)
        if record.scorecard_path is not None:
            Path(record.scorecard_path).write_text(json.dumps(record.scorecard, indent=2, default=str))
        Path(str(record.decision_path)).write_text(json.dumps(record.to_record(), indent=2, default=str))
        from stockops.monitoring.reports import share_report_files

        share_report_files(settings, [Path(p) for p in (record.decision_path, record.report, record.scorecard_path)
                                      if p])
    with mlflow.start_run(experiment_id=registry.experiment_id(settings, settings.monitoring_experiment),
                          run_name=f"monitor-{record.checked_at[:10]}") as run:
        mlflow.set_tags({"triggered": str(record.triggered), "reason": record.reason[:5000],
                         "champion_version": record.champion_version or "none",
                         "airflow_dag_run_id": record.dag_run_id})
        ratios = {"drift_share": record.drift_share, "live_rmse_ratio": record.live_rmse_ratio,
                  "persistence_ratio": record.persistence_ratio}
        mlflow.log_metrics({k: float(v) for k, v in ratios.items() if v is not None}
                           | {"triggered": float(record.triggered)} | pooled_metrics(record.scorecard)
                           | online_metrics(record.scorecard))
        # The drift report (4-7 MB: Evidently's page with at most 10 tickers' plots) is stored once, in the report
        # folder (the run names it); MLflow keeps the decision and the scorecard.
        if record.report:
            mlflow.set_tag("evidently_report", record.report)
        mlflow.log_dict(record.to_record(), "monitor/decision.json")
        if record.scorecard is not None:
            mlflow.log_dict(record.scorecard, "monitor/scorecard.json")
    record = replace(record, mlflow_run_id=run.info.run_id)
    audit.record(settings.monitor_log, "monitor", **{k: v for k, v in record.to_record().items() if k != "drift"})
    if folder is not None:
        log.info("monitor decision: %s\nEvidently report: %s", record.decision_path, record.report)
        pruned = prune_reports(settings.monitoring_dir, settings.monitor_keep_reports, settings.monitor_keep_days)
        if pruned:
            log.info("pruned %d monitor report folder(s) beyond %d or older than %g days: %s", len(pruned),
                     settings.monitor_keep_reports, settings.monitor_keep_days, ", ".join(p.name for p in pruned))
    return record


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
