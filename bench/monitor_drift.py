"""What a monitor check costs, and how the drift thresholds were chosen, on the real bundled series.

1. **Run time**: the whole ``run_monitor`` check (features, Evidently drift + HTML report, the
   champion replayed over the current window, decision JSON, MLflow logging) with 1 year of
   current data (252 trading days) against the champion's ~3-year training window, in a scratch
   home. The first check pays the one-time imports (Evidently, TensorFlow) and is reported
   apart; the goal (< 10 s) is for the checks after it. Reference run: the same check with the
   default 60-day current window.
2. **Thresholds**: for champions trained at many cut points of the series (the replay on
   different days), how often a check right after training calls for a retrain: Evidently's
   default preset (K-S p-value < 0.05 per feature) side by side with ours (normed Wasserstein
   distance ≥ 0.6), in the autumn-2008 crash and outside it.
Results: bench/results/monitor_drift.json.

    .venv/bin/python bench/monitor_drift.py [--repeats 3] [--step 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "monitor_drift.json"
CRASH = ("2008-10-01", "2009-01-31")  # current windows ending in these months are "the crash"


def time_checks(repeats: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="stockops-bench-monitor-"))
    os.environ.update(STOCKOPS_HOME=str(home), STOCKOPS_SOURCE="replay", STOCKOPS_TRAIN_PROFILE="small",
                      MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    from stockops import training
    from stockops.core.settings import get_settings
    from stockops.ingest import ingest_day
    from stockops.monitoring import run_monitor

    settings = get_settings()
    ingest_day("2026-01-01", settings=settings)
    features = training.prepare_features(training.load_snapshots(settings=settings), settings=settings)
    trained = training.train_candidate(features, reason="bench", settings=settings)
    registered = training.register_candidate(training.evaluate_models(trained, settings=settings), settings=settings)
    training.promote_candidate(registered, reason="bench", settings=settings)
    out = {}
    for label, days in (("current_60d", 60), ("current_1y", 252)):
        os.environ["STOCKOPS_MONITOR_CURRENT_DAYS"] = str(days)
        seconds, decision = [], None
        for _ in range(repeats + (1 if not out else 0)):
            started = time.perf_counter()
            decision = run_monitor(settings=get_settings(), dry_run=True)  # read after the days changed
            seconds.append(time.perf_counter() - started)
        first = seconds.pop(0) if not out else None
        out[label] = {"current_days": days, "reference_rows": decision.reference_rows,
                      "reference_window": decision.reference_window, "current_window": decision.current_window,
                      "seconds": seconds, "median_s": statistics.median(seconds),
                      "drift_share": decision.drift_share, "replayed_days": decision.live_error["replayed"]}
        if first is not None:
            out["first_check_with_imports_s"] = first
        print(f"{label}: {days} current days vs {decision.reference_rows} reference rows "
              f"({decision.reference_window[0]}..{decision.reference_window[1]}): "
              f"median {out[label]['median_s']:.2f} s of {len(seconds)}", flush=True)
    out["ratio_1y_to_60d"] = out["current_1y"]["median_s"] / out["current_60d"]["median_s"]
    out["goal_s"] = 10.0
    out["goal_met"] = out["current_1y"]["median_s"] < out["goal_s"]
    return out


def threshold_sweep(step: int) -> dict:
    import pandas as pd

    from stockops.core.settings import get_settings
    from stockops.data.sources import shipped_series
    from stockops.model.drift_features import monitor_features
    from stockops.monitoring.drift import assess_drift

    settings = get_settings()
    goog = shipped_series("GOOG").iloc[:2148]  # up to 2013-03-01, as first measured
    features = monitor_features(goog)
    methods = {"evidently_default_ks": None, "stockops_wasserstein": settings.monitor_drift_threshold}
    rows = []
    for end in range(500, len(goog) + 1, step):
        # a champion trained on the first `end` days: its training window is the first 80 %;
        # the check right after compares the last 60 days with it
        last_training_day = goog["Date"].iloc[int(end * 0.8)]
        reference = features[features["Date"] <= last_training_day]
        current = features[features["Date"] <= goog["Date"].iloc[end - 1]].iloc[-60:]
        row = {"end": str(current["Date"].iloc[-1].date())}
        for name, threshold in methods.items():
            if threshold is None:
                row[name] = _default_share(reference, current)
            else:
                row[name] = assess_drift(reference, current, threshold, settings.monitor_drift_share)[0]["drift_share"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    crash = frame["end"].between(*CRASH)
    summary = {}
    for name in methods:
        trig = frame[name] >= settings.monitor_drift_share
        summary[name] = {"crash_trigger_rate": float(trig[crash].mean()), "other_trigger_rate": float(trig[~crash].mean()),
                         "other_windows": int((~crash).sum()), "crash_windows": int(crash.sum())}
        print(f"{name:<22} triggers in {summary[name]['crash_trigger_rate']:.0%} of crash windows, "
              f"{summary[name]['other_trigger_rate']:.0%} of the other {summary[name]['other_windows']}", flush=True)
    ours, default = summary["stockops_wasserstein"], summary["evidently_default_ks"]
    summary["false_trigger_ratio_ours_to_default"] = (ours["other_trigger_rate"] / default["other_trigger_rate"]
                                                      if default["other_trigger_rate"] else None)
    return {"windows": rows, "summary": summary, "threshold": settings.monitor_drift_threshold,
            "drift_share": settings.monitor_drift_share}


def _default_share(reference, current) -> float:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from stockops.monitoring import FEATURES

    columns = list(FEATURES)
    definition = DataDefinition(numerical_columns=columns)
    snapshot = Report([DataDriftPreset(columns=columns)]).run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition))
    metrics = snapshot.dict()["metrics"]
    return float(next(m["value"]["share"] for m in metrics if m["config"]["type"].endswith("DriftedColumnsCount")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step", type=int, default=15, help="days between the sweep's cut points")
    args = parser.parse_args()
    timing = time_checks(args.repeats)
    sweep = threshold_sweep(args.step)
    print(json.dumps({"timing": {k: v for k, v in timing.items() if not isinstance(v, dict)},
                      "sweep": sweep["summary"]}, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                                   "cpus": os.cpu_count(), "timing": timing, "sweep": sweep}, indent=2) + "\n")


if __name__ == "__main__":
    main()
