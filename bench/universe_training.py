"""The ``stock_train`` chain at universe size: where the time goes, and what a window budget per epoch costs.

The universe is the 18 shipped series plus the 403 of ``universe.parquet`` (real US-listed daily series,
2004-08-19 .. 2020-12-11, Yahoo's layout, kept outside the repository; its path on the command line), the first
``n`` of them in the order of bench/universe_ingest.py (the shipped 18, then the rest by symbol). For each run,
in a fresh interpreter and a fresh home (every ticker's whole history published as its snapshot, the MLflow
store created before the clock starts, no champion): the chain's steps in-process, as ``stock_train`` runs them,

    load_snapshots -> prepare_features (features) -> train_candidate (fit) -> evaluate_models (evaluate: candidate
    and the classical baselines GARCH-N/t, EWMA, HAR-GK, HARX-GKO, fitted per ticker) -> register_candidate +
    gate_candidate (gate; with no champion a refused candidate gets HARX-GKO registered in its place),

each step's wall time, the process's peak RSS, and the holdout scores the gate judges: the LSTM's pooled QLIKE
beside HARX-GKO's (``REFERENCE``) on the same (ticker, day) pairs (the last 10 % of sessions, 2019-05 .. 2020-12),
with the Diebold-Mariano t of the LSTM against it. A run is ``<tickers>:<samples per epoch>``
(``STOCKOPS_TRAIN_SAMPLES_PER_EPOCH``; 0: every training window in every epoch, as before issue 27).

Goal (issue 27): training alone (the chain's steps above) on 421 tickers <= 8 minutes on 2 cores, with the same
evaluation and gate. Each run's time and QLIKE are printed beside the full-epoch run of the same size (the
reference) where there is one. Results: bench/results/universe_training.json (runs this call did not make are kept).

    flock /tmp/stockops-bench.lock .venv/bin/python bench/universe_training.py <path>/universe.parquet
        [--runs 100:0 100:131072 421:0 421:131072 421:262144]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "universe_training.json"
sys.path.insert(0, str(ROOT / "include"))

GOAL_SECONDS = 480  # training alone at 421 tickers
DEFAULT_RUNS = ("100:0", "100:131072", "421:0", "421:131072", "421:262144")
BASELINE_NAMES = ("garch_normal", "garch_t", "ewma", "har_gk", "harx_gko")


def universe_frames(universe: Path, n: int) -> dict:
    """The first ``n`` series: the 18 shipped, then the universe's by symbol (columns Date, Open .. Volume)."""
    import pandas as pd

    from stockops.core.settings import WATCHLIST
    from stockops.data.sources import shipped_series

    frames = {t: shipped_series(t) for t in WATCHLIST[:n]}
    for ticker, rows in pd.read_parquet(universe).groupby("Ticker", sort=True):
        if len(frames) >= n:
            break
        if ticker not in frames:
            frame = rows.drop(columns="Ticker").reset_index(drop=True)
            frames[str(ticker)] = frame.assign(Date=pd.to_datetime(frame["Date"]))[
                ["Date", "Open", "High", "Low", "Close", "Volume"]]
    return frames


def child(universe: Path, n: int, budget: int, home: Path) -> dict:
    """One run of the chain in this (fresh) process; its stage times, peak RSS and holdout scores."""
    import logging
    import resource

    from stockops import registry
    from stockops.core.settings import make_settings
    from stockops.data import store_for
    from stockops.training import (
        CANDIDATE,
        REFERENCE,
        evaluate_models,
        format_scores,
        gate_candidate,
        load_snapshots,
        prepare_features,
        register_candidate,
        train_candidate,
    )

    logging.basicConfig(level=logging.ERROR)
    frames = universe_frames(universe, n)
    settings = make_settings(home=home, tickers=",".join(frames), train_samples_per_epoch=budget)
    for ticker, frame in frames.items():
        store_for(settings, ticker).publish(frame, logical_date=str(frame["Date"].iloc[-1].date()), source="bench")
    registry.setup(settings)  # the MLflow store a daily run finds already there
    seconds: dict[str, float] = {}

    def timed(stage: str, step, *args):
        started = time.perf_counter()
        out = step(*args, settings=settings)
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started
        return out

    features = timed("features", prepare_features, timed("features", load_snapshots))
    trained = timed("fit", train_candidate, features)
    evaluated = timed("evaluate", evaluate_models, trained)
    decision = timed("gate", gate_candidate, timed("gate", register_candidate, evaluated))
    history = json.loads(Path(trained.history_path).read_text())
    scores = evaluated.scores
    print(format_scores(scores), file=sys.stderr)
    return {
        "tickers": len(frames), "samples_per_epoch": budget, "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "training_alone_seconds": round(sum(seconds.values()), 1), "train_seconds": round(trained.train_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "samples": features.sizes, "epochs_run": len(history["loss"]),
        "best_epoch": int(min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)) + 1,
        "val_loss": [round(v, 4) for v in history["val_loss"]],
        "holdout": {"days": evaluated.holdout.days, "pairs": evaluated.holdout.pairs, "first": evaluated.holdout.first,
                    "last": evaluated.holdout.last},
        "qlike": {name: scores[name]["qlike"] for name in (CANDIDATE, *BASELINE_NAMES) if name in scores},
        "lstm_minus_harx_gko": scores[CANDIDATE]["qlike"] - scores[REFERENCE]["qlike"],
        "dm_qlike_vs_harx_gko": scores[CANDIDATE].get(f"dm_qlike_vs_{REFERENCE}"),
        "coverage_90": scores[CANDIDATE]["coverage_90"], "gate": decision.label,
    }


def run(universe: Path, spec: str) -> dict:
    """``<tickers>:<samples per epoch>`` in a fresh interpreter and home."""
    import shutil

    n, budget = (int(v) for v in spec.split(":"))
    home = Path(tempfile.mkdtemp(prefix="stockops-bench-training-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run([sys.executable, __file__, str(universe), "--child", spec, "--home", str(home)],
                              env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode:
            raise RuntimeError(f"run {spec} failed:\n{done.stderr[-4000:]}")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    scores_table = done.stderr[done.stderr.rfind("\nmodel "):].strip()  # format_scores' table, printed last
    print(f"\n{n} tickers, {budget or 'every'} windows per epoch:\n{scores_table}", flush=True)
    return out


def table(rows: list[dict]) -> None:
    print(f"\n{'tickers':>7} {'per epoch':>9} {'features':>8} {'fit':>6} {'eval':>6} {'gate':>5} {'alone s':>7} "
          f"{'x ref':>6} {'epochs':>6} {'RSS MB':>6} {'QLIKE':>7} {'HARX':>7} {'LSTM-HARX':>9} {'vs ref':>8} "
          f"{'DM t':>6}")
    for row in rows:
        ref = next((r for r in rows if r["tickers"] == row["tickers"] and r["samples_per_epoch"] == 0), None)
        s = row["seconds"]
        ratio = f"{row['training_alone_seconds'] / ref['training_alone_seconds']:>6.2f}" if ref else f"{'':>6}"
        versus = f"{row['qlike']['candidate'] - ref['qlike']['candidate']:>+8.4f}" if ref else f"{'':>8}"
        dm = row["dm_qlike_vs_harx_gko"]
        print(f"{row['tickers']:>7} {row['samples_per_epoch'] or 'all':>9} {s['features']:>8.1f} {s['fit']:>6.1f} "
              f"{s['evaluate']:>6.1f} {s['gate']:>5.1f} {row['training_alone_seconds']:>7.1f} {ratio} "
              f"{row['epochs_run']:>6} {row['peak_rss_mb']:>6} {row['qlike']['candidate']:>7.4f} "
              f"{row['qlike']['harx_gko']:>7.4f} {row['lstm_minus_harx_gko']:>+9.4f} {versus} "
              f"{float('nan') if dm is None else dm:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("universe", type=Path, help="universe.parquet (403 real series)")
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS),
                        help="<tickers>:<training windows per epoch, 0 for all> (default: %(default)s)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        n, budget = (int(v) for v in args.child.split(":"))
        print(json.dumps(child(args.universe, n, budget, args.home)))
        return
    started = time.perf_counter()
    rows = []
    for spec in args.runs:
        rows.append(run(args.universe, spec))
        table(rows)
    kept = json.loads(RESULTS.read_text()).get("runs", []) if RESULTS.exists() else []
    done = {(r["tickers"], r["samples_per_epoch"]) for r in rows}
    rows = sorted([r for r in kept if (r["tickers"], r["samples_per_epoch"]) not in done] + rows,
                  key=lambda r: (r["tickers"], r["samples_per_epoch"] or 10**9))
    print("\nall runs kept in the results:")
    table(rows)
    for row in rows:
        if row["tickers"] >= 421:
            met = row["training_alone_seconds"] <= GOAL_SECONDS
            print(f"{row['tickers']} tickers, {row['samples_per_epoch'] or 'every'} windows per epoch: training alone "
                  f"{row['training_alone_seconds']:.0f} s, goal <= {GOAL_SECONDS} s: {'met' if met else 'NOT met'}")
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "goals": {"training_alone_seconds_at_421": GOAL_SECONDS}, "bench_seconds": round(time.perf_counter() - started),
        "runs": rows}, indent=1) + "\n")
    print(f"-> {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
