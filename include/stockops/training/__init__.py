"""Continuous training, as the plain steps the ``stock_train`` DAG wires together.

load the latest snapshot of every watchlist ticker -> features (one panel, split by date) ->
train one global LSTM risk forecaster -> evaluate candidate, champion and the classical
baselines (persistence, GARCH-N/t, EWMA, HAR-GK, HARX-GKO) on the same (ticker, day) pairs ->
register (alias ``challenger``) -> gate -> promote (``champion``).

Each step takes and returns a typed contract (:mod:`stockops.contracts`: ``Snapshots`` ->
``Features`` -> ``Trained`` -> ``Evaluated`` -> ``Registered`` -> ``GateDecision``), each later one
holding the earlier, and works without Airflow (the DAG turns them into XComs with
:func:`stockops.contracts.xcom_step`). The gate returns its decision; nothing reads it back from
a log. One MLflow run spans train, evaluate and register (later steps resume it by id). Heavy
libraries are imported inside the functions: DAG files import this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from stockops import registry
from stockops.contracts import (
    BASELINE,
    Baseline,
    ChampionCompared,
    Evaluated,
    Features,
    GateDecision,
    Holdout,
    Promoted,
    Registered,
    Snapshots,
    SnapshotSummary,
    Trained,
)
from stockops.core import audit
from stockops.core.settings import Settings, get_settings

log = logging.getLogger(__name__)

SMALL_PROFILE = {"window": 20, "units": 8, "dense": 8, "epochs": 8, "patience": 2}
CANDIDATE = "candidate"
CHAMPION = "champion"
REFERENCE = "harx_gko"  # the strongest classical baseline: the gate's floor and the DM reference
HOLDOUT_FILE = "holdout-{model}.parquet"  # beside the features: each scored model's holdout forecasts


def _model_config(settings: Settings, epochs: int | None = None, window: int | None = None):
    from stockops.model.risk_model import RiskModelConfig

    base = RiskModelConfig(window=int(window or settings.train_window), epochs=int(epochs or settings.train_epochs))
    if settings.train_profile == "small":
        overrides = {**SMALL_PROFILE, "epochs": min(base.epochs, SMALL_PROFILE["epochs"])}
        if window:
            overrides["window"] = int(window)
        return RiskModelConfig(**{**asdict(base), **overrides})
    return base


@contextmanager
def _run(**start: Any) -> Iterator[Any]:
    """``mlflow.start_run(**start)``, ended FAILED with the error as ``stockops.failed_reason`` if the step raises.

    (A task killed outright cannot end its run: the next training run marks it, see
    :func:`stockops.registry.fail_stale_runs`.)
    """
    import mlflow

    with mlflow.start_run(**start) as run:
        try:
            yield run
        except BaseException as exc:
            mlflow.set_tag(registry.FAILED_REASON, f"{type(exc).__name__}: {exc}"[:5000])
            raise


# ---- the steps -------------------------------------------------------------------------------
def load_snapshots() -> Snapshots:
    """The latest published snapshot of every watchlist ticker that has one; fails plainly if none has.

    ``summary`` sums them up (a hash over the tickers' hashes, the newest day) for the lineage
    tags that a single-series model used to carry; ``entries`` keeps every ticker's entry.
    """
    from stockops.data import store_for

    settings = get_settings()
    entries = {t: e for t in settings.tickers if (e := store_for(settings, t).latest()) is not None}
    if not entries:
        raise FileNotFoundError(f"no published snapshot of any of {', '.join(settings.tickers)} under "
                                f"{settings.data_dir}: run stock_ingest first")
    missing = [t for t in settings.tickers if t not in entries]
    if missing:
        log.warning("no published snapshot yet for %s: trained without them", ", ".join(missing))
    combined = hashlib.sha256("".join(f"{t}:{e.hash}\n" for t, e in sorted(entries.items())).encode()).hexdigest()
    latest = max(entries.values(), key=lambda e: e.last_date)
    summary = SnapshotSummary(hash=combined, tickers=list(entries), rows=sum(e.rows for e in entries.values()),
                              first_date=min(e.first_date for e in entries.values()), last_date=latest.last_date,
                              logical_date=latest.logical_date, path=str(settings.data_dir),
                              validation_path=str(settings.data_docs_dir / "index.html"))
    for ticker, e in entries.items():
        log.info("%s: snapshot %s, %d rows %s..%s", ticker, e.hash[:12], e.rows, e.first_date, e.last_date)
    return Snapshots(summary=summary, entries=entries)


def prepare_features(snapshots: Snapshots, window: int | None = None) -> Features:
    """The tickers' OHLCV in one long table and the date split, saved for the training step."""
    import pandas as pd

    from stockops.data import store_for
    from stockops.model.drift_features import reference_features
    from stockops.model.risk_model import build_panel, fraction_split

    settings = get_settings()
    frames = {t: store_for(settings, t).load(e) for t, e in snapshots.entries.items()}
    config = _model_config(settings, window=window)
    panel = build_panel(frames, market=settings.market)
    split = fraction_split(panel)
    folder = settings.training_dir / f"{snapshots.summary.hash[:12]}-w{config.window}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "panel.parquet"
    pd.concat([f.assign(ticker=t) for t, f in frames.items()], ignore_index=True).to_parquet(path)
    parts = split.parts(panel, config.window)
    sizes = {k: len(v) for k, v in parts.items()}
    # The monitor's drift reference: every ticker's features over the days training saw.
    references = [reference_features(frame, int((frame["Date"] < pd.Timestamp(split.val_start)).sum()) - 1)
                  .assign(ticker=ticker) for ticker, frame in frames.items()]
    pd.concat(references, ignore_index=True).to_parquet(folder / "reference_features.parquet")
    log.info("features: %d tickers, window %d, samples %s; validation from %s, test from %s -> %s", len(frames),
             config.window, sizes, split.val_start, split.test_start, path)
    return Features(snapshots=snapshots, path=str(path), window=config.window, sizes=sizes,
                    val_start=str(split.val_start), test_start=str(split.test_start))


def _load_frames(features: Features):
    """Frames per ticker and the split that ``prepare_features`` saved."""
    import numpy as np
    import pandas as pd

    from stockops.model.risk_model import DateSplit

    table = pd.read_parquet(features.path)
    frames = {t: g.drop(columns="ticker").reset_index(drop=True) for t, g in table.groupby("ticker", sort=False)}
    return frames, DateSplit(val_start=np.datetime64(features.val_start), test_start=np.datetime64(features.test_start))


def _load_panel(features: Features):
    """Frames per ticker, the panel and the split that ``prepare_features`` saved."""
    from stockops.model.risk_model import build_panel

    frames, split = _load_frames(features)
    return frames, build_panel(frames, market=get_settings().market), split


def train_candidate(features: Features, epochs: int | None = None, reason: str | None = None, dag_run_id: str = "",
                    report: str | None = None) -> Trained:
    """Train the candidate in a new MLflow run: params, per-epoch losses, dataset lineage, the pyfunc model.

    ``reason``: why this run (kept in MLflow and the audit log); ``report``: the monitor report behind it.
    (``reason`` defaults to None: Airflow reserves the name as a context key and allows no other default.)
    """
    import mlflow

    from stockops.model.portable.forecaster import OHLCV_INPUT
    from stockops.model.risk_model import train_risk

    settings = get_settings()
    experiment_id = registry.setup(settings)
    config = _model_config(settings, epochs=epochs, window=features.window)
    frames, panel, split = _load_panel(features)
    snapshot = features.summary
    reason = reason or ""

    with _run(experiment_id=experiment_id, run_name=f"train-{snapshot.last_date}") as run:
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
        for ticker, entry in features.snapshots.entries.items():
            mlflow.log_input(mlflow.data.from_pandas(frames[ticker], source=entry.path, name=f"{ticker}-prices",
                                                     digest=entry.hash[:36]),
                             context="training", tags={"snapshot_hash": entry.hash, "ticker": ticker})
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
        example = _example(frames, example_ticker, calibration.history, settings.market)[list(OHLCV_INPUT)]
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


def _example(frames: dict, ticker: str, rows: int, market: str | None):
    """The last ``rows`` OHLCV rows of ``ticker`` with the market reference's closes (``Market``) beside them."""
    frame = frames[ticker].iloc[-rows:].reset_index(drop=True)
    from stockops.model.portable.risk_inputs import align_market

    closes = align_market(frame["Date"], frames.get(market) if market else None)
    return frame.assign(Market=frame["Close"] if closes is None else closes)


def evaluate_models(trained: Trained) -> Evaluated:
    """Score candidate, champion (re-scored on today's holdout) and every baseline on the same (ticker, day) pairs."""
    import mlflow
    import numpy as np

    from stockops.model.portable.forecaster import Forecaster
    from stockops.model.risk_model import sample_dates, sample_returns, sample_windows
    from stockops.model.scoring import RiskForecast, score_panel

    settings = get_settings()
    registry.setup(settings)
    with _run(run_id=trained.run_id):
        frames, panel, split = _load_panel(trained.features)
        test = split.parts(panel, trained.features.window)["test"]
        tickers = np.array(panel.tickers)[test.ticker]
        dates = sample_dates(panel, test)
        returns = sample_returns(panel, test)

        def risk(f: dict) -> RiskForecast:
            return RiskForecast(f["variance"], f["quantiles"], f["point"])

        candidate = Forecaster.load(trained.model_path)
        windows = sample_windows(panel, test, candidate.calibration.window)
        forecasts = {CANDIDATE: risk(candidate.predict_windows(windows))}
        champion_info = _champion_forecasts(settings, panel, test, forecasts, risk)
        forecasts.update(_baseline_forecasts(frames, panel, split, tickers, dates, settings.market))
        _save_holdout(Path(trained.features.path).parent, forecasts, panel, test)
        scores = score_panel(forecasts, returns, tickers, dates, reference=REFERENCE)
        if CHAMPION in forecasts:
            versus = score_panel({k: forecasts[k] for k in (CANDIDATE, CHAMPION)}, returns, tickers, dates,
                                 reference=CHAMPION)[CANDIDATE]
            scores[CANDIDATE].update({k: v for k, v in versus.items() if k.startswith("dm_")})

        for name, entry in scores.items():
            prefix = "" if name == CANDIDATE else f"{name}_"
            mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in entry["pooled"].items()})
            mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in entry.items()
                                if k.startswith(("dm_", "qlike_ratio")) and np.isfinite(v)})
        mlflow.log_metric("rmspe", scores[CANDIDATE]["pooled"]["rmse"])  # the monitor's holdout reference
        if champion_info:
            mlflow.set_tag("champion_version_compared", champion_info.version)
        mlflow.log_table(_per_ticker_table(scores), "scores/per_ticker.json")
        _log_plots(trained, forecasts, returns, tickers, dates, scores, settings.ticker)
        _log_validation_link(trained.snapshot)
    holdout = Holdout(days=int(len(np.unique(dates))), pairs=len(test), first=str(dates.min()), last=str(dates.max()))
    log.info("holdout (%d days x %d tickers, %s..%s):\n%s", holdout.days, len(frames), holdout.first, holdout.last,
             format_scores(scores))
    return Evaluated(trained=trained, scores={k: _summary(v) for k, v in scores.items()}, champion=champion_info,
                     holdout=holdout)


def _save_holdout(folder: Path, forecasts: dict, panel, test) -> None:
    """The candidate's and HARX-GKO's holdout forecasts, one row per (ticker, day) with the close they were made on
    and the log-return quantiles, beside the features; the one of the model that gets registered is kept for its
    version (:func:`_keep_holdout`)."""
    import numpy as np
    import pandas as pd

    from stockops.model.scoring import LEVELS

    last_close = np.empty(len(test))
    for i, ticker in enumerate(panel.tickers):
        rows = test.ticker == i
        last_close[rows] = panel.last_close[ticker][test.end[rows]]
    base = pd.DataFrame({"ticker": np.array(panel.tickers)[test.ticker], "as_of": panel.dates[test.end].astype(str),
                         "forecast_for": panel.dates[test.end + 1].astype(str), "last_close": last_close})
    for name in (CANDIDATE, REFERENCE):
        f = forecasts[name]
        base.assign(point=f.point, variance=f.variance,
                    **{f"q{round(level * 100):02d}": f.quantiles[:, i] for i, level in enumerate(LEVELS)}
                    ).to_parquet(folder / HOLDOUT_FILE.format(model=name), index=False)


def _keep_holdout(settings: Settings, features: Features, model: str, version: str) -> None:
    """Keep ``model``'s holdout forecasts as those of registry ``version`` (``evaluation/v<version>.parquet``): what
    the dashboard shows of a champion before its own live forecasts are realized. Written whole, then renamed."""
    source = Path(features.path).with_name(HOLDOUT_FILE.format(model=model))
    if not source.exists():  # a features folder of an older run
        log.warning("no holdout forecasts at %s: v%s has none to show", source, version)
        return
    settings.evaluation_dir.mkdir(parents=True, exist_ok=True)
    target = settings.evaluation_dir / f"v{version}.parquet"
    partial = target.with_suffix(".parquet.partial")
    partial.write_bytes(source.read_bytes())
    os.replace(partial, target)


def _summary(entry: dict) -> dict[str, float | None]:
    """What later steps need of one model's scores (pooled numbers and the DM statistics), JSON-able:
    an undefined number (NaN) becomes None, which XComs can carry."""
    import math

    values = {**entry["pooled"], **{k: v for k, v in entry.items() if k.startswith(("dm_", "qlike_ratio"))}}
    return {k: float(v) if math.isfinite(v) else None for k, v in values.items()}


def _champion_forecasts(settings: Settings, panel, test, forecasts: dict, risk) -> ChampionCompared | None:
    """Re-score the champion on the candidate's holdout, when it is a risk forecaster whose window fits."""
    import numpy as np

    from stockops.model.portable.forecaster import WARMUP
    from stockops.model.risk_model import sample_windows

    champion = registry.champion_version(settings)
    if champion is None:
        return None
    try:
        model = registry.load_forecaster(registry.model_uri(settings.model_name, alias=registry.CHAMPION))
    except Exception as exc:  # an older kind of model (a point forecaster) cannot be scored on risk
        log.warning("champion v%s is not a risk forecaster (%s): it is not re-scored, and the gate judges the "
                    "candidate against the baselines only", champion.version, str(exc).splitlines()[0][:200])
        return None
    window = model.calibration.window
    if test.end.min() < window - 1 + WARMUP:
        log.warning("champion v%s needs %d days, the holdout starts too early; not re-scored", champion.version, window)
        return None
    forecasts[CHAMPION] = risk(model.predict_windows(sample_windows(panel, test, window), np.array(panel.tickers)[test.ticker]))
    return ChampionCompared(version=str(champion.version), run_id=champion.run_id,
                            trained_through=registry.get_run(champion.run_id).data.tags.get("snapshot_last_date", ""))


def _baseline_forecasts(frames: dict, panel, split, tickers, dates, market: str | None) -> dict:
    """Every classical baseline, fitted per ticker on the days before the holdout, on the candidate's pairs."""
    import numpy as np

    from stockops.model.baselines import BASELINES, holdout
    from stockops.model.portable.risk_inputs import align_market
    from stockops.model.scoring import RiskForecast

    market_frame = frames.get(market) if market else None
    rows: dict[str, list] = {name: [] for name in BASELINES}
    order = []
    for ticker in panel.tickers:
        frame = frames[ticker]
        fold = holdout(frame, align_market(frame["Date"], market_frame), split.test_start)
        position = {d: i for i, d in enumerate(fold.dates.astype("datetime64[D]"))}
        wanted = np.flatnonzero(tickers == ticker)
        index = np.array([position[d] for d in dates[wanted]])
        order.append(wanted)
        for name, forecast in fold.forecasts.items():
            rows[name].append(forecast.take(index))
    order = np.concatenate(order)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return {name: RiskForecast.concat(parts).take(inverse) for name, parts in rows.items()}


def _per_ticker_table(scores: dict):
    import pandas as pd

    return pd.DataFrame([{"model": name, "ticker": ticker, **values} for name, entry in scores.items()
                         for ticker, values in entry["by_ticker"].items()])


def format_scores(scores: dict) -> str:
    lines = [f"{'model':<13} {'QLIKE':>7} {'pinball':>8} {'cov50':>6} {'cov90':>6} {'VaR99':>6} {'RMSE/pers':>9} "
             f"{'DM t vs ' + REFERENCE:>16}"]
    for name, entry in scores.items():
        p = entry["pooled"] if "pooled" in entry else entry
        dm = entry.get(f"dm_qlike_vs_{REFERENCE}")
        dm = float("nan") if dm is None else dm  # undefined (None in the contract)
        lines.append(f"{name:<13} {p['qlike']:>7.4f} {p['pinball']:>8.4f} {p['coverage_50']:>6.3f} "
                     f"{p['coverage_90']:>6.3f} {p['var99_breaches']:>6.2%} {p['rmse_ratio']:>9.4f} {dm:>16.2f}")
    return "\n".join(lines)


def _log_plots(trained: Trained, forecasts: dict, returns, tickers, dates, scores: dict, ticker: str) -> None:
    """Fan chart of one ticker's holdout, a reliability diagram of the quantiles, QLIKE by ticker vs HARX-GKO,
    and the loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import numpy as np

    from stockops.model.scoring import LEVELS

    candidate = forecasts[CANDIDATE]
    ticker = ticker if ticker in set(tickers) else str(tickers[0])
    sel = np.flatnonzero(tickers == ticker)[-250:]
    days = dates[sel]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    q = candidate.quantiles[sel] * 100
    ax.fill_between(days, q[:, 1], q[:, 5], alpha=0.25, label="90 % interval", step="mid")
    ax.fill_between(days, q[:, 2], q[:, 4], alpha=0.45, label="50 % interval", step="mid")
    ax.scatter(days, returns[sel] * 100, s=6, color="black", label="realised return")
    ax.set_ylabel("next-day log return (%)")
    ax.set_title(f"{ticker}: forecast intervals vs realised returns on the holdout")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    mlflow.log_figure(fig, "plots/fan_chart.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for name in (CANDIDATE, REFERENCE, "garch_normal", CHAMPION):
        if name in forecasts:
            observed = [(returns < forecasts[name].quantile(level)).mean() for level in LEVELS]
            ax.plot(LEVELS, observed, marker="o", label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("quantile level")
    ax.set_ylabel("share of days below the quantile")
    ax.set_title("Reliability of the forecast quantiles (holdout)")
    ax.legend()
    mlflow.log_figure(fig, "plots/calibration.png")
    plt.close(fig)

    names = sorted(scores[CANDIDATE]["by_ticker"])
    fig, ax = plt.subplots(figsize=(11, 4))
    x = np.arange(len(names))
    for offset, name in ((-0.2, CANDIDATE), (0.2, REFERENCE)):
        ax.bar(x + offset, [scores[name]["by_ticker"][t]["qlike"] for t in names], width=0.4, label=name)
    ax.set_xticks(x, names, rotation=45)
    ax.set_ylabel("QLIKE (lower is better)")
    ax.set_title("QLIKE by ticker on the holdout")
    ax.legend()
    mlflow.log_figure(fig, "plots/qlike_by_ticker.png")
    plt.close(fig)

    history = json.loads(Path(trained.history_path).read_text())
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], marker="o", label="training loss")
    ax.plot(epochs, history["val_loss"], marker="o", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Gaussian NLL (QLIKE), returns in %")
    ax.set_title("Loss curve (best weights restored)")
    ax.legend()
    mlflow.log_figure(fig, "plots/loss_curve.png")
    plt.close(fig)


def _log_validation_link(snapshot: SnapshotSummary) -> None:
    import mlflow

    settings = get_settings()
    mlflow.log_dict({"snapshot_hash": snapshot.hash, "validation_result": snapshot.validation_path,
                     "data_docs": str(settings.data_docs_dir / "index.html")}, "data_validation.json")


def _score(scores: dict[str, dict[str, float | None]], model: str, metric: str) -> float:
    """One score the later steps need defined (an undefined one, None in the contract, is NaN here)."""
    value = scores[model][metric]
    return float("nan") if value is None else value


def register_candidate(evaluated: Evaluated) -> Registered:
    """Register the candidate as a new version with alias ``challenger`` and lineage tags."""
    import mlflow

    from stockops.model.portable.forecaster import LSTM

    settings = get_settings()
    registry.setup(settings)
    scores = evaluated.scores
    qlike, harx = _score(scores, CANDIDATE, "qlike"), _score(scores, REFERENCE, "qlike")
    version = registry.register(settings, evaluated.trained.model_uri, snapshot_hash=evaluated.snapshot.hash,
                                logical_date=evaluated.snapshot.logical_date, run_id=evaluated.run_id,
                                qlike=f"{qlike:.4f}", qlike_vs_harx_gko=f"{harx - qlike:+.4f}",
                                rmse_ratio=f"{_score(scores, CANDIDATE, 'rmse_ratio'):.4f}", model_kind=LSTM)
    registry.set_alias(settings, registry.CHALLENGER, version.version)
    with mlflow.start_run(run_id=evaluated.run_id):
        mlflow.set_tag("registered_version", version.version)
    _keep_holdout(settings, evaluated.trained.features, CANDIDATE, str(version.version))
    log.info("registered %s v%s (alias challenger)", settings.model_name, version.version)
    return Registered(evaluated=evaluated, model_name=settings.model_name, version=str(version.version))


def gate_candidate(registered: Registered, force_promote: bool = False, reason: str | None = None,
                   dag_run_id: str = "") -> GateDecision:
    """Apply the gate; record the decision on the version, in the run and in the audit log; return it.

    A refusal is a normal outcome, not an error: ``stock_train``'s ``gate_passed`` stops the deploy path
    unless the decision deploys. ``force_promote`` promotes anyway, with ``reason`` (required then) recorded.
    The champion is always the best model the platform has: a refused candidate with no champion to keep
    (none yet, or a baseline champion fitted on data older than ``STOCKOPS_GATE_CHAMPION_MAX_AGE_DAYS``) gets the
    strongest classical baseline registered and deployed in its place (:func:`register_baseline`); the decision
    names it (``baseline``).
    """
    import mlflow

    from stockops.model.gate import GatePolicy, decide

    settings = get_settings()
    registry.setup(settings)
    scores = registered.scores
    champion = registered.evaluated.champion
    decision = decide(scores[CANDIDATE], scores[REFERENCE], scores.get(CHAMPION), GatePolicy.from_settings(settings),
                      champion_age_days=_age_days(champion, registered.snapshot.last_date),
                      force=force_promote, force_reason=reason or "")
    registry.tag_version(settings, registered.version, model_name=registered.model_name,
                         gate_decision=decision.label, gate_reason=decision.reason[:5000])
    with mlflow.start_run(run_id=registered.run_id):
        mlflow.set_tags({"gate_decision": decision.label})
    lineage = {"run_id": registered.run_id, "snapshot_hash": registered.snapshot.hash,
               "snapshots": _snapshot_hashes(registered.evaluated.trained.features), "dag_run_id": dag_run_id}
    audit.record(settings.audit_log, "gate", ticker=settings.ticker, model=registered.model_name,
                 version=registered.version, decision=decision.label, reason=decision.reason,
                 request_reason=reason or "",  # the field name existing audit logs use for the run's reason
                 **lineage)
    if decision.promote:
        log.info("GATE: %s", decision.reason)
        return decision
    log.warning("GATE: %s.", decision.reason)
    why = _baseline_needed(settings, registered)
    if why is None:
        log.warning("The champion is unchanged; the deploy path stops here.")
        return decision
    baseline = register_baseline(registered, why, dag_run_id=dag_run_id)
    log.warning("v%s (%s) serves instead: %s", baseline.version, baseline.model_kind, why)
    return replace(decision, baseline=baseline)


def _snapshot_hashes(features: Features) -> dict[str, str]:
    """Each ticker's snapshot hash the model was trained on (the lineage the combined hash sums up)."""
    return {ticker: entry.hash for ticker, entry in features.snapshots.entries.items()}


def _baseline_needed(settings: Settings, registered: Registered) -> str | None:
    """Why the classical baseline must serve now that the candidate was refused, or None: the champion stays."""
    from stockops.model.portable.forecaster import HARX_GKO

    champion = registry.champion_version(settings)
    if champion is None:
        return ("no model has passed the gate yet: the strongest classical baseline serves until an LSTM beats it "
                "at the gate")
    if champion.tags.get("model_kind") != HARX_GKO:
        return None  # an LSTM that passed the gate stays until a better one does
    age = _age_days(registered.evaluated.champion, registered.snapshot.last_date)
    if age is None or age <= settings.gate_champion_max_age_days:
        return None
    return (f"the baseline champion v{champion.version} was fitted on data {age:.0f} days older than today's "
            f"(> STOCKOPS_GATE_CHAMPION_MAX_AGE_DAYS={settings.gate_champion_max_age_days:g}): refitted on today's")


def register_baseline(registered: Registered, why: str, dag_run_id: str = "") -> Baseline:
    """Fit HARX-GKO per ticker on the candidate's training days (before its holdout) and register it as a new
    version of the model, in an MLflow run of its own: the same lineage tags, its holdout scores (the ones the
    gate compared the candidate with), the drift reference, its holdout forecasts, a pyfunc model that serves
    through the same registry, bento, deploy, monitor and rollback path as the LSTM (``model_kind`` tells them
    apart in every answer)."""
    import mlflow

    from stockops.model.baselines import fit_harx
    from stockops.model.portable.forecaster import HARX_GKO, KIND_DESCRIPTIONS, OHLCV_INPUT

    settings = get_settings()
    experiment_id = registry.setup(settings)
    features = registered.evaluated.trained.features
    frames, split = _load_frames(features)  # HARX-GKO needs no feature panel
    model = fit_harx(frames, split.test_start)
    snapshot, folder = features.summary, Path(features.path).parent
    scores = registered.scores[REFERENCE]
    with _run(experiment_id=experiment_id, run_name=f"harx_gko-{snapshot.last_date}") as run:
        mlflow.set_tags({"snapshot_hash": snapshot.hash, "snapshot_last_date": snapshot.last_date,
                         "logical_date": snapshot.logical_date, "ticker": settings.ticker,
                         "tickers": ",".join(frames), "reason": why, "airflow_dag_run_id": dag_run_id,
                         "model_kind": HARX_GKO, "candidate_run_id": registered.run_id,
                         "candidate_version": registered.version})
        mlflow.log_params({"model": KIND_DESCRIPTIONS[HARX_GKO], "fitted_before": str(split.test_start),
                           "tickers": len(frames), "fitted_tickers": len(model.calibration.tickers),
                           "val_start": features.val_start, "test_start": features.test_start})
        mlflow.log_metrics({k: v for k, v in scores.items() if v is not None})
        mlflow.log_metric("rmspe", _score(registered.scores, REFERENCE, "rmse"))  # the monitor's holdout reference
        mlflow.log_dict(_snapshot_hashes(features), "snapshots.json")
        reference = folder / "reference_features.parquet"
        if reference.exists():
            mlflow.log_artifact(str(reference), "monitoring")
        saved = model.save(folder / f"baseline-{run.info.run_id}")
        example_ticker = settings.ticker if settings.ticker in frames else next(iter(frames))
        example = _example(frames, example_ticker, model.calibration.history, settings.market)[list(OHLCV_INPUT)]
        info = registry.log_forecaster(saved, example)
    qlike = _score(registered.scores, REFERENCE, "qlike")
    version = str(registry.register(settings, info.model_uri, snapshot_hash=snapshot.hash,
                                    logical_date=snapshot.logical_date, run_id=run.info.run_id, model_kind=HARX_GKO,
                                    qlike=f"{qlike:.4f}", qlike_vs_harx_gko="+0.0000",
                                    rmse_ratio=f"{_score(registered.scores, REFERENCE, 'rmse_ratio'):.4f}",
                                    gate_decision=BASELINE, gate_reason=why[:5000]).version)
    _keep_holdout(settings, features, REFERENCE, version)
    audit.record(settings.audit_log, "baseline", ticker=settings.ticker, model=registered.model_name, version=version,
                 model_kind=HARX_GKO, reason=why, candidate_version=registered.version, run_id=run.info.run_id,
                 snapshot_hash=snapshot.hash, dag_run_id=dag_run_id)
    log.info("registered %s v%s: %s, fitted per ticker before %s (%d tickers, pooled for the rest); holdout QLIKE "
             "%.4f", registered.model_name, version, KIND_DESCRIPTIONS[HARX_GKO], split.test_start,
             len(model.calibration.tickers), qlike)
    return Baseline(version=version, run_id=run.info.run_id, model_kind=HARX_GKO, reason=why)


def gate_passed(decision: GateDecision) -> bool:
    """Short-circuit after the gate: go on to build and deploy only if the decision deploys (the candidate, or the
    baseline in its place)."""
    return decision.deploys


def _age_days(champion: ChampionCompared | None, candidate_last_date: str) -> float | None:
    """Calendar days between the champion's newest training day and the candidate's."""
    from datetime import date

    if not champion or not champion.trained_through:
        return None
    return float((date.fromisoformat(candidate_last_date[:10]) - date.fromisoformat(champion.trained_through[:10])).days)


def promote_candidate(registered: Registered, decision: GateDecision | None = None, reason: str | None = None,
                      dag_run_id: str = "") -> Promoted:
    """Move ``champion`` to the candidate's version and record the change, serving nothing.

    For homes without an endpoint (the monitor's tests and bench). ``stock_train`` promotes in
    ``stockops.serving.deploy_candidate``: the switch, the alias and the audit entry together.
    ``decision``: the gate's, recorded with the change (None: promoted without a gate).
    """
    from stockops.registry.changes import record_change

    settings = get_settings()
    registry.setup(settings)
    previous = registry.champion_version(settings)
    registry.set_alias(settings, registry.CHAMPION, registered.version)
    entry = record_change(settings, "promotion", from_version=previous.version if previous else None,
                          to_version=registered.version, reason=reason or "gate passed",
                          dag_run_id=dag_run_id, decision=decision.label if decision else "",
                          run_id=registered.run_id, snapshot_hash=registered.snapshot.hash)
    registry.tag_version(settings, registered.version, promoted_at=entry["at"])
    log.info("champion: %s v%s -> v%s", settings.model_name, previous.version if previous else "none",
             registered.version)
    return Promoted(model_name=settings.model_name, version=registered.version,
                    previous=str(previous.version) if previous else None)
