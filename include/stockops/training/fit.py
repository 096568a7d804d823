"""Step 3: train one global LSTM risk forecaster on the panel, logged to MLflow with its input example."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from stockops import registry
from stockops.contracts import (
    Features,
    Trained,
)
from stockops.core.settings import Settings
from stockops.training.common import mlflow_run, model_config
from stockops.training.features import load_panel

log = logging.getLogger(__name__)


def train_candidate(features: Features, epochs: int | None = None, reason: str | None = None, dag_run_id: str = "",
                    report: str | None = None, *, settings: Settings) -> Trained:
    """Train the candidate in a new MLflow run: params, per-epoch losses, dataset lineage, the pyfunc model.

    ``reason``: why this run (kept in MLflow and the audit log); ``report``: the monitor report behind it.
    (``reason`` defaults to None: Airflow reserves the name as a context key and allows no other default.)
    """
    import mlflow

    from stockops.model.portable.forecaster import OHLCV_INPUT
    from stockops.model.risk_model import train_risk

    experiment_id = registry.setup(settings)
    config = model_config(settings, epochs=epochs, window=features.window)
    frames, panel, split = load_panel(settings, features)
    snapshot = features.summary
    reason = reason or ""

    with mlflow_run(experiment_id=experiment_id, run_name=f"train-{snapshot.last_date}") as run:
        stale = registry.fail_stale_runs(settings, keep_run_id=run.info.run_id)
        if stale:
            log.warning("marked FAILED in MLflow the runs whose task died: %s", ", ".join(stale))
        mlflow.set_tags({"snapshot_hash": snapshot.hash, "snapshot_last_date": snapshot.last_date,
                         "logical_date": snapshot.logical_date, "ticker": settings.ticker,
                         "tickers": ",".join(frames), "reason": reason or "unspecified",
                         "airflow_dag_run_id": dag_run_id, "profile": settings.train_profile,
                         "trigger_report": report or "none"})
        mlflow.log_params({**asdict(config), "model": "global LSTM risk forecaster",
                           "loss": "gaussian nll (qlike)", "target": "next-day log return distribution",
                           "tickers": len(frames), "market": settings.market or "none",
                           **{f"{k}_samples": v for k, v in features.sizes.items()},
                           "val_start": features.val_start, "test_start": features.test_start})
        log_price_inputs(features, frames)
        reference = Path(features.path).with_name("reference_features.parquet")
        if reference.exists():
            mlflow.log_artifact(str(reference), "monitoring")

        def on_epoch_end(epoch: int, logs: dict) -> None:
            mlflow.log_metrics({"train_loss": float(logs["loss"]), "val_loss": float(logs["val_loss"])},
                               step=epoch + 1)

        trained = train_risk(panel, split, config, on_epoch_end=on_epoch_end)
        calibration = trained.forecaster.calibration
        mlflow.log_metrics({"train_seconds": trained.seconds, "best_epoch": trained.best_epoch,
                            "epochs_run": len(trained.history["loss"]), "shrink": calibration.shrink,
                            "variance_scale": calibration.variance_scale})
        folder = trained.forecaster.save(Path(features.path).with_name(f"candidate-{run.info.run_id}"))
        example_ticker = settings.ticker if settings.ticker in frames else next(iter(frames))
        example = input_example(frames, example_ticker, calibration.history, settings.market)[list(OHLCV_INPUT)]
        info = registry.log_forecaster(folder, example)
        history_path = folder / "history.json"
        history_path.write_text(json.dumps(trained.history))
        log.info("trained %s in %.1f s (best epoch %d of %d; validation calibration: variance x%.3f, mean shrink "
                 "%.3f); MLflow run %s, model %s", config, trained.seconds, trained.best_epoch,
                 len(trained.history["loss"]), calibration.variance_scale, calibration.shrink, run.info.run_id,
                 info.model_uri)
    return Trained(features=features, run_id=run.info.run_id, model_uri=info.model_uri, model_path=str(folder),
                   history_path=str(history_path), train_seconds=float(trained.seconds), config=asdict(config),
                   reason=reason)


def log_price_inputs(features: Features, frames: dict) -> None:
    """Each ticker's snapshot as an MLflow dataset input of the run, in one call. Every frame has the columns of the
    one table they came from, so the schema is inferred once (MLflow infers it per dataset, ~60 ms a ticker)."""
    import mlflow

    entries = features.snapshots.entries
    datasets = [mlflow.data.from_pandas(frames[ticker], source=entry.path, name=f"{ticker}-prices",
                                        digest=entry.hash[:36]) for ticker, entry in entries.items()]
    if not datasets:
        return
    schema = datasets[0].schema
    for dataset in datasets[1:]:
        dataset.schema = schema  # a cached_property: this sets its cached value
    mlflow.log_inputs(datasets=datasets, contexts=["training"] * len(datasets),
                      tags_list=[{"snapshot_hash": entry.hash, "ticker": ticker} for ticker, entry in entries.items()])


def input_example(frames: dict, ticker: str, rows: int, market: str | None):
    """The last ``rows`` OHLCV rows of ``ticker`` with the market reference's closes (``Market``) beside them."""
    frame = frames[ticker].iloc[-rows:].reset_index(drop=True)
    from stockops.model.portable.risk_inputs import align_market

    closes = align_market(frame["Date"], frames.get(market) if market else None)
    return frame.assign(Market=frame["Close"] if closes is None else closes)
