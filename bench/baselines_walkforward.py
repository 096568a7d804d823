"""Classical risk baselines walked forward 2014-2020 on the 18 shipped series, pooled.

Every model is refitted each year on all days before it and forecasts the next day's return
variance and quantiles for every day of the year (QQQ is the market reference). Prints, per
model: pooled QLIKE ratio to GARCH(1,1)-normal, the DM t of date-averaged QLIKE and pinball
differences against it (positive: better), on how many symbols it has the lower QLIKE,
50 %/90 % interval coverage, 95 %/99 % VaR breaches and Kupiec p-values.
Results: bench/results/baselines_walkforward.json.

    .venv/bin/python bench/baselines_walkforward.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from stockops.data.sources import shipped_series
from stockops.model.baselines import BASELINES, WalkForward, walk_forward
from stockops.model.portable.risk_inputs import align_market
from stockops.model.scoring import RiskForecast, score_panel

RESULTS = Path(__file__).resolve().parent / "results" / "baselines_walkforward.json"
SYMBOLS = ("GOOG", "MSFT", "IBM", "INTC", "CSCO", "ORCL", "JPM", "BAC", "XOM", "CVX", "KO", "PG", "JNJ", "WMT",
           "PFE", "GE", "T", "QQQ")
MARKET = "QQQ"
YEARS = tuple(range(2014, 2021))
REFERENCE = "garch_normal"


def one_symbol(ticker: str) -> WalkForward:
    """Walk one series forward, its market closes aligned on its dates."""
    frame = shipped_series(ticker)
    return walk_forward(frame, align_market(frame["Date"], shipped_series(MARKET)), YEARS)


def main() -> None:
    started = time.perf_counter()
    with ProcessPoolExecutor() as pool:
        runs = dict(zip(SYMBOLS, pool.map(one_symbol, SYMBOLS), strict=True))
    forecasts = {name: RiskForecast.concat([w.forecasts[name] for w in runs.values()]) for name in BASELINES}
    returns = np.concatenate([w.returns for w in runs.values()])
    dates = np.concatenate([w.dates for w in runs.values()])
    tickers = np.concatenate([np.repeat(t, len(w.returns)) for t, w in runs.items()])
    panel = score_panel(forecasts, returns, tickers, dates, REFERENCE)
    seconds = time.perf_counter() - started

    reference = panel[REFERENCE]["by_ticker"]
    header = (f"{'model':<13}{'QLIKE':>8}{'ratio':>7}{'DM t':>7}{'DM pin':>7}{'wins':>6}{'cov50':>7}{'cov90':>7}"
              f"{'VaR95':>7}{'VaR99':>7}{'kup95 p':>9}{'kup99 p':>9}")
    print(f"{len(SYMBOLS)} series, test years {YEARS[0]}-{YEARS[-1]}: {len(returns)} target days; "
          f"reference {REFERENCE}; DM t > 0: better than the reference")
    print(header)
    for name, entry in panel.items():
        s = entry["pooled"]
        wins = sum(entry["by_ticker"][t]["qlike"] < reference[t]["qlike"] for t in SYMBOLS)
        entry["qlike_wins"] = wins
        print(f"{name:<13}{s['qlike']:>8.4f}{entry.get('qlike_ratio', 1.0):>7.3f}"
              f"{entry.get(f'dm_qlike_vs_{REFERENCE}', float('nan')):>7.2f}"
              f"{entry.get(f'dm_pinball_vs_{REFERENCE}', float('nan')):>7.2f}{wins:>4}/{len(SYMBOLS)}"
              f"{s['coverage_50']:>7.3f}{s['coverage_90']:>7.3f}{s['var95_breaches']:>7.2%}{s['var99_breaches']:>7.2%}"
              f"{s['kupiec95_p']:>9.3f}{s['kupiec99_p']:>9.3f}")
    print(f"{seconds:.1f} s ({os.cpu_count()} CPUs)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "device": "cpu"},
        "symbols": list(SYMBOLS), "market": MARKET, "test_years": list(YEARS), "reference": REFERENCE,
        "days": len(returns), "models": panel,
    }, indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
