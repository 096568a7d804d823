"""Walk-forward quality of the global LSTM risk forecaster against the classical baselines.

For each test year 2014–2020: train the default model (the one ``stock_train`` uses) on every
day before the year of all 18 shipped symbols (validation: the year before it, for early stopping
and calibration only), forecast every day of the year; refit the baselines (GARCH-N, GARCH-t,
EWMA, HAR-GK, HARX-GKO) on the same days before the year. Everything is scored on the same
(ticker, day) pairs: QLIKE, pinball, coverage, VaR breaches with Kupiec, RMSE against
persistence, Diebold–Mariano t of the LSTM against HARX-GKO on date-averaged losses. Also one
full training of the default model on the whole history (what a daily run costs).
The test years are never used to choose anything. Results: bench/results/model_quality.json.

    .venv/bin/python bench/model_quality.py [--years 2014 2015 ...] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "model_quality.json"
GOALS = {"qlike_gain_vs_harx": 0.010, "qlike_gain_stretch": 0.020, "dm_t": 2.0, "tickers_better": 12,
         "worst_year_loss": 0.01, "coverage_90": (0.89, 0.91), "coverage_50": (0.485, 0.515), "var99_max": 0.013,
         "rmse_ratio_max": 1.001, "train_seconds_max": 300, "leakage_gain": 0.05, "leakage_rmse": 0.995}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, nargs="+", default=list(range(2014, 2021)))
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    from stockops.core.settings import WATCHLIST
    from stockops.data.sources import shipped_series
    from stockops.model.baselines import walk_forward
    from stockops.model.risk_model import (
        DateSplit,
        RiskModelConfig,
        build_panel,
        fraction_split,
        sample_dates,
        sample_windows,
        train_risk,
    )
    from stockops.model.scoring import RiskForecast, score_panel

    config = RiskModelConfig(**({"epochs": args.epochs} if args.epochs else {}))
    frames = {t: shipped_series(t) for t in WATCHLIST}
    panel = build_panel(frames)
    market = frames["QQQ"]["Close"].to_numpy()
    print(f"imports + data {time.perf_counter() - started:.1f} s; {len(WATCHLIST)} symbols, {len(panel.dates)} days")

    lstm: dict[tuple[str, np.datetime64], tuple] = {}
    folds = []
    for year in args.years:
        split = DateSplit(val_start=np.datetime64(f"{year - 1}-01-01"), test_start=np.datetime64(f"{year}-01-01"),
                          test_end=np.datetime64(f"{year}-12-31"))
        trained = train_risk(panel, split, config)
        test = split.parts(panel, config.window)["test"]
        f = trained.forecaster.predict_windows(sample_windows(panel, test, config.window))
        for i, (t, day) in enumerate(zip(test.ticker, sample_dates(panel, test), strict=True)):
            lstm[(panel.tickers[t], day)] = (f["variance"][i], f["quantiles"][i], f["point"][i])
        folds.append({"year": year, "train_seconds": round(trained.seconds, 1), "samples": trained.samples,
                      "best_epoch": trained.best_epoch, "epochs_run": len(trained.history["loss"]),
                      "calibration": {k: v for k, v in asdict(trained.forecaster.calibration).items()
                                      if k in ("variance_scale", "z", "shrink")}})
        print(f"{year}: trained in {trained.seconds:.0f} s ({folds[-1]['epochs_run']} epochs, best "
              f"{trained.best_epoch}), {len(test)} test samples", flush=True)

    # baselines on the same years, then keep the (ticker, day) pairs every model has
    names, rows = None, []
    for ticker in WATCHLIST:
        wf = walk_forward(frames[ticker], market, args.years)
        names = names or list(wf.forecasts)
        for i, day in enumerate(wf.dates.astype("datetime64[D]")):
            if (ticker, day) in lstm:
                rows.append((ticker, day, wf.returns[i], lstm[(ticker, day)],
                             {n: (f.variance[i], f.quantiles[i], f.point[i]) for n, f in wf.forecasts.items()}))
    tickers = np.array([r[0] for r in rows])
    dates = np.array([r[1] for r in rows])
    returns = np.array([r[2] for r in rows])

    def stack(parts) -> RiskForecast:
        return RiskForecast(np.array([p[0] for p in parts]), np.array([p[1] for p in parts]),
                            np.array([p[2] for p in parts]))

    forecasts = {"lstm": stack([r[3] for r in rows]), **{n: stack([r[4][n] for r in rows]) for n in names}}
    scores = score_panel(forecasts, returns, tickers, dates, reference="harx_gko")
    by_year = {}
    years = dates.astype("datetime64[Y]").astype(int) + 1970
    for year in args.years:
        sel = years == year
        sub = score_panel({k: f.take(sel) for k, f in forecasts.items() if k in ("lstm", "harx_gko")},
                          returns[sel], tickers[sel], dates[sel], reference="harx_gko")
        by_year[year] = {k: v["pooled"]["qlike"] for k, v in sub.items()}

    # one full training of the default model, as stock_train runs it (last 10 % test, 10 % validation)
    full = train_risk(panel, fraction_split(panel), config)

    report(scores, by_year, full, folds, config, len(rows), time.perf_counter() - started)


def report(scores: dict, by_year: dict, full, folds: list, config, days: int, seconds: float) -> None:
    garch = scores["garch_normal"]["pooled"]["qlike"]
    print(f"\nwalk-forward {min(by_year)}-{max(by_year)}: {days} (ticker, day) pairs, every model on the same days")
    print(f"{'model':<13} {'QLIKE':>7} {'/GARCH-N':>8} {'pinball':>8} {'cov50':>6} {'cov90':>6} {'VaR95':>6} "
          f"{'VaR99':>6} {'RMSE/pers':>9} {'DM t vs HARX':>12}")
    for name, s in scores.items():
        p = s["pooled"]
        dm = s.get("dm_qlike_vs_harx_gko", float("nan"))
        print(f"{name:<13} {p['qlike']:>7.4f} {p['qlike'] / garch:>8.4f} {p['pinball']:>8.4f} {p['coverage_50']:>6.3f} "
              f"{p['coverage_90']:>6.3f} {p['var95_breaches']:>6.2%} {p['var99_breaches']:>6.2%} "
              f"{p['rmse_ratio']:>9.4f} {dm:>12.2f}")
    lstm, harx = scores["lstm"], scores["harx_gko"]
    gain = harx["pooled"]["qlike"] - lstm["pooled"]["qlike"]
    better = sum(lstm["by_ticker"][t]["qlike"] < harx["by_ticker"][t]["qlike"] for t in lstm["by_ticker"])
    worst_year = max(v["lstm"] - v["harx_gko"] for v in by_year.values())
    min_rmse = min(s["rmse_ratio"] for s in lstm["by_ticker"].values())
    goals = {
        f"QLIKE gain vs HARX-GKO >= {GOALS['qlike_gain_vs_harx']}": (gain, gain >= GOALS["qlike_gain_vs_harx"]),
        f"DM t vs HARX-GKO >= {GOALS['dm_t']}": (lstm["dm_qlike_vs_harx_gko"], lstm["dm_qlike_vs_harx_gko"] >= 2),
        f"better than HARX-GKO on >= {GOALS['tickers_better']} of 18": (better, better >= GOALS["tickers_better"]),
        "never worse than HARX-GKO by > 0.01 in a year": (worst_year, worst_year <= GOALS["worst_year_loss"]),
        "90 % coverage in [0.89, 0.91]": (lstm["pooled"]["coverage_90"], 0.89 <= lstm["pooled"]["coverage_90"] <= 0.91),
        "50 % coverage in [0.485, 0.515]": (lstm["pooled"]["coverage_50"],
                                            0.485 <= lstm["pooled"]["coverage_50"] <= 0.515),
        "99 % VaR breaches <= 1.3 %": (lstm["pooled"]["var99_breaches"], lstm["pooled"]["var99_breaches"] <= 0.013),
        "point RMSE <= 1.001 x persistence": (lstm["pooled"]["rmse_ratio"], lstm["pooled"]["rmse_ratio"] <= 1.001),
        "full training <= 300 s": (full.seconds, full.seconds <= GOALS["train_seconds_max"]),
        "no leakage sign (gain <= 0.05, every symbol RMSE >= 0.995 x)": ((gain, min_rmse),
                                                                         gain <= 0.05 and min_rmse >= 0.995),
    }
    print("\nQLIKE by year (LSTM - HARX-GKO; negative = LSTM better): "
          + ", ".join(f"{y} {v['lstm'] - v['harx_gko']:+.4f}" for y, v in by_year.items()))
    print(f"full training on {len(full.samples)} parts {full.samples}: {full.seconds:.0f} s "
          f"({len(full.history['loss'])} epochs)")
    for text, (value, met) in goals.items():
        print(f"  {'met    ' if met else 'NOT met'}  {text}: {value}")
    print(f"bench wall time {seconds / 60:.1f} min (goal <= 45)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "device": "cpu"},
        "config": asdict(config), "days": days, "folds": folds, "scores": scores, "qlike_by_year": by_year,
        "goals": {k: {"value": v, "met": bool(m)} for k, (v, m) in goals.items()},
        "full_training": {"seconds": full.seconds, "samples": full.samples, "epochs_run": len(full.history["loss"])},
        "wall_seconds": seconds,
        "gpu": "no GPU machine was lent to this task; CPU only",
    }, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
