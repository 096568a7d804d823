"""Continuous training, as the plain steps the ``stock_train`` DAG wires together.

load the latest snapshot -> features -> train a candidate -> evaluate candidate, champion and
baselines on the same holdout -> register (alias ``challenger``) -> gate -> promote (``champion``).

Each step takes and returns small JSON-able dicts (Airflow XComs) and works without Airflow.
One MLflow run spans train, evaluate and register (later steps resume it by id). Heavy
libraries are imported inside the functions: DAG files import this module.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stockops import audit, registry
from stockops.config import Settings, get_settings

log = logging.getLogger(__name__)

SMALL_PROFILE = {"units": 8, "epochs": 3, "patience": 2}


def _model_config(settings: Settings, epochs: Any = None, window: Any = None):
    from stockops.model import ModelConfig

    base = ModelConfig(window=int(window or settings.train_window), epochs=int(epochs or settings.train_epochs))
    if settings.train_profile == "small":
        overrides = {**SMALL_PROFILE, "epochs": min(base.epochs, SMALL_PROFILE["epochs"])}
        return ModelConfig(**{**asdict(base), **overrides})
    return base


# ---- the steps -------------------------------------------------------------------------------
def load_snapshot() -> dict:
    """The latest published snapshot's manifest entry; fails plainly if nothing was published yet."""
    from stockops.ingest import store_for

    settings = get_settings()
    entry = store_for(settings).latest()
    if entry is None:
        raise FileNotFoundError(f"no published {settings.ticker} snapshot under {settings.data_dir}: "
                                "run stock_ingest first")
    log.info("training on snapshot %s: %d rows %s..%s", entry.hash[:12], entry.rows, entry.first_date, entry.last_date)
    return asdict(entry)


def prepare_features(snapshot: dict, window: Any = None) -> dict:
    """Closes of the snapshot and the chronological split, saved for the training step."""
    import numpy as np

    from stockops.data.store import SnapshotEntry, SnapshotStore
    from stockops.features import build_dataset
    from stockops.monitoring import reference_features

    settings = get_settings()
    entry = SnapshotEntry.from_dict(snapshot)
    frame = SnapshotStore(settings.data_dir, settings.ticker).load(entry)
    closes = frame["Close"].to_numpy(dtype="float64")
    config = _model_config(settings, window=window)
    dataset = build_dataset(closes, config.window)
    folder = settings.training_dir / f"{entry.hash[:12]}-w{config.window}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "features.npz"
    np.savez(path, closes=closes, dates=frame["Date"].to_numpy(dtype="datetime64[D]"),
             train=dataset.split.train, val=dataset.split.val, test=dataset.split.test)
    # The monitor's drift reference: the features of the days training saw (last target day included).
    reference_features(frame, int(dataset.split.train[-1]) + 1).to_parquet(folder / "reference_features.parquet")
    sizes = {"train": len(dataset.split.train), "val": len(dataset.split.val), "test": len(dataset.split.test)}
    log.info("features: window %d, split %s, scaler (train only) x=%.4g±%.4g y=%.4g±%.4g -> %s", config.window, sizes,
             dataset.x_scaler.mean, dataset.x_scaler.std, dataset.y_scaler.mean, dataset.y_scaler.std, path)
    return {"snapshot": snapshot, "features_path": str(path), "window": config.window, "sizes": sizes}


def _load_features(path: str):
    import numpy as np

    data = np.load(path, allow_pickle=False)
    return data["closes"], data["dates"], data["train"], data["val"], data["test"]


def train_candidate(features: dict, epochs: Any = None, trigger_reason: str = "", dag_run_id: str = "",
                    trigger_report: str = "") -> dict:
    """Train the candidate in a new MLflow run: params, per-epoch losses, dataset lineage, the model."""
    import mlflow
    from mlflow.models import infer_signature

    from stockops.features import build_dataset, raw_windows
    from stockops.model import predict_prices, train

    settings = get_settings()
    experiment_id = registry.setup(settings)
    config = _model_config(settings, epochs=epochs, window=features["window"])
    closes, dates, *_ = _load_features(features["features_path"])
    dataset = build_dataset(closes, config.window)
    snapshot = features["snapshot"]

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{snapshot['last_date']}") as run:
        mlflow.set_tags({"snapshot_hash": snapshot["hash"], "snapshot_last_date": snapshot["last_date"],
                         "logical_date": snapshot["logical_date"], "ticker": settings.ticker,
                         "reason": trigger_reason or "unspecified", "airflow_dag_run_id": dag_run_id,
                         "profile": settings.train_profile, "trigger_report": trigger_report or "none"})
        mlflow.log_params({**asdict(config), "features": "relative_log_window", "target": "next_log_return",
                           "train_rows": len(dataset.split.train), "val_rows": len(dataset.split.val),
                           "test_rows": len(dataset.split.test), "snapshot_rows": snapshot["rows"]})
        _log_dataset(snapshot, dates, closes)
        reference = Path(features["features_path"]).with_name("reference_features.parquet")
        mlflow.log_artifact(str(reference), "monitoring")

        def on_epoch_end(epoch: int, logs: dict) -> None:
            mlflow.log_metrics({"train_loss": float(logs["loss"]), "val_loss": float(logs["val_loss"])},
                               step=epoch + 1)

        trained = train(closes, dataset, config, on_epoch_end=on_epoch_end)
        mlflow.log_metrics({"train_seconds": trained.seconds, "best_epoch": trained.best_epoch, "shrink": trained.shrink,
                            "epochs_run": len(trained.history["loss"])})
        example = raw_windows(closes, config.window, dataset.split.val[:5]).astype("float32")
        signature = infer_signature(example, predict_prices(trained.model, example).reshape(-1, 1).astype("float32"))
        info = mlflow.keras.log_model(trained.model, name="model", signature=signature,
                                      pip_requirements=_pip_requirements())
        model_path = Path(features["features_path"]).with_name(f"candidate-{run.info.run_id}.keras")
        trained.model.save(model_path)
        history_path = model_path.with_suffix(".history.json")
        history_path.write_text(json.dumps(trained.history))
        log.info("trained %s in %.1f s (best epoch %d of %d, shrink %.3f); MLflow run %s, model %s", config,
                 trained.seconds, trained.best_epoch, len(trained.history["loss"]), trained.shrink, run.info.run_id,
                 info.model_uri)
        if trained.shrink == 0.0:
            log.warning("the validation part shows no usable signal in the LSTM's return forecasts (shrink 0): "
                        "this candidate forecasts 'no change', i.e. it is persistence")
    return {**features, "run_id": run.info.run_id, "model_uri": info.model_uri, "model_path": str(model_path),
            "history_path": str(history_path), "train_seconds": trained.seconds, "config": asdict(config),
            "reason": trigger_reason}


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("tensorflow-cpu", "keras", "numpy")]


def _log_dataset(snapshot: dict, dates, closes) -> None:
    import mlflow
    import pandas as pd

    frame = pd.DataFrame({"Date": dates, "Close": closes})
    dataset = mlflow.data.from_pandas(frame, source=snapshot["path"], name=f"{snapshot['ticker']}-prices",
                                      digest=snapshot["hash"][:36])
    mlflow.log_input(dataset, context="training", tags={"snapshot_hash": snapshot["hash"]})


def evaluate_models(trained: dict) -> dict:
    """Score candidate, champion (re-scored on today's holdout) and baselines; log metrics and plots."""
    import keras
    import mlflow

    from stockops.evaluation import score_all
    from stockops.features import raw_windows
    from stockops.model import model_window, predict_prices

    settings = get_settings()
    registry.setup(settings)
    closes, dates, _, _, test = _load_features(trained["features_path"])
    candidate = keras.models.load_model(trained["model_path"])
    forecasts = {"candidate": predict_prices(candidate, raw_windows(closes, model_window(candidate), test))}
    champion = registry.champion_version(settings)
    champion_info = None
    if champion is not None:
        champion_model = registry.load_model(registry.model_uri(settings.model_name, alias=registry.CHAMPION))
        window = model_window(champion_model)
        if test[0] >= window - 1:
            forecasts["champion"] = predict_prices(champion_model, raw_windows(closes, window, test))
            champion_info = {"version": champion.version, "run_id": champion.run_id}
        else:
            log.warning("champion v%s needs %d closes, the holdout starts too early; not re-scored",
                        champion.version, window)
    scores = score_all(closes, test, forecasts)

    with mlflow.start_run(run_id=trained["run_id"]):
        for name, metrics in scores.items():
            prefix = "" if name == "candidate" else f"{name}_"
            mlflow.log_metrics({f"{prefix}{k}": v for k, v in metrics.items()})
        if champion_info:
            mlflow.set_tag("champion_version_compared", champion_info["version"])
        _log_plots(trained, closes, dates, test, forecasts)
        _log_validation_link(trained["snapshot"])
    log.info("holdout (%d days, %s..%s):\n%s", len(test), dates[test[0] + 1], dates[test[-1] + 1],
             format_scores(scores))
    return {**trained, "scores": scores, "champion": champion_info,
            "holdout": {"days": len(test), "first": str(dates[test[0] + 1]), "last": str(dates[test[-1] + 1])}}


def format_scores(scores: dict[str, dict[str, float]]) -> str:
    lines = [f"{'model':<15} {'RMSE':>9} {'MAE':>9} {'MAPE %':>7} {'dir.acc':>7} {'RMSE/persist':>12}"]
    for name, m in scores.items():
        lines.append(f"{name:<15} {m['rmse']:>9.4f} {m['mae']:>9.4f} {m['mape']:>7.3f} "
                     f"{m['directional_accuracy']:>7.3f} {m['rmse_ratio']:>12.4f}")
    return "\n".join(lines)


def _log_plots(trained: dict, closes, dates, test, forecasts: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import numpy as np

    days = dates[test + 1]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.plot(days, closes[test + 1], label="actual close", color="black", linewidth=1.2)
    ax.plot(days, closes[test], label="persistence (tomorrow = today)", color="grey", linewidth=0.8, linestyle="--")
    for name, values in forecasts.items():
        ax.plot(days, values, label=f"{name} forecast", linewidth=0.9)
    ax.set_title("Next-day forecast vs actual on the holdout")
    ax.legend()
    fig.autofmt_xdate()
    mlflow.log_figure(fig, "plots/forecast_vs_actual.png")
    plt.close(fig)

    history = json.loads(Path(trained["history_path"]).read_text())
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], marker="o", label="training loss")
    ax.plot(epochs, history["val_loss"], marker="o", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (standardised log return)")
    ax.set_title("Loss curve (best weights restored)")
    ax.legend()
    mlflow.log_figure(fig, "plots/loss_curve.png")
    plt.close(fig)


def _log_validation_link(snapshot: dict) -> None:
    import mlflow

    settings = get_settings()
    mlflow.log_dict({"snapshot_hash": snapshot["hash"], "validation_result": snapshot["validation_path"],
                     "data_docs": str(settings.data_docs_dir / "index.html")}, "data_validation.json")


def register_candidate(evaluated: dict) -> dict:
    """Register the candidate as a new version with alias ``challenger`` and lineage tags."""
    import mlflow

    settings = get_settings()
    registry.setup(settings)
    version = registry.register(settings, evaluated["model_uri"], snapshot_hash=evaluated["snapshot"]["hash"],
                                logical_date=evaluated["snapshot"]["logical_date"], run_id=evaluated["run_id"],
                                rmse_ratio=f"{evaluated['scores']['candidate']['rmse_ratio']:.4f}")
    registry.set_alias(settings, registry.CHALLENGER, version.version)
    with mlflow.start_run(run_id=evaluated["run_id"]):
        mlflow.set_tag("registered_version", version.version)
    log.info("registered %s v%s (alias challenger)", settings.model_name, version.version)
    return {**evaluated, "version": version.version, "model_name": settings.model_name}


def gate_candidate(registered: dict, force_promote: Any = False, trigger_reason: str = "") -> bool:
    """Apply the gate; record the decision on the version, in the run and in the audit log.

    Returns whether to continue to the deploy path. A refusal is a normal outcome, not an error.
    """
    import mlflow

    from stockops.gate import decide

    settings = get_settings()
    registry.setup(settings)
    scores = registered["scores"]
    forced = str(force_promote).lower() in ("true", "1", "yes")
    decision = decide(scores["candidate"]["rmse"], scores["persistence"]["rmse"],
                      scores.get("champion", {}).get("rmse"), tolerance=settings.gate_tolerance,
                      margin=settings.gate_margin, force=forced, force_reason=trigger_reason)
    registry.tag_version(settings, registered["version"], model_name=registered["model_name"],
                         gate_decision=decision.label, gate_reason=decision.reason[:5000])
    with mlflow.start_run(run_id=registered["run_id"]):
        mlflow.set_tags({"gate_decision": decision.label})
    audit.record(settings.audit_log, "gate", ticker=settings.ticker, model=registered["model_name"], version=registered["version"],
                 decision=decision.label, reason=decision.reason, run_id=registered["run_id"],
                 snapshot_hash=registered["snapshot"]["hash"], request_reason=trigger_reason)
    if decision.promote:
        log.info("GATE: %s", decision.reason)
    else:
        log.warning("GATE: %s. The deploy path stops here; the champion is unchanged.", decision.reason)
        if registry.champion_version(settings) is None:
            log.warning("No model has passed the gate yet for %s: there is no champion, and nothing is "
                        "deployed rather than deploying a model that loses to persistence.", settings.ticker)
    return decision.promote


def promote_candidate(registered: dict, trigger_reason: str = "", dag_run_id: str = "") -> dict:
    """Move ``champion`` to the candidate's version and record the change."""
    from stockops.champion import record_change

    settings = get_settings()
    registry.setup(settings)
    previous = registry.champion_version(settings)
    registry.set_alias(settings, registry.CHAMPION, registered["version"])
    decision = registry.get_version(settings, registered["version"]).tags.get("gate_decision", "")
    entry = record_change(settings, "promotion", from_version=previous.version if previous else None,
                          to_version=registered["version"], reason=trigger_reason or "gate passed",
                          dag_run_id=dag_run_id, decision=decision, run_id=registered["run_id"],
                          snapshot_hash=registered["snapshot"]["hash"])
    registry.tag_version(settings, registered["version"], promoted_at=entry["at"])
    log.info("champion: %s v%s -> v%s", settings.model_name, previous.version if previous else "none",
             registered["version"])
    return {"model_name": settings.model_name, "version": registered["version"],
            "previous": previous.version if previous else None}


def train_in_process(trigger_reason: str = "in-process run", epochs: Any = None, window: Any = None,
                     force_promote: bool = False) -> dict:
    """The whole ``stock_train`` chain without Airflow (used by ``make demo``), build and deploy included."""
    settings = get_settings()
    registered = register_candidate(evaluate_models(train_candidate(
        prepare_features(load_snapshot(), window=window), epochs=epochs, trigger_reason=trigger_reason)))
    promoted = gate_candidate(registered, force_promote=force_promote, trigger_reason=trigger_reason)
    deployed = None
    if promoted:
        from stockops.serving import build_candidate_bento, deploy_candidate

        deployed = deploy_candidate(build_candidate_bento(registered), trigger_reason=trigger_reason)
        promote_candidate(deployed, trigger_reason=trigger_reason)
    decision = next(e for e in reversed(audit.read(settings.audit_log)) if e["event"] == "gate")
    return {**registered, "promoted": promoted, "decision": decision, "deploy": deployed and deployed["deploy"]}
