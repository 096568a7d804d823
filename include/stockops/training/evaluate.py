"""Step 4: score the candidate, the champion and every classical baseline on the same (ticker, day) pairs.

The candidate and the champion are scored as they would be served: their forecasts corrected by the online
calibration (:mod:`stockops.model.portable.online_calibration`), walked day by day through the holdout from a neutral
state, each day with the state of the day before, as the monitor keeps it for the champion. So the gate judges the
scores the monitor's scorecard computes on the served forecasts. The candidate's own forecasts are scored beside
(``candidate_raw``, reported, not gated); the state each walk ends with is kept (``online-<model>.json``) and
becomes the served state of the version it belongs to when that version is promoted (:func:`keep_holdout`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from stockops import registry
from stockops.contracts import (
    ChampionCompared,
    Evaluated,
    Features,
    Holdout,
    SnapshotSummary,
    Trained,
)
from stockops.core.settings import Settings
from stockops.registry.online_states import keep_online_state
from stockops.training.common import CANDIDATE, CHAMPION, HOLDOUT_FILE, ONLINE_FILE, RAW, REFERENCE, mlflow_run
from stockops.training.features import load_panel

log = logging.getLogger(__name__)


def evaluate_models(trained: Trained, *, settings: Settings) -> Evaluated:
    """Score candidate, champion (re-scored on today's holdout) and every baseline on the same (ticker, day) pairs."""
    import mlflow
    import numpy as np

    from stockops.model.portable.forecaster import Forecaster
    from stockops.model.risk_model import sample_dates, sample_returns
    from stockops.model.scoring import RiskForecast, score_panel

    registry.setup(settings)
    with mlflow_run(run_id=trained.run_id):
        frames, panel, split = load_panel(settings, trained.features)
        test = split.parts(panel, trained.features.window)["test"]
        tickers = np.array(panel.tickers)[test.ticker]
        dates = sample_dates(panel, test)
        returns = sample_returns(panel, test)

        def risk(f: dict) -> RiskForecast:
            return RiskForecast(f["variance"], f["quantiles"], f["point"])

        candidate = Forecaster.load(trained.model_path)
        folder = Path(trained.features.path).parent
        raw = predict_samples(candidate, panel, test)
        forecasts = {CANDIDATE: risk(online_holdout(raw, returns, tickers, dates, folder / ONLINE_FILE.format(
            model=CANDIDATE))), RAW: risk(raw)}
        champion_info = _champion_forecasts(settings, panel, test, forecasts, risk)
        if CHAMPION in forecasts:
            forecasts[CHAMPION] = risk(online_holdout(vars(forecasts[CHAMPION]), returns, tickers, dates))
        forecasts.update(_baseline_forecasts(frames, panel, split, tickers, dates, settings.market))
        reference = forecasts[REFERENCE]  # gated on as fitted; its walk is kept for a HARX-GKO champion
        online_holdout(vars(reference), returns, tickers, dates, folder / ONLINE_FILE.format(model=REFERENCE))
        _save_holdout(folder, forecasts, panel, test)
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
        _log_validation_link(settings, trained.snapshot)
    holdout = Holdout(days=int(len(np.unique(dates))), pairs=len(test), first=str(dates.min()), last=str(dates.max()))
    log.info("holdout (%d days x %d tickers, %s..%s):\n%s", holdout.days, len(frames), holdout.first, holdout.last,
             format_scores(scores))
    return Evaluated(trained=trained, scores={k: _summary(v) for k, v in scores.items()}, champion=champion_info,
                     holdout=holdout)


def online_holdout(forecast: dict, returns, tickers, dates, keep: Path | None = None) -> dict:
    """``forecast`` (variance, quantiles, point over the holdout's pairs) as served: corrected day by day by the
    online calibration from a neutral state; the final state is saved to ``keep`` (its version named at
    registration)."""
    from stockops.model.portable.online_calibration import OnlineState, run_online

    state = OnlineState(model_version="unregistered",
                        started_from=f"holdout {str(min(dates))[:10]}..{str(max(dates))[:10]}")
    corrected = run_online(state, {k: forecast[k] for k in ("variance", "quantiles", "point")}, returns, tickers,
                           dates)
    if keep is not None:
        from stockops.registry.online_states import save_state

        save_state(state, keep)
    return corrected


PREDICT_CHUNK = 16384  # windows per forward pass in evaluation (a window's forecast has the same bits in any batch)


def predict_samples(model, panel, samples, tickers=None) -> dict:
    """``model.predict_windows`` on the windows of ``samples``, built and run :data:`PREDICT_CHUNK` at a time: the
    same forecasts as in one pass, without every window of a 421-ticker holdout in memory at once."""
    import numpy as np

    from stockops.model.risk_model import Samples, sample_windows

    window = model.calibration.window
    parts = []
    for start in range(0, max(len(samples), 1), PREDICT_CHUNK):
        rows = slice(start, start + PREDICT_CHUNK)
        chunk = Samples(samples.ticker[rows], samples.end[rows])
        parts.append(model.predict_windows(sample_windows(panel, chunk, window),
                                           None if tickers is None else tickers[rows]))
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _save_holdout(folder: Path, forecasts: dict, panel, test) -> None:
    """The candidate's and HARX-GKO's holdout forecasts, one row per (ticker, day) with the close they were made on
    and the log-return quantiles, beside the features; the one of the model that gets registered is kept for its
    version (:func:`keep_holdout`)."""
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


def keep_holdout(settings: Settings, features: Features, model: str, version: str) -> None:
    """Keep ``model``'s holdout forecasts as those of registry ``version`` (``evaluation/v<version>.parquet``): what
    the dashboard shows of a champion before its own live forecasts are realized; and the online calibration state
    its holdout walk ended with (``evaluation/online-v<version>.json``): the state it is served with once promoted
    (:func:`stockops.registry.online_states.seed_online_state`). Into the stores: any host reads them."""
    from stockops.registry.holdouts import keep_holdout_file

    keep_online_state(settings, Path(features.path).with_name(ONLINE_FILE.format(model=model)), version)
    keep_holdout_file(settings, Path(features.path).with_name(HOLDOUT_FILE.format(model=model)), version)


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
    forecasts[CHAMPION] = risk(predict_samples(model, panel, test, np.array(panel.tickers)[test.ticker]))
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
    """The run's figures (:func:`stockops.charts.training.training_figures`), logged as ``plots/<name>.png``."""
    import mlflow

    from stockops.charts.training import training_figures

    history = json.loads(Path(trained.history_path).read_text())
    for name, figure in training_figures(forecasts, returns, tickers, dates, scores, ticker, history,
                                         models=(CANDIDATE, REFERENCE, "garch_normal", CHAMPION)).items():
        mlflow.log_figure(figure, f"plots/{name}.png")


def _log_validation_link(settings: Settings, snapshot: SnapshotSummary) -> None:
    import mlflow

    mlflow.log_dict({"snapshot_hash": snapshot.hash, "validation_result": snapshot.validation_path,
                     "data_docs": str(settings.data_docs_dir / "index.html")}, "data_validation.json")


def score_of(scores: dict[str, dict[str, float | None]], model: str, metric: str) -> float:
    """One score the later steps need defined (an undefined one, None in the contract, is NaN here)."""
    value = scores[model][metric]
    return float("nan") if value is None else value
