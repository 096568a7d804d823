"""A daily ingest at universe size: 18, 100 and 421 real tickers, first snapshot and one new session.

The universe is the 18 shipped series plus the 403 of ``universe.parquet`` (a table of real US-listed daily
series, 2004-08-19 .. 2020-12-11, columns ``Ticker, Date, Open, High, Low, Close, Adj Close, Volume`` in
Yahoo's layout, kept outside the repository; its path on the command line), served by the ``csv`` source
from a folder of ``<TICKER>.csv`` files this bench writes. For each size, in a fresh home:

- **first**: the whole history of every ticker (2004-08-19 .. 2020-12-09) validated and published;
- **incremental**: the next session (2020-12-10), one new row per ticker, against the published history.

Two ways the platform runs it:

- **in-process** — ``stockops.ingest.ingest_watchlist`` in a fresh interpreter: the ingest call's own CPU seconds
  (user + system, the interpreter's imports and Great Expectations' set-up excluded, and beside them the whole
  process's), wall time and peak RSS;
- **embedded Airflow** (``--airflow``) — the local platform (scheduler with LocalExecutor, SQLite), a triggered
  ``stock_ingest`` run per day: queued to finished, from the REST API;
- **Celery** (``--celery``) — the Celery platform (PostgreSQL, Redis, one worker of concurrency 2), the same runs.

Goals (issue 26): in-process incremental <= 0.05 CPU-s per ticker at 421; embedded Airflow 421 tickers <= 60 s;
Celery <= 1.3 x embedded; first ingest of the whole 421-ticker history <= 3 minutes embedded. Results: bench/results/universe_ingest.json.

    .venv/bin/python bench/universe_ingest.py <path>/universe.parquet [--sizes 18 100 421]
        [--airflow] [--celery] [--skip-in-process]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from results_io import merged_rows

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "universe_ingest.json"
sys.path.insert(0, str(ROOT / "include"))

FIRST_DAY, NEXT_DAY = "2020-12-09", "2020-12-10"

_CHILD = r"""
import json, resource, sys, time
started = time.perf_counter()
from stockops.core.settings import get_settings
from stockops.data.gxproject import _gx_context
from stockops.ingest import ingest_watchlist
settings = get_settings()
_gx_context(settings.gx_project_dir, settings.gx_work_dir)  # Great Expectations' set-up, once per process
before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
outcome = ingest_watchlist(sys.argv[1], settings=settings)
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
counts = {}
for status in outcome.statuses.values():
    counts[status.value] = counts.get(status.value, 0) + 1
print(json.dumps({"seconds": time.perf_counter() - wall, "cpu_seconds": cpu,
                  "process_cpu_seconds": after.ru_utime + after.ru_stime,
                  "process_seconds": time.perf_counter() - started,
                  "peak_rss_mb": after.ru_maxrss / 1024, "tickers": len(outcome.statuses), "outcomes": counts,
                  "quarantined": {q.ticker: q.reason[:200] for q in outcome.quarantined},
                  "held": {v.ticker: v.held_days for v in outcome.held_for_review}}))
"""


def write_feed(universe: Path, folder: Path) -> list[str]:
    """Every series as ``<TICKER>.csv`` (yfinance's layout, ``Adj Close`` included): the 18 shipped, then the rest."""
    import pandas as pd

    from stockops.core.settings import WATCHLIST, make_settings

    folder.mkdir(parents=True, exist_ok=True)
    shipped = make_settings().shipped_prices_dir
    order = []
    for ticker in WATCHLIST:
        source = next(shipped.glob(f"{ticker}.csv*"))
        shutil.copy(source, folder / source.name)
        order.append(ticker)
    table = pd.read_parquet(universe)
    for ticker, rows in table.groupby("Ticker", sort=True):
        if ticker in order:
            continue
        rows.drop(columns="Ticker").to_csv(folder / f"{ticker}.csv", index=False, date_format="%Y-%m-%d")
        order.append(str(ticker))
    return order


def in_process(feed: Path, tickers: list[str]) -> dict:
    home = Path(tempfile.mkdtemp(prefix="stockops-bench-universe-"))
    env = {**os.environ, "STOCKOPS_HOME": str(home), "STOCKOPS_SOURCE": "csv", "STOCKOPS_CSV_PATH": str(feed),
           "STOCKOPS_TICKERS": ",".join(tickers), "GX_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT / "include")}
    out = {}
    try:
        for mode, day in (("first", FIRST_DAY), ("incremental", NEXT_DAY)):
            done = subprocess.run([sys.executable, "-c", _CHILD, day], env=env, capture_output=True, text=True,
                                  timeout=3600, check=True)
            out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return out


def in_airflow(feed: Path, tickers: list[str], setup: str = "embedded") -> dict:
    from stockops.core.processes import free_port
    from stockops.core.settings import get_settings
    from stockops.launch.components import stop_process_tree
    from stockops.launch.local import LocalPlatform

    if setup == "celery":
        from stockops.launch.cluster import CeleryPlatform, unreachable_services

        missing = unreachable_services()
        if missing:
            return {"skipped": "; ".join(missing)}
    home = Path(tempfile.mkdtemp(prefix=f"stockops-bench-universe-{setup}-"))
    os.environ.update({"STOCKOPS_HOME": str(home), "STOCKOPS_SOURCE": "csv", "STOCKOPS_CSV_PATH": str(feed),
                       "STOCKOPS_TICKERS": ",".join(tickers), "AIRFLOW_HOME": str(home / "airflow"),
                       "STOCKOPS_INGEST_SCHEDULE": "manual"})
    kind = CeleryPlatform if setup == "celery" else LocalPlatform
    plat = kind(get_settings(), port=free_port(), mlflow_port=free_port())
    proc = plat.start()
    out = {}
    try:
        plat.wait_healthy(proc, timeout=300)
        plat.ensure_dags_ready(["stock_ingest"], timeout=240)
        plat.airflow("dags", "pause", "stock_train", check=False)  # the ingest alone
        plat.airflow("dags", "pause", "stock_monitor", check=False)
        token = plat.api_token()
        for mode, day in (("first", FIRST_DAY), ("incremental", NEXT_DAY)):
            run_id = plat.trigger("stock_ingest", token, {}, f"{day}T22:00:00Z")
            state = plat.wait_for_run("stock_ingest", run_id, token, timeout=3600)
            info = plat.api(f"dags/stock_ingest/dagRuns/{run_id}", token)
            started = datetime.fromisoformat(info["queued_at"].replace("Z", "+00:00"))
            ended = datetime.fromisoformat(info["end_date"].replace("Z", "+00:00"))
            out[mode] = {"state": state, "seconds": (ended - started).total_seconds()}
            print(f"  {setup} Airflow, {len(tickers)} tickers, {mode}: {out[mode]['seconds']:.1f} s, {state}",
                  flush=True)
    finally:
        if setup == "celery":
            plat.stop()
        stop_process_tree(proc)
        shutil.rmtree(home, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("universe", type=Path, help="universe.parquet (403 real series)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[18, 100, 421])
    parser.add_argument("--airflow", action="store_true", help="also through the embedded Airflow platform")
    parser.add_argument("--celery", action="store_true", help="also through the Celery platform (PostgreSQL, Redis)")
    parser.add_argument("--skip-in-process", action="store_true")
    args = parser.parse_args()
    feed = Path(tempfile.mkdtemp(prefix="stockops-universe-feed-"))
    order = write_feed(args.universe, feed)
    rows = []
    try:
        for n in args.sizes:
            chosen = order[:n]
            row: dict = {"tickers": n}
            if not args.skip_in_process:
                row["in_process"] = in_process(feed, chosen)
            for mode in ("first", "incremental") if not args.skip_in_process else ():
                r = row["in_process"][mode]
                r["cpu_seconds_per_ticker"] = r["cpu_seconds"] / n
                print(f"in-process {n:>3} tickers, {mode:<11}: {r['seconds']:6.1f} s wall, {r['cpu_seconds']:6.1f} CPU-s "
                      f"({r['cpu_seconds_per_ticker']:.3f} per ticker), peak {r['peak_rss_mb']:.0f} MB, {r['outcomes']}",
                      flush=True)
            if args.airflow:
                row["embedded_airflow"] = in_airflow(feed, chosen)
            if args.celery:
                row["celery"] = in_airflow(feed, chosen, "celery")
            rows.append(row)
    finally:
        shutil.rmtree(feed, ignore_errors=True)
    print(f"\n{'tickers':>7} {'mode':<11} {'CPU-s/ticker':>12} {'x ref':>6} {'wall s':>7} {'embedded s':>10} "
          f"{'Celery s':>9} {'Celery/emb':>10}")
    reference = rows[0].get("in_process")
    for row in rows:
        for mode in ("first", "incremental"):
            r = row.get("in_process", {}).get(mode)
            embedded = row.get("embedded_airflow", {}).get(mode, {}).get("seconds")
            celery = row.get("celery", {}).get(mode, {}).get("seconds")
            cells = (f"{r['cpu_seconds_per_ticker']:>12.3f} "
                     f"{r['cpu_seconds_per_ticker'] / reference[mode]['cpu_seconds_per_ticker']:>6.2f} "
                     f"{r['seconds']:>7.1f}") if r and reference else f"{'':>12} {'':>6} {'':>7}"
            ratio = f"{celery / embedded:>10.2f}" if celery and embedded else ""
            print(f"{row['tickers']:>7} {mode:<11} {cells} {'' if embedded is None else f'{embedded:10.1f}'} "
                  f"{'' if celery is None else f'{celery:9.1f}'} {ratio}")
    largest = rows[-1]
    if "in_process" in largest:
        goal = largest["in_process"]["incremental"]["cpu_seconds_per_ticker"] <= 0.05
        print(f"in-process incremental at {largest['tickers']}: goal <= 0.05 CPU-s per ticker: "
              f"{'met' if goal else 'NOT met'}")
    if RESULTS.exists():  # keep the sizes and modes this run did not measure
        rows = merged_rows(json.loads(RESULTS.read_text()).get("rows", []), rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
        "days": {"first": FIRST_DAY, "incremental": NEXT_DAY},
        "goals": {"in_process_incremental_cpu_s_per_ticker": 0.05, "embedded_airflow_421_s": 60,
                  "embedded_airflow_first_421_s": 180, "celery_over_embedded": 1.3},
        "rows": rows}, indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
