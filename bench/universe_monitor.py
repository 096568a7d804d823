"""A monitor check at universe size: drift and its report, the scorecard and the shadow comparison for 18, 100 and
421 real tickers.

The universe is the 18 shipped series plus the 403 of ``universe.parquet`` (real US-listed daily series,
2004-08-19 .. 2020-12-11, Yahoo's layout, kept outside the repository; its path on the command line). The
champion's reference is each ticker's features over 2016-2018 (about 750 days, a training window's size)
and the current window the last 60 sessions (autumn 2020: many tickers drift, the report's worst case).

1. **Drift + report**, per size: ``drift_inputs`` (each ticker's current features), the drift of every ticker
   and the HTML report written, wall time and the HTML's size:
   - **new** — :func:`stockops.monitoring.drift.assess_watchlist_drift`: numpy's normed Wasserstein for every
     (ticker, feature), one table of all tickers, Evidently's plots for the ``REPORT_TICKERS`` nearest drift;
   - **old** — one Evidently ``DataDriftPreset`` per ticker in one report (what the monitor did before issue 27),
     at the sizes given to ``--old-sizes`` (at 421 it took 289 s and wrote 117 MB: measured apart, with
     ``--sizes 421 --old-sizes 421 --skip-parts``).
   Evidently's import (~7 s, once per check) is paid before the timings and reported apart.
2. **The rest of the check at the largest size**, on a forecast log of 60 realized days of every ticker by the
   champion and the previous champion in the shadow (made from each ticker's realized volatility): reading the
   log, the calibration scorecard (HARX-GKO refit per ticker), the champion-vs-previous comparison and the
   rollback proposal, the decision, one day's scoring appended to the log (``record_forecasts``) and the
   ``next_session`` of every ticker. Not measured here: loading 421 published snapshots (``latest_frames``,
   see bench/universe_ingest.py for the store) and the model's forecasts (one batch through the pyfunc).

Goal (issue 27, item 3): the monitor check for 421 tickers <= 2 minutes, its HTML <= 10 MB. The reference run
for the ratios is the old way at 18 tickers. Results: bench/results/universe_monitor.json.

    flock /tmp/stockops-bench.lock .venv/bin/python bench/universe_monitor.py <path>/universe.parquet \\
        [--sizes 18 100 421] [--old-sizes 18 100] [--repeats 3] [--skip-parts]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from results_io import merged_rows

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "universe_monitor.json"
sys.path.insert(0, str(ROOT / "include"))

REFERENCE_WINDOW = ("2016-01-01", "2019-01-01")
CURRENT_DAYS, MIN_DAYS = 60, 20
GOAL_S, GOAL_MB = 120.0, 10.0


def load_universe(universe: Path) -> dict:
    """ticker -> frame: the 18 shipped series first, then the universe's others, in name order."""
    import pandas as pd

    from stockops.core.settings import WATCHLIST
    from stockops.data.sources import shipped_series

    frames = {t: shipped_series(t) for t in WATCHLIST}
    table = pd.read_parquet(universe)
    for ticker, rows in table.groupby("Ticker", sort=True):
        if ticker not in frames:
            frame = rows.drop(columns=["Ticker", "Adj Close"]).reset_index(drop=True)
            frames[str(ticker)] = frame.assign(Date=pd.to_datetime(frame["Date"]))
    return frames


def champion_reference(frames: dict) -> object:
    """The training-window features of every ticker with a ``ticker`` column, as training records them."""
    import pandas as pd

    from stockops.model.drift_features import monitor_features

    parts = []
    for ticker, frame in frames.items():
        features = monitor_features(frame)
        window = features[(features["Date"] >= REFERENCE_WINDOW[0]) & (features["Date"] < REFERENCE_WINDOW[1])]
        parts.append(window.assign(ticker=ticker))
    return pd.concat(parts, ignore_index=True)


def time_drift(frames: dict, reference, way: str, folder: Path) -> dict:
    """drift_inputs, the drift of every ticker and the HTML report, the new or the old way."""
    from stockops.core.settings import get_settings
    from stockops.monitoring.drift import assess_watchlist_drift, drift_inputs, evidently_distances, evidently_snapshot

    settings = get_settings()
    started = time.perf_counter()
    references, currents, skipped = drift_inputs(reference[reference["ticker"].isin(list(frames))], frames,
                                                 CURRENT_DAYS, settings.ticker)
    inputs_s = time.perf_counter() - started
    path = folder / f"{way}-{len(frames)}.html"
    if way == "new":
        summary, report = assess_watchlist_drift(references, currents, settings.monitor_drift_threshold,
                                                 settings.monitor_drift_share, settings.monitor_drift_tickers_share)
        drift_s = time.perf_counter() - started - inputs_s
        report.save_html(path)
        drifted, shown = len(summary["drifted_tickers"]), len(summary["report_tickers"])
    else:
        snapshot = evidently_snapshot(references, currents, settings.monitor_drift_threshold,
                                      settings.monitor_drift_share)
        distances = evidently_distances(snapshot)
        drift_s = time.perf_counter() - started - inputs_s
        snapshot.save_html(str(path))
        drifted = len({c.split(":")[0] for c, d in distances.items() if d >= settings.monitor_drift_threshold})
        shown = len(currents)
    seconds = time.perf_counter() - started
    out = {"tickers": len(frames), "checked": len(currents), "not_checked": len(skipped), "seconds": seconds,
           "inputs_s": inputs_s, "drift_s": drift_s, "report_s": seconds - inputs_s - drift_s,
           "html_mb": path.stat().st_size / 1e6, "tickers_plotted": shown}
    if way == "new":
        out["drifted_tickers"] = drifted
    else:
        out["tickers_with_a_drifted_feature"] = drifted
    path.unlink()
    print(f"  {way} way, {len(frames):>3} tickers: {seconds:6.1f} s (inputs {inputs_s:.1f}, drift {drift_s:.1f}, "
          f"report {out['report_s']:.1f}), HTML {out['html_mb']:.1f} MB, {shown} ticker(s) plotted", flush=True)
    return out


def forecast_log(frames: dict, path: Path, versions: tuple[str, str]) -> int:
    """60 realized days of every ticker by both versions, written as the forecast log holds them."""
    import numpy as np
    from scipy.stats import norm

    from stockops.model.scoring import LEVELS

    rng = np.random.default_rng(0)
    lines = []
    for ticker, frame in frames.items():
        close = frame["Close"].to_numpy(dtype="float64")
        dates = frame["Date"].dt.strftime("%Y-%m-%d").to_numpy()
        sigma = float(np.std(np.diff(np.log(close[-CURRENT_DAYS - 61:-CURRENT_DAYS]))))
        for i in range(len(close) - CURRENT_DAYS - 1, len(close) - 1):
            for version, role, bias in ((versions[0], "champion", 1.0), (versions[1], "shadow", 1.2)):
                s = sigma * bias * rng.uniform(0.8, 1.25)
                lines.append(json.dumps({
                    "at": f"{dates[i]}T22:00:00+00:00", "event": "forecast", "ticker": ticker, "as_of": dates[i],
                    "forecast_for": dates[i + 1], "model_version": version, "role": role, "snapshot_hash": "x",
                    "last_close": close[i], "point": 0.0, "forecast": close[i], "variance": s * s,
                    "quantiles": {f"q{round(level * 100):02d}": float(norm.ppf(level) * s) for level in LEVELS},
                    "made_at": f"{dates[i]}T22:00:00+00:00", "dag_run_id": ""}, sort_keys=True))
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def time_check_parts(frames: dict, folder: Path) -> dict:
    """The check's parts after drift, at one size, on a made forecast log (see the module docstring)."""
    from stockops.contracts import ForecastRecord
    from stockops.core import audit
    from stockops.core.settings import get_settings
    from stockops.monitoring.decision import decide, rollback_proposal
    from stockops.monitoring.forecasts import next_session, record_forecasts
    from stockops.monitoring.scorecard import calibration_scorecard, compare_versions

    settings = get_settings()
    path = folder / "forecasts.jsonl"
    entries = forecast_log(frames, path, ("2", "1"))
    out: dict = {"tickers": len(frames), "log_entries": entries}

    def timed(name: str, call):
        started = time.perf_counter()
        value = call()
        out[f"{name}_s"] = time.perf_counter() - started
        print(f"  {name:<22} {out[f'{name}_s']:6.2f} s", flush=True)
        return value

    records = timed("read_forecast_log", lambda: audit.read(path))
    card = timed("scorecard", lambda: calibration_scorecard([e for e in records if e["model_version"] == "2"],
                                                            frames, "2", CURRENT_DAYS, MIN_DAYS))
    comparison = timed("shadow_comparison", lambda: compare_versions(records, frames, "2", "1", CURRENT_DAYS,
                                                                     MIN_DAYS))
    timed("decision_and_rollback", lambda: (decide(None, None, settings, scorecard=card),
                                            rollback_proposal(comparison, settings)))
    last = {t: f["Date"].iloc[-1].strftime("%Y-%m-%d") for t, f in frames.items()}
    timed("next_session_all", lambda: [next_session(day) for day in last.values()])
    day = [ForecastRecord(ticker=t, as_of=d, forecast_for="2020-12-14", model_version="2", snapshot_hash="y",
                          last_close=1.0, point=0.0, forecast=1.0, quantiles={}, variance=1e-4, made_at=d)
           for t, d in last.items()]
    timed("record_one_day", lambda: record_forecasts(path, day))
    out["scorecard_status"], out["scorecard_pairs"] = card["status"], card["pooled"].get("pairs")
    out["comparison_status"], out["comparison_pairs"] = comparison["status"], comparison["pairs"]
    out["parts_s"] = sum(v for k, v in out.items() if k.endswith("_s"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("universe", type=Path, help="universe.parquet (403 real series)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[18, 100, 421])
    parser.add_argument("--old-sizes", type=int, nargs="*", default=[18, 100],
                        help="sizes also measured the old way (one Evidently preset per ticker)")
    parser.add_argument("--repeats", type=int, default=1, help="new-way runs per size (the median is kept)")
    parser.add_argument("--skip-parts", action="store_true", help="drift and report only (the last parts measured "
                        "are kept in the results)")
    args = parser.parse_args()
    os.environ.setdefault("STOCKOPS_HOME", tempfile.mkdtemp(prefix="stockops-bench-monitor-"))
    folder = Path(tempfile.mkdtemp(prefix="stockops-bench-universe-monitor-"))
    started = time.perf_counter()
    import evidently  # noqa: F401  (paid once per check, reported apart)

    imports_s = time.perf_counter() - started
    order = load_universe(args.universe)
    reference = champion_reference(order)
    print(f"{len(order)} tickers; Evidently import {imports_s:.1f} s", flush=True)
    rows = []
    for n in args.sizes:
        frames = dict(list(order.items())[:n])
        runs = sorted((time_drift(frames, reference, "new", folder) for _ in range(args.repeats)),
                      key=lambda r: r["seconds"])
        row: dict = {"tickers": n, "new": {**runs[len(runs) // 2], "runs_s": [r["seconds"] for r in runs]}}
        if n in args.old_sizes:
            row["old"] = time_drift(frames, reference, "old", folder)
        rows.append(row)
    parts = None
    if not args.skip_parts:
        largest = max(args.sizes)
        print(f"the rest of the check at {largest} tickers:", flush=True)
        parts = time_check_parts(dict(list(order.items())[:largest]), folder)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if parts is None and previous.get("check_parts", {}).get("tickers") == max(args.sizes):
        parts = previous["check_parts"]  # measured by an earlier run at this size
    reference_run = next((r["old"] for r in rows if "old" in r), None)
    print(f"\n{'tickers':>7} {'old s':>7} {'old MB':>7} {'new s':>7} {'new MB':>7} {'old/new':>8} "
          f"{'new s / ref s':>13} {'drifted':>8}")
    for row in rows:
        old, new = row.get("old"), row["new"]

        def cell(value: float | None, width: int, digits: int = 1) -> str:
            return " " * width if value is None else f"{value:{width}.{digits}f}"

        print(f"{row['tickers']:>7} {cell(old and old['seconds'], 7)} {cell(old and old['html_mb'], 7)} "
              f"{new['seconds']:7.1f} {new['html_mb']:7.1f} {cell(old and old['seconds'] / new['seconds'], 8)} "
              f"{cell(reference_run and new['seconds'] / reference_run['seconds'], 13, 2)} {new['drifted_tickers']:>8}")
    largest_row = max(rows, key=lambda r: r["tickers"])
    check_s = imports_s + largest_row["new"]["seconds"] + (parts["parts_s"] if parts else 0.0)
    goals = {"check_s": GOAL_S, "html_mb": GOAL_MB}
    met = {"check_s": check_s <= GOAL_S, "html_mb": largest_row["new"]["html_mb"] <= GOAL_MB}
    print(f"at {largest_row['tickers']} tickers: Evidently import + drift + report + scorecard + comparison "
          f"{check_s:.1f} s (goal <= {GOAL_S:.0f} s: {'met' if met['check_s'] else 'NOT met'}); HTML "
          f"{largest_row['new']['html_mb']:.1f} MB (goal <= {GOAL_MB:.0f} MB: {'met' if met['html_mb'] else 'NOT met'})")
    if previous:  # keep the sizes and ways this run did not measure
        rows = merged_rows(previous.get("rows", []), rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
        "reference_window": REFERENCE_WINDOW, "current_days": CURRENT_DAYS, "evidently_import_s": imports_s,
        "goals": goals, "goal_met": met, "check_s_at_largest": check_s, "rows": rows, "check_parts": parts},
        indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
