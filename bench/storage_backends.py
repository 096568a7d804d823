"""The platform's stores, embedded (SQLite + the home's folder) against distributed (PostgreSQL + a real S3 server,
``rclone serve s3``), side by side on the same work, and how each grows with the number of tickers.

For N tickers of the shipped real series (cycled when N > 18, each under its own symbol) it measures, in one process:

- **publish**: every ticker's snapshot published (the blob written, read back and checked; its record and the
  ``latest`` pointer in one transaction, under the ticker's lock), then one new day published for each;
- **load**: every ticker's latest snapshot read back and checked against its hash;
- **forecasts**: one day's forecast records of every ticker appended together, and the whole log read back (30 days);
- **status**: every ticker's ingest status written, then all read in one query (what the dashboard does).

Reference: the embedded backends at the smallest N. The goal the stores serve (issue 29): the distributed daily cycle
within 1.3 x the embedded one; these are its storage parts, per ticker. Results: bench/results/storage_backends.json.

    .venv/bin/python bench/storage_backends.py [--sizes 18 100 421]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "storage_backends.json"
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

from results_io import merged_rows  # noqa: E402


def frames(n: int) -> dict[str, object]:
    from stockops.core.settings import WATCHLIST
    from stockops.data.sources import shipped_series

    series = {t: shipped_series(t) for t in WATCHLIST}
    names = list(series)
    return {(names[i % len(names)] + (f"X{i // len(names)}" if i >= len(names) else "")).replace(".", ""):
            series[names[i % len(names)]].iloc[:3000].reset_index(drop=True) for i in range(n)}


def run(n: int, backend: str, state_url: str, blob_url: str, home: Path) -> dict:
    from stockops.contracts import IngestStatus
    from stockops.core import audit, pointers
    from stockops.core.settings import make_settings
    from stockops.data import store_for
    from stockops.ingest.status import status_path, write_status

    data = frames(n)
    settings = make_settings(home=home, tickers=",".join(data), ticker=next(iter(data)), state_db=state_url,
                             blob_url=blob_url)
    out: dict = {"tickers": n, "backend": backend}
    started = time.perf_counter()
    for ticker, frame in data.items():
        store_for(settings, ticker).publish(frame.iloc[:-1], logical_date="2026-01-02", source="bench")
    out["publish_first_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for ticker, frame in data.items():
        store_for(settings, ticker).publish(frame, logical_date="2026-01-05", source="bench")
    out["publish_day_s"] = time.perf_counter() - started
    started = time.perf_counter()
    rows = sum(len(store_for(settings, ticker).load()) for ticker in data)
    out["load_s"] = time.perf_counter() - started
    assert rows == sum(len(f) for f in data.values())
    started = time.perf_counter()
    for day in range(30):
        audit.append_many(settings.forecast_log, [{"event": "forecast", "ticker": t, "as_of": f"d{day}",
                                                    "variance": 1e-4, "quantiles": {"q05": -0.01, "q95": 0.01}}
                                                   for t in data])
    out["forecasts_append_30_days_s"] = time.perf_counter() - started
    started = time.perf_counter()
    assert len(audit.read(settings.forecast_log)) == 30 * n
    out["forecasts_read_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for ticker in data:
        write_status(settings, ticker, "2026-01-05", IngestStatus.PUBLISHED, "")
    out["status_write_s"] = time.perf_counter() - started
    started = time.perf_counter()
    stamps = pointers.stamps([status_path(settings, t) for t in data])
    out["status_read_all_s"] = time.perf_counter() - started
    assert all(stamps)
    out["per_ticker_ms"] = {k.removesuffix("_s"): round(1000 * v / n, 3) for k, v in out.items()
                            if k.endswith("_s")}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[18, 100])
    args = parser.parse_args(argv)
    from stockops.launch.cluster import _admin, database_dsn, unreachable_services
    from stockops.launch.objectstore import ObjectStoreServer

    missing = [p for p in unreachable_services() if p.startswith("PostgreSQL")]
    if missing:
        raise SystemExit(f"needs PostgreSQL for the distributed backend: {missing[0]}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = ObjectStoreServer(Path(tmp) / "s3").start(buckets=["bench"])
        os.environ.update(server.env())
        try:
            for n in args.sizes:
                database = f"stockops_bench_{secrets.token_hex(3)}"
                _admin(f"CREATE DATABASE {database}")
                try:
                    embedded = run(n, "embedded", f"sqlite:///{tmp}/e{n}/state.db", f"{tmp}/e{n}", Path(tmp, f"e{n}"))
                    distributed = run(n, "distributed", database_dsn(database, "postgresql+psycopg2"),
                                      f"s3://bench/d{n}", Path(tmp, f"d{n}"))
                finally:
                    from stockops.storage.records import _ENGINES

                    for key in [k for k in _ENGINES if database in k[1]]:
                        _ENGINES.pop(key).dispose()
                    _admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
                ratios = {k: round(distributed[k] / embedded[k], 2) for k in embedded if k.endswith("_s")
                          and embedded[k] > 0}
                rows.append({"tickers": n, "embedded": embedded, "distributed": distributed,
                             "distributed_over_embedded": ratios})
                print(f"{n:>4} tickers        embedded   distributed   ratio   (per ticker: embedded / distributed ms)")
                for key, ratio in ratios.items():
                    name = key.removesuffix("_s")
                    print(f"  {name:<26} {embedded[key]:8.2f} s {distributed[key]:10.2f} s {ratio:6.2f} x   "
                          f"({embedded['per_ticker_ms'][name]:.2f} / {distributed['per_ticker_ms'][name]:.2f})")
        finally:
            server.stop()
    previous = json.loads(RESULTS.read_text()).get("rows", []) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps({
        "bench": "storage_backends", "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "reference": "embedded (SQLite + the home's folder), same N", "rows": merged_rows(previous, rows),
    }, indent=2) + "\n")
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
