"""The dashboard at universe size: the ``/stockops/`` overview and a ticker page drawn for 18, 100 and 421 tickers.

For each size, a fresh home made as the platform leaves it after a day (``tests/unit/reporting/dashboard_home.py``):
every ticker's whole history published as a snapshot, its ``status.json``, ``--days`` realized champion forecasts
per ticker plus the next session's in the forecast log, one monitor check with its per-ticker drift, a champion.
The series are the 18 shipped ones plus those of ``universe.parquet`` (real US-listed daily series in Yahoo's
layout, kept outside the repository; its path on the command line), or without it series resampled from the
shipped ones (``tests/universe.py``). Then, each in a fresh interpreter (the api-server's first request after a
start), ``--repeats`` times, the median kept:

- **overview, first draw**: importing the dashboard and drawing the page (``render_page``), the interpreter's own
  start excluded, wall and CPU seconds (the machine's other work shows in the wall time); and **warm**: the same page drawn again in that process (nothing changed: from the stamps' cache);
- **ticker page, cold**: a fresh interpreter straight to one ticker's page (matplotlib imported on the way);
  **warm server**: after the overview and the charts' warm-up (``warm_up``, as the api-server does), the first draw
  of that ticker's page; **again**: the same page redrawn (its charts kept);
- the overview's HTML size (and gzipped, as a proxy would send it).

Goals (issue 27, item 4): overview first draw <= 2 s at 421 tickers; ticker page <= 0.5 s (warm server).
Results: bench/results/dashboard_draw.json. Run it under the benches' lock:

    flock /tmp/stockops-bench.lock .venv/bin/python bench/dashboard_draw.py [<path>/universe.parquet]
        [--sizes 18 100 421] [--days 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "dashboard_draw.json"
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

GOAL_OVERVIEW_S, GOAL_TICKER_S = 2.0, 0.5
REFERENCE = "the page before issue 27: two matplotlib charts per ticker, 4.1 s first draw for 18 tickers"

_CHILD = r"""
import json, resource, sys, time
def cpu():
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime
started, started_cpu = time.perf_counter(), cpu()
from stockops.core.settings import get_settings
from stockops.reporting.dashboard.page import render_page, render_ticker_page
settings, ticker, out = get_settings(), sys.argv[1], {}
if sys.argv[2] == "overview":
    page = render_page(settings, user="bench", approvals=[])
    out["first_s"], out["first_cpu_s"] = time.perf_counter() - started, cpu() - started_cpu
    again = time.perf_counter()
    render_page(settings, user="bench", approvals=[])
    out["warm_s"] = time.perf_counter() - again
    out["html_bytes"] = len(page.encode())
    out["rows"] = page.count('<tr id="row-')
    from stockops.charts.dashboard import _figure, _svg_uri
    _svg_uri(_figure()[0])  # what warm_up does, here in the foreground
    drawn, drawn_cpu = time.perf_counter(), cpu()
    render_ticker_page(settings, ticker, user="bench")
    out["ticker_warm_server_s"], out["ticker_warm_server_cpu_s"] = time.perf_counter() - drawn, cpu() - drawn_cpu
    drawn = time.perf_counter()
    render_ticker_page(settings, ticker, user="bench")
    out["ticker_again_s"] = time.perf_counter() - drawn
    import gzip
    out["html_gzip_bytes"] = len(gzip.compress(page.encode(), 6))
else:
    render_ticker_page(settings, ticker, user="bench")
    out["ticker_cold_s"] = time.perf_counter() - started
print(json.dumps(out))
"""


def universe_frames(universe: Path | None, n: int) -> dict:
    """``n`` series: the 18 shipped, then ``universe``'s in name order (or, without it, made ones)."""
    import pandas as pd

    from stockops.core.settings import WATCHLIST, make_settings
    from stockops.data.sources import shipped_series
    from tests.universe import synthetic_universe

    if universe is None:
        return synthetic_universe(n, seed=27)
    folder = make_settings().shipped_prices_dir
    frames = {t: shipped_series(t, folder) for t in WATCHLIST[:n]}
    table = pd.read_parquet(universe)
    for ticker, rows in table.groupby("Ticker", sort=True):
        if len(frames) >= n:
            break
        if ticker not in frames:
            frame = rows[["Date", "Open", "High", "Low", "Close", "Volume"]].dropna().reset_index(drop=True)
            frames[str(ticker)] = frame.assign(Date=pd.to_datetime(frame["Date"]), Volume=frame["Volume"].astype("int64"))
    return frames


def make_home(home: Path, frames: dict, days: int) -> dict[str, str]:
    from stockops.core import audit
    from stockops.core.settings import get_settings
    from tests.unit.reporting.dashboard_home import build_home

    tickers = list(frames)
    env = {"STOCKOPS_HOME": str(home), "STOCKOPS_TICKERS": ",".join(tickers), "STOCKOPS_TICKER": tickers[0]}
    os.environ.update(env)
    settings = get_settings()
    build_home(settings, frames, days, drifted=tuple(tickers[1::7]))
    audit.record(settings.audit_log, "promotion", from_version=None, to_version="1", reason="bench", model_kind="lstm")
    return env


def child(env: dict, ticker: str, what: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, ticker, what], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env, "PYTHONPATH": str(ROOT / "include")})
    if done.returncode:
        raise RuntimeError(f"the {what} draw failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(universe: Path | None, n: int, days: int, repeats: int) -> dict:
    import time

    frames = universe_frames(universe, n)
    home = Path(tempfile.mkdtemp(prefix="stockops-bench-dashboard-"))
    try:
        started = time.perf_counter()
        env = make_home(home, frames, days)
        made_s = time.perf_counter() - started
        ticker = list(frames)[len(frames) // 2]
        runs = [child(env, ticker, "overview") for _ in range(repeats)]
        colds = [child(env, ticker, "ticker") for _ in range(repeats)]
        forecast_log = home / "monitoring" / "forecasts.jsonl"
        row: dict[str, Any] = {"tickers": len(frames), "forecast_days": days, "home_made_s": round(made_s, 1),
               "forecast_log_mb": round(forecast_log.stat().st_size / 1e6, 2) if forecast_log.exists() else 0}
        for name in ("first_s", "first_cpu_s", "warm_s", "ticker_warm_server_s", "ticker_warm_server_cpu_s",
                     "ticker_again_s"):
            row[name] = round(statistics.median(r[name] for r in runs), 4)
        row["ticker_cold_s"] = round(statistics.median(r["ticker_cold_s"] for r in colds), 4)
        row["html_bytes"], row["html_gzip_bytes"], row["rows"] = (runs[0]["html_bytes"], runs[0]["html_gzip_bytes"],
                                                                 runs[0]["rows"])
        row["runs"] = runs + colds
        return row
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("universe", type=Path, nargs="?", help="universe.parquet (without it: made series)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[18, 100, 421])
    parser.add_argument("--days", type=int, default=60, help="realized forecast days per ticker in the log")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        row = measure(args.universe, n, args.days, args.repeats)
        rows.append(row)
        print(f"{row['tickers']:>4} tickers: overview first {row['first_s']:.2f} s ({row['first_cpu_s']:.2f} CPU-s), "
              f"warm {row['warm_s']:.3f} s, "
              f"{row['html_bytes'] / 1e3:.0f} kB ({row['html_gzip_bytes'] / 1e3:.0f} kB gzipped); ticker page "
              f"warm server {row['ticker_warm_server_s']:.2f} s ({row['ticker_warm_server_cpu_s']:.2f} CPU-s), again {row['ticker_again_s']:.3f} s, cold process "
              f"{row['ticker_cold_s']:.2f} s", flush=True)
    print(f"\nreference: {REFERENCE}")
    print(f"{'tickers':>7} {'first s':>8} {'CPU-s':>6} {'goal':>5} {'warm s':>7} {'HTML kB':>8} {'ticker s':>9} "
          f"{'goal':>5} {'again s':>8} {'cold s':>7}")
    for row in rows:
        print(f"{row['tickers']:>7} {row['first_s']:>8.2f} {row['first_cpu_s']:>6.2f} {GOAL_OVERVIEW_S:>5.1f} "
              f"{row['warm_s']:>7.3f} "
              f"{row['html_bytes'] / 1e3:>8.0f} {row['ticker_warm_server_s']:>9.2f} {GOAL_TICKER_S:>5.1f} "
              f"{row['ticker_again_s']:>8.3f} {row['ticker_cold_s']:>7.2f}")
    largest = max(rows, key=lambda r: r["tickers"])
    met = largest["first_s"] <= GOAL_OVERVIEW_S and all(r["ticker_warm_server_s"] <= GOAL_TICKER_S for r in rows)
    print(f"goals (overview <= {GOAL_OVERVIEW_S} s at {largest['tickers']}, ticker page <= {GOAL_TICKER_S} s): "
          f"{'met' if met else 'NOT met'}")
    if RESULTS.exists():  # keep the sizes this run did not measure
        kept = {r["tickers"]: r for r in json.loads(RESULTS.read_text()).get("rows", [])}
        kept.update({r["tickers"]: r for r in rows})
        rows = [kept[n] for n in sorted(kept)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "series": "universe.parquet" if args.universe else "made (tests/universe.py)",
        "goals": {"overview_first_draw_s": GOAL_OVERVIEW_S, "ticker_page_s": GOAL_TICKER_S},
        "reference": REFERENCE, "rows": rows}, indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
