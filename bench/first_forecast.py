"""The Quickstart, timed: from ``make run`` on a fresh home with the defaults to ``/forecast`` answering for every ticker.

Why: a newcomer types the README's two commands and then its ``curl``. Before issue 23 the defaults
served nothing at all (the gate refused every LSTM and nothing else could serve); now the champion is
the best model the platform has (the classical baseline HARX-GKO until an LSTM beats it at the gate).
Goal: at most 600 s on this 2-core machine, with the default watchlist (18 tickers) and model profile.

What: ``python -m stockops run`` (what ``make run`` runs once the venv is installed) in a fresh home,
on free ports, with nothing forced. Measured from its start: each line of the first cycle's progress
that the launcher prints (Airflow healthy, ingest settled, the training run, the gate's verdict, the
baseline, the deploy), and, polled here every 2 s, ``POST /forecast/batch`` answering for every
ticker (which model answered: version and ``model_kind``). Then, after a minute idle, the platform's
memory: the proportional set size (PSS, shared pages split between processes) of every process it
runs, by kind. Ctrl-C (SIGTERM) stops it, and nothing may be left running.

    .venv/bin/python bench/first_forecast.py [--parallelism N] [--tickers GOOG,MSFT,...] [--label name]

Results: bench/results/first_forecast.json (the last run per label, beside the reference: the run
labelled ``reference`` if there is one). Prints the stages side by side with the reference run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))
RESULTS = Path(__file__).resolve().parent / "results" / "first_forecast.json"
GOAL_S = 600.0
IDLE_S = 60.0
# progress lines of the launcher (stockops.launch.local) -> the stage they mark; the first match counts
STAGES = (("airflow_up", re.compile(r"stockops is running")),
          ("ingest_settled", re.compile(r"\] ingest \(")),
          ("training_started", re.compile(r"stock_train \S+: running")),
          ("gate_verdict", re.compile(r"\] gate: ")),
          ("baseline_registered", re.compile(r"registered to serve")),
          ("deployed", re.compile(r"\] deployed: ")),
          ("launcher_saw_answers", re.compile(r"/forecast answers for")))


def main() -> int:
    from stockops.core.processes import free_port, http_json
    from stockops.launch.local import PARALLELISM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallelism", type=int, default=None, help="AIRFLOW__CORE__PARALLELISM (default: make run's)")
    parser.add_argument("--tickers", default=None, help="STOCKOPS_TICKERS (default: the 18 shipped)")
    parser.add_argument("--label", default="default", help="the result's name in the JSON (reference: the baseline)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="stockops-first-forecast-"))
    ports = {"STOCKOPS_AIRFLOW_PORT": free_port(), "STOCKOPS_MLFLOW_PORT": free_port(),
             "STOCKOPS_SERVE_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKOPS_", "AIRFLOW"))}
    env.update({k: str(v) for k, v in ports.items()}, STOCKOPS_HOME=str(root / "home"), PYTHONUNBUFFERED="1")
    if args.parallelism:
        env["AIRFLOW__CORE__PARALLELISM"] = str(args.parallelism)
    if args.tickers:
        env["STOCKOPS_TICKERS"] = args.tickers
    serve = f"http://127.0.0.1:{ports['STOCKOPS_SERVE_PORT']}"

    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "stockops", "run"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    stages: dict[str, float] = {}
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(f"{time.monotonic() - started:7.1f} {line.rstrip()}")
            for name, pattern in STAGES:
                if name not in stages and pattern.search(line):
                    stages[name] = round(time.monotonic() - started, 1)

    threading.Thread(target=read, daemon=True).start()
    answered_s, answer = None, []
    try:
        while time.monotonic() - started < args.timeout and proc.poll() is None:
            try:
                status, body = http_json(f"{serve}/forecast/batch", {}, timeout=30)
            except OSError:
                status, body = 0, None
            if status == 200 and isinstance(body, list) and body and all("error" not in a for a in body):
                answered_s, answer = round(time.monotonic() - started, 1), body
                break
            time.sleep(2)
        if answered_s is None:
            print("\n".join(lines[-40:]))
            raise SystemExit(f"no forecast for every ticker within {args.timeout:.0f} s (launcher exit code "
                             f"{proc.poll()})")
        time.sleep(IDLE_S)
        memory = platform_memory(proc.pid, root / "home")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(2)
    left = [p for p in _home_processes(root / "home")]

    result = {
        "label": args.label, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "tickers": len(answer), "parallelism": args.parallelism or PARALLELISM,
        "seconds_to_forecast": answered_s, "goal_s": GOAL_S, "met": answered_s <= GOAL_S,
        "answered_by": sorted({f"v{a['model_version']} {a['model_kind']}" for a in answer}),
        "stages_s": stages, "idle_memory": memory, "left_running_after_stop": len(left),
        "progress": lines,
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.label] = result
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print_table(result, results.get("reference") if args.label != "reference" else None)
    return 0 if result["met"] and not left else 1


def _home_processes(home: Path) -> list[int]:
    """Every process whose environment names this home (the platform's tree and the serving processes, which run
    in sessions of their own); components that rename themselves blank their environment, so the launcher's
    tree is added by the caller."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if str(home).encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def platform_memory(launcher: int, home: Path) -> dict:
    """PSS in MB of every process of the platform, summed by kind."""
    import psutil

    pids = {launcher, *(c.pid for c in psutil.Process(launcher).children(recursive=True)), *_home_processes(home)}
    kinds: dict[str, list[float]] = {}
    for pid in pids:
        try:
            process = psutil.Process(pid)
            pss = process.memory_full_info().pss / 2**20
            name = " ".join(process.cmdline())
        except (psutil.Error, OSError):
            continue
        kinds.setdefault(_kind(name), []).append(pss)
    return {"total_pss_mb": round(sum(sum(v) for v in kinds.values())), "processes": sum(len(v) for v in kinds.values()),
            "by_kind": {k: {"processes": len(v), "pss_mb": round(sum(v))}
                        for k, v in sorted(kinds.items(), key=lambda kv: -sum(kv[1]))}}


def _kind(cmdline: str) -> str:
    for needle, kind in (("LocalExecutor", "airflow task workers (idle)"), ("api_server", "airflow api-server"),
                         ("scheduler", "airflow scheduler"), ("dag-processor", "airflow dag-processor"),
                         ("triggerer", "airflow triggerer"), ("forkserver", "airflow forkserver"),
                         ("mlflow", "mlflow UI"), ("_bentoml_impl", "bento workers"), ("circusd", "bento arbiters"),
                         ("stockops.serving.proxy", "serving proxy"), ("supervise", "serving supervisor"),
                         ("stockops.launch.components", "airflow launcher"), ("stockops run", "make run launcher")):
        if needle in cmdline:
            return kind
    return "other"


def print_table(result: dict, reference: dict | None) -> None:
    print(f"\nfirst forecast ({result['label']}, {result['tickers']} tickers, parallelism {result['parallelism']}): "
          f"{result['seconds_to_forecast']:.0f} s (goal {GOAL_S:.0f} s: {'met' if result['met'] else 'NOT met'}), "
          f"answered by {', '.join(result['answered_by'])}")
    names = [n for n, _ in STAGES] + ["answering every ticker", "idle memory (PSS MB)"]
    mine = {**result["stages_s"], "answering every ticker": result["seconds_to_forecast"],
            "idle memory (PSS MB)": result["idle_memory"]["total_pss_mb"]}
    theirs = {} if reference is None else {**reference["stages_s"],
                                            "answering every ticker": reference["seconds_to_forecast"],
                                            "idle memory (PSS MB)": reference["idle_memory"]["total_pss_mb"]}
    print(f"{'stage (s from start)':<26} {'this run':>9} {'reference':>10} {'ratio':>6}")
    for name in names:
        a, b = mine.get(name), theirs.get(name)
        ratio = f"{a / b:6.2f}" if a and b else "     -"
        print(f"{name:<26} {a if a is not None else '-':>9} {b if b is not None else '-':>10} {ratio}")
    print("idle memory by kind: " + ", ".join(f"{k} {v['pss_mb']} MB ({v['processes']})"
                                            for k, v in result["idle_memory"]["by_kind"].items()))


if __name__ == "__main__":
    sys.exit(main())
