"""The DORA report: the four DORA measures, computed from the platform's own records.

MLOps-pipeline papers compare pipelines by the four DORA measures. Here they come from what
the platform already writes under its home, not from anything kept for the report. One job per module:

* :mod:`~stockops.reporting.dora.records` — the records read (deploy, audit, snapshot manifests,
  DAG runs, incidents) and how their times and kinds are read;
* :mod:`~stockops.reporting.dora.measures` — the measures and their DORA levels, as plain data
  (the definitions are in its docstring);
* :mod:`~stockops.reporting.dora.text` — the report for people: durations, the table;
* :mod:`~stockops.charts.dora` — the report as a 2×2 PNG (matplotlib).

Here: :func:`report` (the measures of a home, now or as of a past moment) and :func:`main`.
``python -m stockops dora`` prints the table and writes ``reports/dora.json`` and ``reports/dora.png``.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stockops.charts.dora import draw_chart
from stockops.core.settings import Settings, get_settings
from stockops.reporting.dora.measures import compute
from stockops.reporting.dora.records import load_records
from stockops.reporting.dora.text import format_table


def report(settings: Settings, *, now: datetime | None = None, days: float = 30) -> dict[str, Any]:
    """The DORA report of ``settings``' home, as of ``now`` (default: now)."""
    return compute(**load_records(settings), now=now or datetime.now(UTC), days=days)


def main(argv: list[str] | None = None) -> int:
    """``python -m stockops dora``: print the table, write the JSON and the chart, print where."""
    parser = argparse.ArgumentParser(prog="stockops dora",
                                     description="The four DORA measures from this home's own records.")
    parser.add_argument("--days", type=float, default=30, help="report period in days, ending now (default 30)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON (default reports/dora.json)")
    parser.add_argument("--chart", type=Path, default=None, help="where to write the PNG (default reports/dora.png)")
    args = parser.parse_args(argv)
    if args.days <= 0:
        parser.error(f"--days {args.days}: the period must be longer than zero days")
    settings = get_settings()  # the command line is the boundary: the environment is read here, once
    result = report(settings, days=args.days)
    json_path = args.json or settings.reports_dir / "dora.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    chart_path = draw_chart(result, args.chart or settings.reports_dir / "dora.png")
    print(format_table(result))
    print(f"\nJSON:  {json_path}\nchart: {chart_path}")
    return 0
