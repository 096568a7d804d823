"""Walk-forward quality of the global LSTM risk forecaster on the universe, out of sample in tickers and in time.

The universe: the 18 shipped series plus ``universe.parquet`` (403 real US-listed series, path on the command
line; without it, the 18 alone). A fixed fifth of the tickers — those whose seeded hash of the symbol falls in the
first fifth, chosen before any result is seen (QQQ, the market reference, always trains) — never enters training:
they are scored **zero-shot**, as a user adding a ticker gets them.

For each test year 2014–2020: train the default model (``stock_train``'s configuration, nothing tuned) on every
training ticker's days before the year before it; the year before it is validation (early stopping, the model's
calibration, the blend weight); forecast every ticker's days of validation and test. The classical baselines
(GARCH-N, GARCH-t, EWMA, HAR-GK, HARX-GKO) are refitted per ticker on all days before each year. The candidates:

* ``lstm``: the network as ``stock_train`` trains it;
* ``blend``: the LSTM's log variance combined with HARX-GKO's (per ticker, fitted on the training days; its pooled
  fit for a zero-shot ticker), the weight and then the variance scale and quantiles fitted on validation only;
* ``stack``: ``log h = theta . [1, log h_lstm, log h_harx, the newest day's jump above its month]``, ``theta`` by
  QLIKE on validation (does a jump call for more than the LSTM gives it?);
* ``<model>+online``: the same forecasts corrected by the online calibration
  (:mod:`stockops.model.portable.online_calibration`), run day by day from the validation year's first day (warm-up,
  not scored) through the test year, each day corrected with the state of the day before: what the platform serves.

Everything is scored on the same (ticker, day) pairs: QLIKE, pinball, coverage pooled / per year / per tercile of
forecast volatility, VaR breaches with Kupiec per ticker, RMSE against persistence, Diebold–Mariano t against
HARX-GKO on date-averaged losses, how fast a forecast follows a volatility jump, and a Model Confidence Set and an
SPA test over every candidate and baseline (``arch``), so the winner among several variants is not luck. The test
years choose nothing. Results: bench/results/model_quality.json.

    flock /tmp/stockops-bench.lock .venv/bin/python bench/model_quality.py [<path>/universe.parquet]
        [--tickers N] [--years 2014 ... 2020] [--epochs N] [--rows DIR] [--online market=0.02 ...]

``--rows DIR`` keeps every fold's forecasts and re-scores from them when they are there; ``--online`` runs other
online calibration rates (the platform's were chosen with ``--years 2010 2011 2012 2013 --tickers 100``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
RESULTS = ROOT / "bench" / "results" / "model_quality.json"
MARKET = "QQQ"
HOLDOUT_SEED = "stockops-issue-28"  # the zero-shot fifth: fixed before any result was seen
JUMP_FACTOR = 4.0  # a day's GKO variance >= 4 x its previous 22-day mean is a volatility jump
GOALS = {"qlike_gain": 0.04, "qlike_gain_stretch": 0.06, "dm_t": 3.0, "tickers_better": 0.75,
         "zero_shot_gain": 0.03, "zero_shot_dm_t": 2.0, "worst_year": 0.01, "coverage_90": (0.89, 0.91),
         "coverage_90_each": (0.88, 0.92), "coverage_50": (0.485, 0.515), "var99": 0.012, "kupiec_share": 0.90,
         "rmse_ratio": 1.001, "wall_minutes": 90}
QUANTILES = [f"q{round(level * 100):02d}" for level in (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)]


def zero_shot(symbol: str) -> bool:
    """The fixed fifth never trained on: a seeded hash of the symbol (QQQ, the market reference, always trains)."""
    return symbol != MARKET and int(hashlib.sha256(f"{HOLDOUT_SEED}:{symbol}".encode()).hexdigest(), 16) % 5 == 0


def load_universe(path: Path | None, n: int | None) -> dict[str, pd.DataFrame]:
    """The 18 shipped series, then the universe's; ``n``: a seeded-hash subset of that many (QQQ always in)."""
    from stockops.core.settings import WATCHLIST
    from stockops.data.sources import shipped_series

    frames = {t: shipped_series(t) for t in WATCHLIST}
    if path is not None:
        for ticker, rows in pd.read_parquet(path).groupby("Ticker", sort=True):
            if str(ticker) not in frames:
                frame = rows.drop(columns="Ticker").reset_index(drop=True)
                frames[str(ticker)] = frame.assign(Date=pd.to_datetime(frame["Date"]))[
                    ["Date", "Open", "High", "Low", "Close", "Volume"]]
    if n is not None and n < len(frames):
        ranked = sorted((t for t in frames if t != MARKET),
                        key=lambda t: hashlib.sha256(f"subset:{t}".encode()).hexdigest())
        frames = {t: frames[t] for t in [MARKET, *ranked[:n - 1]]}
    return frames


# ---- forecasts -----------------------------------------------------------------------------------------------
def table(tickers, dates, forecast: dict) -> pd.DataFrame:
    """One model's forecasts as rows keyed by (ticker, date): variance, point, quantiles."""
    return pd.DataFrame({"ticker": np.asarray(tickers), "date": np.asarray(dates, dtype="datetime64[D]"),
                         "variance": forecast["variance"], "point": forecast["point"],
                         **{q: forecast["quantiles"][:, i] for i, q in enumerate(QUANTILES)}})


def as_forecast(frame: pd.DataFrame, prefix: str = "") -> dict[str, np.ndarray]:
    return {"variance": frame[f"{prefix}variance"].to_numpy(), "point": frame[f"{prefix}point"].to_numpy(),
            "quantiles": frame[[f"{prefix}{q}" for q in QUANTILES]].to_numpy()}


def baselines_of(item: tuple[str, pd.DataFrame, pd.DataFrame, list[int]]) -> pd.DataFrame:
    """Every classical baseline's walk-forward forecasts of one ticker (refitted before each year), long format."""
    from stockops.model.baselines import walk_forward
    from stockops.model.portable.risk_inputs import align_market

    ticker, frame, market, years = item
    wf = walk_forward(frame, align_market(frame["Date"], market), years)
    parts = [table(np.repeat(ticker, len(wf.returns)), wf.dates, {"variance": f.variance, "point": f.point,
                                                                 "quantiles": f.quantiles}).assign(model=name)
             for name, f in wf.forecasts.items()]
    return pd.concat(parts, ignore_index=True)


def blend_weight(log_a: np.ndarray, log_b: np.ndarray, r_pct: np.ndarray) -> float:
    """The weight w in [0, 1] of ``log h = w log_a + (1 - w) log_b`` with the least QLIKE (each w with its own
    QLIKE-optimal scale), on a grid of 0.05."""
    best, weight = np.inf, 1.0
    for w in np.linspace(0.0, 1.0, 21):
        h = np.exp(w * log_a + (1 - w) * log_b)
        c = np.mean(r_pct**2 / h)
        loss = np.mean(np.log(c * h) + r_pct**2 / (c * h))
        if loss < best:
            best, weight = loss, float(w)
    return weight


def fold_forecasts(panel, train_panel, year: int, config, frames) -> tuple[pd.DataFrame, dict]:
    """Train on the training tickers' days before ``year - 1``; the LSTM's forecasts of every ticker's validation
    and test days, with HARX-GKO's log variance (fitted per training ticker before the validation year, pooled for
    the zero-shot fifth: what a blend could serve) and the newest day's jump size ``log gko - log gko_22``."""
    from stockops.model.baselines import fit_harx
    from stockops.model.portable.forecaster import FEATURES
    from stockops.model.risk_model import DateSplit, sample_dates, sample_returns, sample_windows, train_risk
    from stockops.training.evaluate import predict_samples

    split = DateSplit(val_start=np.datetime64(f"{year - 1}-01-01"), test_start=np.datetime64(f"{year}-01-01"),
                      test_end=np.datetime64(f"{year}-12-31"))
    trained = train_risk(train_panel, split, config)
    harx = fit_harx({t: frames[t] for t in train_panel.tickers}, split.val_start)
    parts = split.parts(panel, config.window)
    rows = []
    for part in ("val", "test"):
        s = parts[part]
        tickers = np.array(panel.tickers)[s.ticker]
        lstm = predict_samples(trained.forecaster, panel, s)
        newest = sample_windows(panel, s, 1)
        h = harx.predict_windows(newest, tickers)
        jump = newest[:, 0, FEATURES.index("log_gko")] - newest[:, 0, FEATURES.index("log_gko_22")]
        rows.append(table(tickers, sample_dates(panel, s), lstm).assign(
            fold=year, part=part, ret=sample_returns(panel, s), harx_log=np.log(h["variance"]), jump_x=jump))
    facts = {"year": year, "train_seconds": round(trained.seconds, 1), "samples": trained.samples,
             "best_epoch": trained.best_epoch, "epochs_run": len(trained.history["loss"]),
             "calibration": {k: v for k, v in asdict(trained.forecaster.calibration).items()
                             if k in ("variance_scale", "z", "shrink")}}
    return pd.concat(rows, ignore_index=True), facts


def qlike_regression(x: np.ndarray, r_pct: np.ndarray) -> np.ndarray:
    """``theta`` of ``log h = x @ theta`` with the least mean QLIKE (the Gaussian likelihood of a log-linear variance:
    convex in ``theta``), by Newton steps from OLS of log r^2."""
    theta = np.linalg.lstsq(x, np.log(np.maximum(r_pct**2, 1e-4)) + 1.27, rcond=None)[0]
    for _ in range(50):
        u = r_pct**2 * np.exp(-x @ theta)
        gradient = x.T @ (1 - u) / len(u)
        hessian = (x * u[:, None]).T @ x / len(u)
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(theta)), gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return theta


def stack_design(part: pd.DataFrame) -> np.ndarray:
    """[1, LSTM log variance, HARX-GKO log variance, the newest day's jump above its month (>= 0)] in percent^2."""
    from stockops.model.portable.forecaster import PCT

    return np.column_stack([np.ones(len(part)), np.log(part["variance"].to_numpy() * PCT**2),
                            part["harx_log"].to_numpy() + np.log(PCT**2), np.maximum(part["jump_x"].to_numpy(), 0)])


def add_stack(rows: pd.DataFrame) -> dict:
    """``stack_*`` columns: per fold, ``log h = theta . [1, log h_lstm, log h_harx, jump+]`` fitted by QLIKE on the
    training tickers' validation days, quantiles from its standardised validation residuals; returns the thetas."""
    from stockops.model.portable.forecaster import LEVELS, PCT

    thetas = {}
    for year, index in rows.groupby("fold").groups.items():
        part = rows.loc[index]
        fit = ((part["part"] == "val") & ~part["ticker"].map(zero_shot)).to_numpy()
        x, r_pct = stack_design(part), part["ret"].to_numpy() * PCT
        theta = qlike_regression(x[fit], r_pct[fit])
        thetas[int(year)] = [round(float(v), 4) for v in theta]
        h = np.exp(x @ theta)
        point = part["point"].to_numpy()
        z = np.quantile((r_pct[fit] - point[fit] * PCT) / np.sqrt(h[fit]), LEVELS)
        rows.loc[index, "stack_variance"] = h / PCT**2
        rows.loc[index, "stack_point"] = point
        for i, q in enumerate(QUANTILES):
            rows.loc[index, f"stack_{q}"] = point + np.sqrt(h / PCT**2) * z[i]
    return thetas


def add_blend(rows: pd.DataFrame) -> dict:
    """``blend_*`` columns: per fold, the LSTM's log variance combined with HARX-GKO's, the weight, then the variance
    scale and the standardised quantiles fitted on the training tickers' validation days only; returns the weights."""
    from stockops.model.portable.forecaster import LEVELS, PCT

    weights = {}
    for year, index in rows.groupby("fold").groups.items():
        part = rows.loc[index]
        fit = ((part["part"] == "val") & ~part["ticker"].map(zero_shot)).to_numpy()
        r_pct = part["ret"].to_numpy() * PCT
        log_lstm = np.log(part["variance"].to_numpy() * PCT**2)
        log_harx = part["harx_log"].to_numpy() + np.log(PCT**2)
        w = weights[int(year)] = blend_weight(log_lstm[fit], log_harx[fit], r_pct[fit])
        h = np.exp(w * log_lstm + (1 - w) * log_harx)
        scale = float(np.mean(r_pct[fit] ** 2 / h[fit]))
        point = part["point"].to_numpy() * PCT
        z = np.quantile((r_pct[fit] - point[fit]) / np.sqrt(scale * h[fit]), LEVELS)
        variance = scale * h / PCT**2
        rows.loc[index, "blend_variance"] = variance
        rows.loc[index, "blend_point"] = part["point"].to_numpy()
        for i, q in enumerate(QUANTILES):
            rows.loc[index, f"blend_{q}"] = part["point"].to_numpy() + np.sqrt(variance) * z[i]
    return weights


RATES: dict[str, float] = {}  # OnlineRates overrides (--online name=value ...)


def online_rates() -> dict:
    from stockops.model.portable.online_calibration import OnlineRates

    return asdict(OnlineRates(**RATES))


def online(rows: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """``prefix``'s forecasts corrected by the online calibration, run through every row day by day (validation
    warms it); the same update the platform runs on its forecast records."""
    from stockops.model.portable.online_calibration import OnlineRates, OnlineState, run_online

    corrected = run_online(OnlineState(model_version="bench", rates=OnlineRates(**RATES)), as_forecast(rows, prefix),
                           rows["ret"].to_numpy(),
                           rows["ticker"].to_numpy(), rows["date"].to_numpy())
    return table(rows["ticker"], rows["date"], corrected)


# ---- scoring -------------------------------------------------------------------------------------------------
def jump_ages(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per (ticker, target day): trading days since the last volatility jump the forecast saw (1: the day before
    the target, its newest input, was a jump: GKO variance >= ``JUMP_FACTOR`` x its previous 22-day mean)."""
    from stockops.model.portable.risk_inputs import daily_inputs

    parts = []
    for ticker, frame in frames.items():
        gko = daily_inputs(frame)["gko"].to_numpy()
        before = pd.Series(gko).shift(1).rolling(22, min_periods=22).mean().to_numpy()
        jump = np.nan_to_num(gko) >= JUMP_FACTOR * np.where(np.isfinite(before), before, np.inf)
        index = np.arange(len(gko), dtype=float)
        last = pd.Series(np.where(jump, index, np.nan)).ffill().shift(1).to_numpy()  # last jump before the target
        parts.append(pd.DataFrame({"ticker": ticker, "date": frame["Date"].to_numpy(dtype="datetime64[D]"),
                                   "jump_age": index - last}))
    return pd.concat(parts, ignore_index=True)


def crisis_response(scored: pd.DataFrame, models: list[str]) -> dict:
    """How each model follows a volatility jump, on the same events: the rise of its log variance forecast the day
    after the jump (mean over events), and its QLIKE over the 5 targets after it, with HARX-GKO's beside."""
    from stockops.model.scoring import qlike

    scored = scored.sort_values(["ticker", "date"])
    after = scored["jump_age"].to_numpy()
    first, window = after == 1, (after >= 1) & (after <= 5)
    same_ticker = scored["ticker"].to_numpy()[1:] == scored["ticker"].to_numpy()[:-1]
    out = {"events": int(first.sum()), "days_after": int(window.sum())}
    for name in models:
        log_h = np.log(scored[f"{name}_variance"].to_numpy())
        rise = np.r_[np.nan, np.where(same_ticker, log_h[1:] - log_h[:-1], np.nan)]
        ok = first & np.isfinite(rise)
        out[name] = {"log_variance_rise": float(np.mean(rise[ok])),
                     "qlike_5_days_after": float(qlike(scored[f"{name}_variance"].to_numpy()[window],
                                                       scored["ret"].to_numpy()[window]).mean())}
    return out


def coverage_slices(scored: pd.DataFrame, name: str) -> dict:
    """90 % / 50 % coverage by year and by tercile of the model's own forecast volatility; Kupiec 99 % per ticker."""
    from stockops.model.scoring import kupiec

    r = scored["ret"].to_numpy()
    inside90 = (r >= scored[f"{name}_q05"].to_numpy()) & (r <= scored[f"{name}_q95"].to_numpy())
    inside50 = (r >= scored[f"{name}_q25"].to_numpy()) & (r <= scored[f"{name}_q75"].to_numpy())
    breach99 = r < scored[f"{name}_q01"].to_numpy()
    year = scored["date"].dt.year.to_numpy()
    vol = scored[f"{name}_variance"].to_numpy()
    tercile = np.searchsorted(np.quantile(vol, [1 / 3, 2 / 3]), vol, side="right")
    frame = pd.DataFrame({"ticker": scored["ticker"].to_numpy(), "breach": breach99})
    per_ticker = frame.groupby("ticker")["breach"].agg(["sum", "count"])
    passed = [kupiec(int(s), int(c), 0.01)[1] >= 0.05 for s, c in per_ticker.itertuples(index=False)]
    return {"coverage_90_by_year": {int(y): float(inside90[year == y].mean()) for y in np.unique(year)},
            "coverage_50_by_year": {int(y): float(inside50[year == y].mean()) for y in np.unique(year)},
            "coverage_90_by_tercile": [float(inside90[tercile == k].mean()) for k in range(3)],
            "kupiec99_not_rejected_share": float(np.mean(passed))}


def confidence_sets(scored: pd.DataFrame, models: list[str], reference: str) -> dict:
    """Model Confidence Set (10 %) and the SPA test against ``reference`` on date-averaged QLIKE (``arch``)."""
    from arch.bootstrap import MCS, SPA

    from stockops.model.scoring import qlike

    r = scored["ret"].to_numpy()
    losses = pd.DataFrame({name: qlike(scored[f"{name}_variance"].to_numpy(), r) for name in models})
    daily = losses.groupby(scored["date"].to_numpy()).mean()
    mcs = MCS(daily, size=0.10, reps=1000, block_size=10, method="R", seed=7)
    mcs.compute()
    others = [m for m in models if m != reference]
    spa = SPA(daily[reference], daily[others], reps=1000, block_size=10, seed=7)
    spa.compute()
    return {"mcs_included": [str(m) for m in mcs.included], "mcs_pvalues": {str(k): float(v) for k, v in
                                                                            mcs.pvalues["Pvalue"].items()},
            "spa_vs": reference, "spa_pvalues": {k: float(v) for k, v in spa.pvalues.items()},
            "best_by_mean_qlike": str(daily.mean().idxmin()), "days": len(daily)}


def score_models(scored: pd.DataFrame, models: list[str], reference: str = "harx_gko") -> dict:
    """``score_panel`` (pooled, per ticker, DM t against ``reference``) of every model on ``scored``'s pairs."""
    from stockops.model.scoring import RiskForecast, score_panel

    forecasts = {m: RiskForecast(**as_forecast(scored, f"{m}_")) for m in models}
    return score_panel(forecasts, scored["ret"].to_numpy(), scored["ticker"].to_numpy(),
                       scored["date"].to_numpy(), reference=reference)


def summary(scores: dict, name: str, reference: str = "harx_gko") -> dict:
    entry, ref = scores[name], scores[reference]
    better = [entry["by_ticker"][t]["qlike"] < ref["by_ticker"][t]["qlike"] for t in entry["by_ticker"]]
    return {"qlike": entry["pooled"]["qlike"], "gain": ref["pooled"]["qlike"] - entry["pooled"]["qlike"],
            "dm_t": entry.get(f"dm_qlike_vs_{reference}", 0.0), "tickers_better": float(np.mean(better)),
            "coverage_50": entry["pooled"]["coverage_50"], "coverage_90": entry["pooled"]["coverage_90"],
            "var99": entry["pooled"]["var99_breaches"], "rmse_ratio": entry["pooled"]["rmse_ratio"],
            "min_ticker_rmse_ratio": min(s["rmse_ratio"] for s in entry["by_ticker"].values())}


def forecasts(args, frames, panel, train_panel, config, started) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """Every fold's LSTM forecasts (training beside the baselines' walk, one process each) and the baselines'."""
    years = [min(args.years) - 1, *args.years]
    with ProcessPoolExecutor(max_workers=1) as pool:  # the baselines beside the training (2 cores)
        base_job = pool.map(baselines_of, [(t, f, frames[MARKET], years) for t, f in frames.items()], chunksize=8)
        folds, tested = [], []
        for year in args.years:
            rows, facts = fold_forecasts(panel, train_panel, year, config, frames)
            folds.append(facts)
            tested.append(rows)
            print(f"{year}: trained in {facts['train_seconds']:.0f} s ({facts['epochs_run']} epochs, best "
                  f"{facts['best_epoch']}); {time.perf_counter() - started:.0f} s", flush=True)
        baselines = pd.concat(list(base_job), ignore_index=True)
    print(f"baselines done: {time.perf_counter() - started:.0f} s", flush=True)
    wide = baselines.pivot_table(index=["ticker", "date"], columns="model",
                                 values=["variance", "point", *QUANTILES])
    wide.columns = [f"{model}_{field}" for field, model in wide.columns]
    return pd.concat(tested, ignore_index=True), wide.reset_index(), folds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("universe", type=Path, nargs="?", help="universe.parquet (without it: the 18 shipped)")
    parser.add_argument("--tickers", type=int, default=None, help="a seeded subset of N tickers (quick runs)")
    parser.add_argument("--years", type=int, nargs="+", default=list(range(2014, 2021)))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--platform", default="blend+online", help="the candidate the goals are judged on")
    parser.add_argument("--rows", type=Path, default=None,
                        help="a folder to keep every fold's forecasts in, read back when it has them (re-scoring)")
    parser.add_argument("--online", nargs="*", default=[], metavar="RATE=VALUE",
                        help="online calibration rates other than the platform's (OnlineRates), e.g. market=0.03")
    args = parser.parse_args()
    RATES.update({k: float(v) for k, v in (item.split("=") for item in args.online)})
    started = time.perf_counter()
    from stockops.core.settings import get_settings
    from stockops.model.risk_model import build_panel
    from stockops.training.common import model_config

    settings = get_settings()
    config = model_config(settings, epochs=args.epochs)
    frames = load_universe(args.universe, args.tickers)
    held = sorted(t for t in frames if zero_shot(t))
    panel = build_panel(frames, MARKET)
    train_panel = type(panel)(tuple(t for t in panel.tickers if t not in held), panel.dates,
                              *({t: d[t] for t in panel.tickers if t not in held}
                                for d in (panel.features, panel.returns, panel.last_close)))
    print(f"{len(frames)} tickers ({len(held)} zero-shot), {len(panel.dates)} days; config {config}; "
          f"{time.perf_counter() - started:.0f} s", flush=True)

    cache = args.rows
    if cache is not None and (cache / "rows.parquet").exists():
        tested = pd.read_parquet(cache / "rows.parquet")
        wide = pd.read_parquet(cache / "baselines.parquet")
        folds = json.loads((cache / "folds.json").read_text())
        print(f"forecasts read from {cache}", flush=True)
    else:
        tested, wide, folds = forecasts(args, frames, panel, train_panel, config, started)
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            tested.to_parquet(cache / "rows.parquet")
            wide.to_parquet(cache / "baselines.parquet")
            (cache / "folds.json").write_text(json.dumps(folds, default=str))
    names = sorted(c.removesuffix("_variance") for c in wide.columns if c.endswith("_variance"))
    weights, thetas = add_blend(tested), add_stack(tested)
    for fold in folds:
        fold["blend_weight"], fold["stack_theta"] = weights[int(fold["year"])], thetas[int(fold["year"])]
    print("blend weights (validation): " + ", ".join(f"{y} {w:.2f}" for y, w in weights.items()))
    print("stack [1, lstm, harx, jump+] (validation): " + ", ".join(f"{y} {t}" for y, t in thetas.items()))

    scored_parts = []
    for _, rows in tested.groupby("fold"):
        rows = rows.rename(columns={c: f"lstm_{c}" for c in ["variance", "point", *QUANTILES]})
        rows = rows.merge(wide, on=["ticker", "date"], how="inner").sort_values(["date", "ticker"], ignore_index=True)
        for model in ("lstm", "blend", "stack", "harx_gko"):
            corrected = online(rows, f"{model}_")
            for column in ["variance", "point", *QUANTILES]:
                rows[f"{model}+online_{column}"] = corrected[column].to_numpy()
        scored_parts.append(rows[rows["part"] == "test"])
    scored = pd.concat(scored_parts, ignore_index=True)
    scored["date"] = pd.to_datetime(scored["date"])
    scored = scored.merge(jump_ages(frames).assign(date=lambda f: pd.to_datetime(f["date"])),
                          on=["ticker", "date"], how="left")
    candidates = ["lstm", "blend", "stack", "lstm+online", "blend+online", "stack+online", "harx_gko+online"]
    models = [*candidates, *names]
    report(scored, models, held, folds, config, args)


def view(scored: pd.DataFrame, models: list[str]) -> dict:
    """Every number the report shows of ``models`` on ``scored``'s pairs."""
    from stockops.model.scoring import qlike

    scores = score_models(scored, models)
    years = scored["date"].dt.year.to_numpy()
    r = scored["ret"].to_numpy()
    losses = {m: qlike(scored[f"{m}_variance"].to_numpy(), r) for m in models}
    return {"summary": {m: summary(scores, m) for m in models},
            "by_year": {int(y): {m: float(losses[m][years == y].mean() - losses["harx_gko"][years == y].mean())
                                 for m in models} for y in np.unique(years)},
            "slices": {m: coverage_slices(scored, m) for m in models},
            "crisis": crisis_response(scored, models)}


def report(scored, models, held, folds, config, args) -> None:
    views = {"all tickers": view(scored, models)}
    zero = scored[scored["ticker"].isin(held)]
    if len(zero):
        views["zero-shot fifth"] = view(zero, models)
    whole = views["all tickers"]
    by_year, slices, crisis = whole["by_year"], whole["slices"], whole["crisis"]
    sets = confidence_sets(scored, models, "harx_gko")
    print(f"\nwalk-forward {min(by_year)}-{max(by_year)}: {len(scored)} (ticker, day) pairs of "
          f"{scored['ticker'].nunique()} tickers ({len(held)} zero-shot), every model on the same pairs")
    header = (f"{'model':<16}{'QLIKE':>8}{'gain':>8}{'DM t':>7}{'better':>7}{'cov50':>7}{'cov90':>7}{'VaR99':>7}"
              f"{'kup ok':>7}{'RMSE/p':>8}{'worst yr':>9}{'rise':>6}{'post5':>7}")
    for label, v in views.items():
        print(f"\n{label}\n{header}")
        for m, s in v["summary"].items():
            worst = max(year[m] for year in v["by_year"].values())
            print(f"{m:<16}{s['qlike']:>8.4f}{s['gain']:>+8.4f}{s['dm_t']:>7.2f}{s['tickers_better']:>7.0%}"
                  f"{s['coverage_50']:>7.3f}{s['coverage_90']:>7.3f}{s['var99']:>7.2%}"
                  f"{v['slices'][m]['kupiec99_not_rejected_share']:>7.0%}{s['rmse_ratio']:>8.4f}{worst:>+9.4f}"
                  f"{v['crisis'][m]['log_variance_rise']:>6.2f}{v['crisis'][m]['qlike_5_days_after']:>7.3f}")
    print("\nQLIKE minus HARX-GKO's by year (negative: better)")
    print(f"{'model':<16}" + "".join(f"{y:>8}" for y in by_year))
    for m in models:
        print(f"{m:<16}" + "".join(f"{by_year[y][m]:>+8.4f}" for y in by_year))
    print("\n90 % coverage by year | by tercile of forecast volatility")
    for m in models:
        s = slices[m]
        print(f"{m:<16}" + "".join(f"{v:>7.3f}" for v in s["coverage_90_by_year"].values()) + "  |"
              + "".join(f"{v:>7.3f}" for v in s["coverage_90_by_tercile"]))
    print(f"\nvolatility jumps: {crisis['events']} events ('rise': mean log-variance rise of the forecast the day "
          f"after; 'post5': QLIKE of the 5 days after)")
    print(f"Model Confidence Set (10 %, date-averaged QLIKE): {sets['mcs_included']}; p-values "
          + ", ".join(f"{k} {v:.3f}" for k, v in sets["mcs_pvalues"].items()))
    print("SPA vs HARX-GKO (H0: no model beats it): p = " + ", ".join(
        f"{k} {v:.4f}" for k, v in sets["spa_pvalues"].items()) + f"; best mean QLIKE: {sets['best_by_mean_qlike']}")

    goals = judge(args.platform, whole, views.get("zero-shot fifth"))
    for text, (value, met) in goals.items():
        print(f"  {'met    ' if met else 'NOT met'}  {text}: {value}")
    wall = time.perf_counter() - START
    print(f"bench wall time {wall / 60:.1f} min (goal <= {GOALS['wall_minutes']} at 421 tickers)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "device": "cpu"},
        "universe": args.universe.name if args.universe else "18 shipped", "tickers": int(scored["ticker"].nunique()),
        "zero_shot": held, "config": asdict(config), "pairs": len(scored), "folds": folds, "platform": args.platform,
        "online_rates": online_rates(),
        "views": views, "confidence_sets": sets, "goals": {k: {"value": v, "met": bool(m)}
                                                             for k, (v, m) in goals.items()},
        "wall_seconds": wall, "gpu": "no GPU machine was lent to this task; CPU only",
    }, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
    print(f"results: {RESULTS}")


def judge(name: str, whole: dict, zero: dict | None) -> dict:
    s, sl, by_year, crisis = whole["summary"][name], whole["slices"][name], whole["by_year"], whole["crisis"]
    z = zero["summary"][name] if zero else None
    lo, hi = GOALS["coverage_90_each"]
    each = [*sl["coverage_90_by_year"].values(), *sl["coverage_90_by_tercile"]]
    worst = max(v[name] for v in by_year.values())
    goals = {
        f"{name}: QLIKE gain vs HARX-GKO >= {GOALS['qlike_gain']}": (s["gain"], s["gain"] >= GOALS["qlike_gain"]),
        f"DM t >= {GOALS['dm_t']}": (s["dm_t"], s["dm_t"] >= GOALS["dm_t"]),
        f"better on >= {GOALS['tickers_better']:.0%} of tickers": (s["tickers_better"],
                                                                  s["tickers_better"] >= GOALS["tickers_better"]),
        f"no year worse than HARX-GKO by > {GOALS['worst_year']}": (worst, worst <= GOALS["worst_year"]),
        "90 % coverage in [0.89, 0.91] pooled": (s["coverage_90"], 0.89 <= s["coverage_90"] <= 0.91),
        "90 % coverage in [0.88, 0.92] every year and tercile": ((min(each), max(each)),
                                                                 lo <= min(each) and max(each) <= hi),
        "50 % coverage in [0.485, 0.515]": (s["coverage_50"], 0.485 <= s["coverage_50"] <= 0.515),
        "99 % VaR breaches <= 1.2 %": (s["var99"], s["var99"] <= GOALS["var99"]),
        "Kupiec 99 % not rejected for >= 90 % of tickers": (sl["kupiec99_not_rejected_share"],
                                                            sl["kupiec99_not_rejected_share"] >= GOALS["kupiec_share"]),
        "point RMSE <= 1.001 x persistence": (s["rmse_ratio"], s["rmse_ratio"] <= GOALS["rmse_ratio"]),
        "no leakage sign (gain <= 0.1, every ticker RMSE >= 0.995 x)": (
            (s["gain"], s["min_ticker_rmse_ratio"]), s["gain"] <= 0.1 and s["min_ticker_rmse_ratio"] >= 0.995),
        "follows a volatility jump at least as fast as HARX-GKO (rise the day after)": (
            (crisis[name]["log_variance_rise"], crisis["harx_gko"]["log_variance_rise"]),
            crisis[name]["log_variance_rise"] >= crisis["harx_gko"]["log_variance_rise"]),
    }
    if z:
        goals[f"zero-shot: gain >= {GOALS['zero_shot_gain']}, DM t >= {GOALS['zero_shot_dm_t']}"] = (
            (z["gain"], z["dm_t"]), z["gain"] >= GOALS["zero_shot_gain"] and z["dm_t"] >= GOALS["zero_shot_dm_t"])
    return goals


START = time.perf_counter()

if __name__ == "__main__":
    main()
