"""The project's own validation rules on the real universe: every real history accepted, every bad kind refused.

The universe is the 18 shipped series plus the 403 of ``universe.parquet`` (a table of real US-listed daily
series, 2004-08-19 .. 2020-12-11, columns ``Ticker, Date, Open, High, Low, Close, Adj Close, Volume`` in
Yahoo's layout, kept outside the repository; its path on the command line). Each universe series is written
as ``<TICKER>.csv`` to a temporary folder and read back with ``stockops.data.sources.read_price_csv``, like the
shipped ``<TICKER>.csv.gz``: the vendor's adjustment is the csv source's, and its unexplained factor jumps are listed in ``attrs["adjustment_anomalies"]``.
Only the project's code judges (``stockops.data.validation.validate_panel``, the committed GX checkpoint, default
settings in a temporary home); nothing here re-implements a rule.

1. **whole histories**: all 421 (2004-08-19 .. 2020-12-09) in ONE ``validate_panel`` call, reference date = each
   frame's last date; outcomes, the failures of any ticker not passed, wall and CPU seconds (GX set-up excluded);
2. **adjustment anomalies**: the vendor factor jumps the csv reader took out, per ticker and day;
3. **bad kinds**: every ``BAD`` of ``tests/data/test_price_suite.py`` applied (its own functions) to the first 600
   rows of 5 real series (the next 40 as the rows that follow), served through a CSV and validated alone with no
   published snapshot; refused? which expectation/column names the bad date?
4. **another symbol appended**: LOW through 2015-06-30 (published), then 20 sessions of another ticker rescaled so
   its first close is LOW's last x (1 + u); validated with that ticker in the panel (``twin_rows`` must refuse it)
   and alone (a known limit: at a similar level, mostly accepted);
5. **derived columns**: ``with_derived_columns`` on the whole 421-ticker panel and on 61 rows per ticker.

Goals (issue 26): 421 of 421 passed; every bad kind refused on every series, the test's expectation naming the bad
date. Results: bench/results/universe_validation.json.

    .venv/bin/python bench/universe_validation.py <path>/universe.parquet
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "universe_validation.json"
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]  # stockops, and tests.data.test_price_suite for the bad kinds
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

BAD_SERIES = ("GOOG", "LOW", "BIIB", "KO", "DHR")
N_ROWS, MORE = 600, 40  # as the test: the first 600 rows, and the 40 that follow
SWAP_BASE, SWAP_UNTIL, SWAP_ROWS = "LOW", "2015-06-30", 20
SWAP_FROM = ("MSFT", "KO", "GOOGL")
SWAP_LEVELS = (-0.16, -0.05, 0.02, 0.10, 0.16)
PRICES = ["Open", "High", "Low", "Close"]


def load(universe: Path, folder: Path) -> dict[str, pd.DataFrame]:
    """Ticker -> its adjusted frame: the 18 shipped, then the universe's, each read by ``read_price_csv``."""
    from stockops.core.settings import make_settings
    from stockops.data.sources import read_price_csv

    frames = {p.name.removesuffix(".csv.gz"): read_price_csv(p)
              for p in sorted(make_settings().shipped_prices_dir.glob("*.csv.gz"))}
    for ticker, rows in pd.read_parquet(universe).groupby("Ticker", sort=True):
        path = folder / f"{ticker}.csv"
        rows.drop(columns="Ticker").to_csv(path, index=False)
        frames.setdefault(str(ticker), read_price_csv(path))
    return frames


def timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def whole_histories(frames: dict[str, pd.DataFrame], settings) -> dict:
    from stockops.data.validation import PanelItem, validate_panel

    items = [PanelItem(t, f, f["Date"].iloc[-1].date()) for t, f in frames.items()]
    reports, wall, cpu = timed(lambda: validate_panel(items, settings, run_name="universe"))
    not_passed = {t: {"status": r.status, "failures": [{"expectation": f.expectation, "column": f.column,
                                                        "dates": f.offending_dates} for f in r.failures]}
                  for t, r in reports.items() if r.status != "passed"}
    return {"tickers": len(items), "rows": sum(len(f) for f in frames.values()),
            "outcomes": dict(Counter(r.status for r in reports.values())), "not_passed": not_passed,
            "seconds": wall, "cpu_seconds": cpu}


def bad_kinds(frames: dict[str, pd.DataFrame], settings, folder: Path) -> list[dict]:
    from stockops.data.sources import read_price_csv
    from stockops.data.validation import PanelItem, validate_panel
    from tests.data.test_price_suite import BAD

    rows = []
    for bad in BAD:
        per = {}
        for ticker in BAD_SERIES:
            series = frames[ticker]
            real = series.iloc[:N_ROWS].reset_index(drop=True)
            frame, bad_date = bad.corrupt(real.copy(), series.iloc[N_ROWS:N_ROWS + MORE].reset_index(drop=True))
            path = folder / f"bad-{ticker}.csv"
            frame.to_csv(path, index=False, date_format="%Y-%m-%d")
            served = read_price_csv(path)  # as the csv source serves it
            dated = len(served) and pd.api.types.is_datetime64_any_dtype(served["Date"])
            day = pd.Timestamp((served if dated else real)["Date"].iloc[-1])
            if bad.stale_sessions:
                day += pd.tseries.offsets.BDay(bad.stale_sessions)
            report = validate_panel([PanelItem(ticker, served, day.date())], settings, run_name=bad.name)[ticker]
            naming = [f for f in report.failures if bad_date is None or bad_date in f.offending_dates]
            per[ticker] = {"status": report.status, "bad_date": bad_date,
                           "named_by": sorted({f"{f.expectation} [{f.column}]" for f in naming}),
                           "expected_named": any((f.expectation, f.column) == (bad.expectation, bad.column)
                                                 for f in naming)}
        rows.append({"bad": bad.name, "expected": f"{bad.expectation} [{bad.column}]", "series": per,
                     "refused": sum(p["status"] == "failed" for p in per.values()),
                     "expected_named": sum(p["expected_named"] for p in per.values())})
    return rows


def swaps(frames: dict[str, pd.DataFrame], settings) -> list[dict]:
    from stockops.data.suite import TWIN_COL
    from stockops.data.validation import PanelItem, validate_panel

    base = frames[SWAP_BASE]
    head = base[base["Date"] <= pd.Timestamp(SWAP_UNTIL)].reset_index(drop=True)
    rows = []
    for other in SWAP_FROM:
        real = frames[other]
        following = real[real["Date"] > head["Date"].iloc[-1]].iloc[:SWAP_ROWS]
        own = real[real["Date"] <= following["Date"].iloc[-1]].reset_index(drop=True)
        own_published = real[real["Date"] <= head["Date"].iloc[-1]].reset_index(drop=True)
        for u in SWAP_LEVELS:
            scaled = following.copy()
            scaled[PRICES] *= head["Close"].iloc[-1] * (1 + u) / following["Close"].iloc[0]
            frame = pd.concat([head, scaled], ignore_index=True)
            day = frame["Date"].iloc[-1].date()
            swapped = PanelItem(SWAP_BASE, frame, day, published=head)
            paired = validate_panel([swapped, PanelItem(other, own, day, published=own_published)], settings)
            alone = validate_panel([swapped], settings)[SWAP_BASE]
            rows.append({"from": other, "u": u, "panel": paired[SWAP_BASE].status,
                         "panel_twin": any(f.column == TWIN_COL for f in paired[SWAP_BASE].failures),
                         "other_in_panel": paired[other].status, "alone": alone.status,
                         "alone_failed": sorted({str(f.column) for f in alone.failures})})
    return rows


def derived_timing(frames: dict[str, pd.DataFrame], settings, repeat: int = 3) -> dict:
    from stockops.data.suite import with_derived_columns

    reference = {t: f["Date"].iloc[-1].date() for t, f in frames.items()}
    out = {}
    for name, rows in (("whole", None), ("incremental_61", 61)):
        panel = pd.concat([(f if rows is None else f.tail(rows)).assign(Ticker=t) for t, f in frames.items()],
                          ignore_index=True)
        best = min(timed(lambda p=panel: with_derived_columns(p, reference, settings))[1] for _ in range(repeat))
        out[name] = {"rows": len(panel), "seconds": best, "ms_per_ticker": 1000 * best / len(frames)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("universe", type=Path, help="universe.parquet (403 real series)")
    args = parser.parse_args()
    from stockops.core.settings import make_settings
    from stockops.data.validation import validate_prices

    scratch = Path(tempfile.mkdtemp(prefix="stockops-universe-validation-"))
    try:
        settings = make_settings(home=scratch / "home")  # the declared defaults, not the environment
        frames = load(args.universe, scratch)
        goog = frames["GOOG"].iloc[:N_ROWS]
        validate_prices(goog, goog["Date"].iloc[-1].date(), settings)  # GX set-up, once, outside the timings
        whole = whole_histories(frames, settings)
        anomalies = {t: f.attrs["adjustment_anomalies"] for t, f in frames.items() if f.attrs["adjustment_anomalies"]}
        bads = bad_kinds(frames, settings, scratch)
        swapped = swaps(frames, settings)
        derived = derived_timing(frames, settings)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    passed = whole["outcomes"].get("passed", 0)
    print(f"1. whole histories: {whole['tickers']} tickers, {whole['rows']:,} rows in one validate_panel: "
          f"{whole['outcomes']} in {whole['seconds']:.1f} s wall, {whole['cpu_seconds']:.1f} CPU-s "
          f"(goal {whole['tickers']} passed: {'met' if passed == whole['tickers'] else 'NOT met'})")
    for ticker, info in whole["not_passed"].items():
        for f in info["failures"]:
            print(f"   {ticker} {info['status']}: {f['expectation']} [{f['column']}] {', '.join(f['dates'][:8])}")
    print(f"2. adjustment anomalies taken out: {sum(map(len, anomalies.values()))} in {len(anomalies)} tickers")
    for ticker, found in anomalies.items():
        for a in found:
            print(f"   {ticker:<6} {a['day']} factor {a['factor_before']:.4f} -> {a['factor_after']:.4f}, close "
                  f"{a['close_move_pct']:+.2f} %, move avoided {a['move_avoided_pct']:+.2f} %")
    n = len(BAD_SERIES)
    print(f"3. bad kinds on {', '.join(BAD_SERIES)} (first {N_ROWS} rows), validated alone:")
    print(f"   {'bad kind':<24} {'refused':>7} {'named':>5}  expectation [column] naming the bad date")
    for row in bads:
        named = sorted({x for p in row["series"].values() for x in p["named_by"]})
        print(f"   {row['bad']:<24} {row['refused']:>5}/{n} {row['expected_named']:>3}/{n}  {'; '.join(named)}")
    print(f"4. {SWAP_BASE} through {SWAP_UNTIL} + {SWAP_ROWS} sessions of another ticker, first close x (1 + u):")
    print(f"   {'from':<6} {'u':>6}  {'in panel':<9} {'twin':<5} {'other':<7} {'alone':<7} alone failed")
    for r in swapped:
        print(f"   {r['from']:<6} {r['u']:>+6.2f}  {r['panel']:<9} {'yes' if r['panel_twin'] else 'no':<5} "
              f"{r['other_in_panel']:<7} {r['alone']:<7} {', '.join(r['alone_failed'])}")
    for name, d in derived.items():
        print(f"5. with_derived_columns, {name}: {d['rows']:,} rows, {d['seconds'] * 1000:.0f} ms "
              f"({d['ms_per_ticker']:.2f} ms per ticker)")
    all_refused = all(r["refused"] == n and r["expected_named"] == n for r in bads)
    print(f"goals: {passed}/{whole['tickers']} passed; every bad kind refused and named on all {n} series: "
          f"{'met' if all_refused else 'NOT met'}; swaps refused in a panel: "
          f"{sum(r['panel'] == 'failed' for r in swapped)}/{len(swapped)}, alone: "
          f"{sum(r['alone'] == 'failed' for r in swapped)}/{len(swapped)}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
        "whole_histories": whole, "adjustment_anomalies": anomalies, "bad_kinds": bads, "swaps": swapped,
        "derived_columns": derived}, indent=2, default=str) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
