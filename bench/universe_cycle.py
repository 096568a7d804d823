"""The daily cycle at universe size: a new trading day → every ticker published → trained → gated → deployed →
``/forecast`` answering from the new champion for every ticker; 18, 100 and 421 real tickers, embedded and Celery.

The universe is the 18 shipped series plus the 403 of ``universe.parquet`` (real US-listed daily series,
2004-08-19 .. 2020-12-11; its path on the command line), written as a folder of ``<TICKER>.csv`` files that the
``csv`` source serves (``bench/universe_ingest.py``'s feed). A size takes the first N of them (the 18 first). For
each size and setup, in a fresh home, ``bench/lead_time.py``'s measurement runs with that watchlist: the platform
starts, its first cycle publishes 2020-12-09 for every ticker and trains and deploys the first champion; then
``stock_ingest`` is triggered for 2020-12-10 and the clock runs until ``/forecast/batch`` answers every ticker from a
new version trained on exactly the snapshots it serves. The gate lets any model through (``--gate promote`` of
lead_time: margin -1, tolerance 1): the path timed is the whole one, build and deploy included. Per stage, from the
trigger: the last publish, each task of the training run that trained on the whole new day (features, train,
evaluate, register, gate, build, deploy: queue wait and run time) and the moment every ticker answered. While the
platform still runs: ``/forecast/batch`` of every ticker at concurrency 1 for ``--batch-seconds`` (p50/p99), and
the new day's ``stock_monitor`` run (started by the same Asset event as training): its time and its report's size.

Goals (issue 27): 421 tickers <= 15 minutes embedded; Celery <= 1.3 x embedded; training alone (the train task)
on 421 tickers <= 8 minutes; ``/forecast/batch`` of 421 tickers p99 <= 100 ms at c=1; the monitor check for 421
tickers <= 2 minutes, its HTML <= 10 MB.
Results: bench/results/universe_cycle.json (a size or setup not run keeps its earlier result).

    .venv/bin/python bench/universe_cycle.py <path>/universe.parquet [--sizes 18 100 421]
        [--setups embedded,celery] [--batch-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "results" / "universe_cycle.json"
FIRST_DAY, NEW_DAY = "2020-12-09T22:00:00Z", "2020-12-10T22:00:00Z"
GOAL_S = 900.0
GOAL_TRAIN_S = 480.0
GOAL_CELERY_RATIO = 1.3
GOAL_BATCH_P99_MS = 100.0
STAGES = ("load_snapshots", "features", "train", "evaluate", "register", "gate", "build", "deploy")


def while_running(seconds: float):
    """``after`` for lead_time.measure: ``/forecast/batch`` of the whole watchlist at concurrency 1, then the new
    day's ``stock_monitor`` run (it starts with training, on the same day's Asset event): its wall time, its tasks'
    run times and its report's size."""

    def measure(settings, platform, token) -> dict:
        from serving_load import http_level

        row = http_level(f"{settings.serve_url}/forecast/batch", [b"{}"], 1, seconds, [], refused=b'"error"')
        batch = {"tickers": len(settings.tickers), **{k: row[k] for k in (
            "rps", "p50_ms", "p99_ms", "max_ms", "errors", "error_samples")}}
        return {"batch": batch, "monitor": monitor_run(settings, platform, token)}

    return measure


def monitor_run(settings, platform, token) -> dict:
    """The latest ``stock_monitor`` run, waited for: state, queued to end, each task's run time, the report's size."""
    from stockops.monitoring import report_folders

    runs = platform.api("dags/stock_monitor/dagRuns?order_by=-run_after&limit=1", token)["dag_runs"]
    if not runs:
        return {"error": "no stock_monitor run"}
    run_id = runs[0]["dag_run_id"]
    state = platform.wait_for_run("stock_monitor", run_id, token, timeout=900)
    run = platform.api(f"dags/stock_monitor/dagRuns/{run_id}", token)
    tis = platform.api(f"dags/stock_monitor/dagRuns/{run_id}/taskInstances", token)["task_instances"]
    queued, ended = (datetime.fromisoformat(run[k].replace("Z", "+00:00")) if run.get(k) else None
                     for k in ("queued_at", "end_date"))
    folders = report_folders(settings.monitoring_dir)
    html = sorted(folders[-1].glob("*.html")) if folders else []
    return {"run_id": run_id, "state": state,
            "seconds": round((ended - queued).total_seconds(), 1) if queued and ended else None,
            "tasks_s": {t["task_id"]: round(t["duration"], 1) for t in tis if t.get("duration") is not None},
            "report_mb": round(sum(p.stat().st_size for p in html) / 2**20, 2) if html else None}


def stages(result: dict) -> dict:
    """The cycle's stages, in seconds from the trigger: the last publish, then each task of the complete training
    run (when it was queued, how long it waited and ran, when it ended), then every ticker answering."""
    out: dict = {"published_at_s": result.get("last_publish_at_s")}
    complete = {t["task"]: t for t in result.get("tasks_summary", []) if t["run"].endswith("(complete)")}
    for task in STAGES:
        t = complete.get(task)
        if t is not None:
            out[task] = {"queued_at_s": t["first_queued_at_s"], "wait_s": t["wait_max_s"], "run_s": t["run_sum_s"],
                         "ended_at_s": t["last_end_at_s"]}
    out["answering_at_s"] = result.get("lead_time_s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("universe", type=Path, help="universe.parquet (Ticker, Date, Open .. Volume)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[18, 100, 421])
    parser.add_argument("--setups", default="embedded,celery")
    parser.add_argument("--batch-seconds", type=float, default=10.0)
    args = parser.parse_args()

    import lead_time
    from universe_ingest import write_feed

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update({"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                    "days": [FIRST_DAY, NEW_DAY],
                    "goals": {"cycle_421_embedded_s": GOAL_S, "train_421_s": GOAL_TRAIN_S,
                              "celery_to_embedded": GOAL_CELERY_RATIO, "batch_421_p99_ms": GOAL_BATCH_P99_MS}})
    sizes = results.setdefault("sizes", {})
    with tempfile.TemporaryDirectory(prefix="stockops-universe-feed-") as feed:
        order = write_feed(args.universe, Path(feed))
        for n in args.sizes:
            tickers = order[:n]
            env = {"STOCKOPS_SOURCE": "csv", "STOCKOPS_CSV_PATH": feed, "STOCKOPS_TICKERS": ",".join(tickers),
                   "STOCKOPS_INGEST_SCHEDULE": "manual"}
            row = sizes.setdefault(str(n), {})
            for setup in args.setups.split(","):
                print(f"\n{n} tickers, {setup}: starting", flush=True)
                result = lead_time.measure(setup, "promote", env, days=(FIRST_DAY, NEW_DAY),
                                           after=while_running(args.batch_seconds))
                if result.get("skipped"):
                    row[setup] = {"skipped": result["skipped"]}
                    print(f"{n} tickers, {setup}: skipped: {result['skipped']}", flush=True)
                    continue
                summary = stages(result)
                train = (summary.get("train") or {}).get("run_s")
                batch = (result.get("after") or {}).get("batch") or {}
                monitor = (result.get("after") or {}).get("monitor") or {}
                row[setup] = {"cycle_s": result["lead_time_s"], "outcome": result["outcome"], "stages": summary,
                              "first_cycle_s": result["first_cycle_s"], "startup_s": result["startup_s"],
                              "batch": batch, "monitor": monitor, "cpu": result["cpu"],
                              "train_runs": result["train_runs"], "tasks_summary": result["tasks_summary"]}
                print(f"{n} tickers, {setup}: cycle {result['lead_time_s']} s ({result['outcome']}); train task {train} s;"
                      f" /forecast/batch of {batch.get('tickers')} at c=1: p50 {batch.get('p50_ms')} ms, p99 "
                      f"{batch.get('p99_ms')} ms; first cycle {result['first_cycle_s']} s; the day's monitor run "
                      f"{monitor.get('seconds')} s ({monitor.get('state')}; check {monitor.get('tasks_s', {}).get('check')} s;"
                      f" report {monitor.get('report_mb')} MB)", flush=True)
                for task, t in summary.items():
                    print(f"    {task:<16} {t}", flush=True)
            if row.get("embedded", {}).get("cycle_s") and row.get("celery", {}).get("cycle_s"):
                row["celery_to_embedded"] = round(row["celery"]["cycle_s"] / row["embedded"]["cycle_s"], 2)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'tickers':>8} {'embedded s':>11} {'celery s':>9} {'celery/emb':>10} {'train s (emb)':>14} "
          f"{'batch p99 ms (emb)':>19}")
    for n, row in sorted(sizes.items(), key=lambda kv: int(kv[0])):
        emb, cel = row.get("embedded", {}), row.get("celery", {})
        print(f"{n:>8} {emb.get('cycle_s')!s:>11} {cel.get('cycle_s')!s:>9} {row.get('celery_to_embedded')!s:>10} "
              f"{((emb.get('stages') or {}).get('train') or {}).get('run_s')!s:>14} "
              f"{(emb.get('batch') or {}).get('p99_ms')!s:>19}")
    big = sizes.get("421", {})
    print(f"goals: 421 embedded <= {GOAL_S:.0f} s: {big.get('embedded', {}).get('cycle_s')}; celery <= "
          f"{GOAL_CELERY_RATIO} x: {big.get('celery_to_embedded')}; results: {RESULTS}")


if __name__ == "__main__":
    main()
