"""How one daily ingest scales with the watchlist: 1, 6 and 18 tickers, time and peak memory.

Two ways the platform runs it, each measured on the real replayed series (one new session per
ticker: the incremental daily case), 1 ticker as the reference:

- **in-process** — ``stockops.ingest.ingest_watchlist`` in a fresh interpreter (what ``make demo``
  does): wall time and the process's peak RSS, imports included;
- **embedded Airflow** — ``airflow standalone`` (scheduler with LocalExecutor, SQLite), a triggered
  ``stock_ingest`` run narrowed with its ``tickers`` Param: the run's duration (queued to
  finished, from the REST API) and the peak RSS summed over the platform's processes.

Goal (issue 12): 18 tickers in under 3 x the time of 1. Results: bench/results/ingest_scale.json.

    .venv/bin/python bench/ingest_scale.py [--sizes 1 6 18] [--skip-airflow]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "ingest_scale.json"
sys.path.insert(0, str(ROOT / "include"))

from stockops.core.settings import WATCHLIST  # noqa: E402


def replay_days() -> tuple[str, list[str]]:
    """Four recent NYSE sessions (the scheduler runs no logical date in the future): the baseline
    publishes every ticker on the first, then each measured size ingests the next one."""
    from datetime import date, timedelta

    from stockops.data.calendar import sessions

    recent = [str(d) for d in sessions(date.today() - timedelta(days=30), date.today() - timedelta(days=1))][-4:]
    return recent[0], recent[1:]


_CHILD = r"""
import json, resource, sys, time
started = time.perf_counter()
from stockops.core.settings import get_settings
from stockops.ingest import ingest_watchlist
statuses = ingest_watchlist(sys.argv[1], sys.argv[2], settings=get_settings()).statuses
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "statuses": sorted({s.value for s in statuses.values()}), "tickers": len(statuses)}))
"""


def tickers(n: int) -> list[str]:
    return list(WATCHLIST[:n])


def in_process(env: dict, day: str, chosen: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, day, ",".join(chosen)], env=env, capture_output=True,
                         text=True, timeout=1800, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_in_process(sizes: list[int]) -> list[dict]:
    home = Path(tempfile.mkdtemp(prefix="stockops-bench-ingest-"))
    env = {**os.environ, "STOCKOPS_HOME": str(home), "STOCKOPS_SOURCE": "replay", "GX_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": str(ROOT / "include")}
    env.pop("STOCKOPS_TICKERS", None)
    baseline_day, days = replay_days()
    first = in_process(env, baseline_day, list(WATCHLIST))
    print(f"in-process baseline (first snapshot of {first['tickers']} tickers, full history): {first['seconds']:.1f} s")
    rows = []
    for n, day in zip(sizes, days, strict=False):
        result = in_process(env, day, tickers(n))
        assert result["statuses"] == ["published"], result
        rows.append({"tickers": n, "day": day, **result})
        print(f"  in-process {n:>2} tickers: {result['seconds']:6.1f} s, peak {result['peak_rss_mb']:.0f} MB", flush=True)
    return rows


class PeakRss:
    """Sums the RSS of a process tree every 0.5 s; keeps the highest sum."""

    def __init__(self, pid: int):
        import psutil

        self.root, self.peak, self._stop = psutil.Process(pid), 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for proc in [self.root, *self.root.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total / 2**20)
            self._stop.wait(0.5)

    def __enter__(self) -> PeakRss:
        self.peak = 0.0
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure_airflow(sizes: list[int]) -> list[dict]:
    from stockops.core.processes import free_port
    from stockops.core.settings import get_settings
    from stockops.launch.components import stop_process_tree
    from stockops.launch.local import LocalPlatform

    home = Path(tempfile.mkdtemp(prefix="stockops-bench-airflow-"))
    # triggered runs only: the scheduler's own run of the latest interval would overlap the measured ones
    os.environ.update({"STOCKOPS_HOME": str(home), "STOCKOPS_SOURCE": "replay", "AIRFLOW_HOME": str(home / "airflow"),
                       "STOCKOPS_INGEST_SCHEDULE": "manual"})
    os.environ.pop("STOCKOPS_TICKERS", None)
    plat = LocalPlatform(get_settings(), port=free_port(), mlflow_port=free_port())
    proc = plat.start()
    rows = []
    try:
        plat.wait_healthy(proc, timeout=300)
        plat.ensure_dags_ready(["stock_ingest"], timeout=240)
        plat.airflow("dags", "pause", "stock_train", check=False)  # measure the ingest alone
        plat.airflow("dags", "pause", "stock_monitor", check=False)
        token = plat.api_token()

        def run(day: str, chosen: list[str]) -> dict:
            run_id = plat.trigger("stock_ingest", token, {"tickers": ",".join(chosen)}, f"{day}T22:00:00Z")
            state = plat.wait_for_run("stock_ingest", run_id, token, timeout=1800)
            info = plat.api(f"dags/stock_ingest/dagRuns/{run_id}", token)
            started = datetime.fromisoformat(info["queued_at"].replace("Z", "+00:00"))
            ended = datetime.fromisoformat(info["end_date"].replace("Z", "+00:00"))
            return {"state": state, "seconds": (ended - started).total_seconds()}

        baseline_day, days = replay_days()
        first = run(baseline_day, list(WATCHLIST))
        print(f"Airflow baseline (first snapshot of 18 tickers): {first['seconds']:.1f} s, {first['state']}")
        for n, day in zip(sizes, days, strict=False):
            with PeakRss(proc.pid) as peak:
                result = run(day, tickers(n))
            assert result["state"] == "success", result
            rows.append({"tickers": n, "day": day, **result, "peak_rss_mb": peak.peak})
            print(f"  Airflow {n:>2} tickers: {result['seconds']:6.1f} s, platform peak {peak.peak:.0f} MB", flush=True)
    finally:
        stop_process_tree(proc)
    return rows


def with_ratios(rows: list[dict]) -> list[dict]:
    reference = rows[0]["seconds"]
    for row in rows:
        row["ratio_to_1"] = row["seconds"] / reference
        row["seconds_per_ticker"] = row["seconds"] / row["tickers"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 6, 18])
    parser.add_argument("--skip-airflow", action="store_true")
    parser.add_argument("--only-airflow", action="store_true")
    parser.add_argument("--start-method", default="forkserver", choices=["forkserver", "fork"],
                        help="the LocalExecutor's start method (fork: every task imports Great Expectations itself)")
    args = parser.parse_args()
    os.environ["AIRFLOW__SCHEDULER__MP_START_METHOD"] = args.start_method
    results = {} if args.only_airflow else {"in_process": with_ratios(measure_in_process(args.sizes))}
    if not args.skip_airflow:
        results[f"embedded_airflow_{args.start_method}"] = with_ratios(measure_airflow(args.sizes))
    print(f"\n{'mode':<18} {'tickers':>7} {'seconds':>8} {'ratio to 1':>11} {'s/ticker':>9} {'peak MB':>8}")
    for mode, rows in results.items():
        for row in rows:
            print(f"{mode:<18} {row['tickers']:>7} {row['seconds']:>8.1f} {row['ratio_to_1']:>11.2f} "
                  f"{row['seconds_per_ticker']:>9.2f} {row['peak_rss_mb']:>8.0f}")
        largest = rows[-1]
        print(f"{mode}: {largest['tickers']} tickers take {largest['ratio_to_1']:.2f} x the time of 1 "
              f"(goal < 3): {'met' if largest['ratio_to_1'] < 3 else 'NOT met'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if RESULTS.exists():  # keep the other modes' last results
        results = {**{k: v for k, v in json.loads(RESULTS.read_text()).items() if k.startswith(("in_", "embedded"))},
                   **results}
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
        "goal": "18 tickers in under 3 x the time of 1", **results}, indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
