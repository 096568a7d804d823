"""Measure what importing a DAG file costs, the way the dag-processor pays it.

Each measurement runs in a fresh interpreter that first imports what the dag-processor has
loaded before it parses any file (``airflow.sdk`` and the processor itself, SQLAlchemy
included: Airflow 3 forks each parse from that process), so the baseline is not counted; then
the DAG file is executed and timed, and the heavy libraries it pulled in are listed. Without
the processor in the baseline, a DAG using a core operator such as ``TriggerDagRunOperator``
would be charged ~0.7 s for SQLAlchemy that the dag-processor never pays again. Used by ``tests/dags`` and ``bench/parse_time.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HEAVY = ("tensorflow", "keras", "mlflow", "bentoml", "evidently", "great_expectations", "yfinance")

_PROBE = r"""
import importlib.util, json, sys, time
import airflow.sdk  # baseline: what every DAG file's parse already has loaded
import airflow.dag_processing.manager  # noqa: F401  (the dag-processor, parent of every parse)
from airflow.sdk import dag, task  # resolved lazily by airflow.sdk; every DAG file pays it
path, repeats = sys.argv[1], int(sys.argv[2])
before = set(sys.modules)
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("_probe_dag", path)
spec.loader.exec_module(importlib.util.module_from_spec(spec))
first = time.perf_counter() - t0
loaded = sorted({m.split(".")[0] for m in set(sys.modules) - before})
print(json.dumps({"seconds": first, "modules": loaded}))
"""


@dataclass(frozen=True)
class ImportCost:
    path: str
    seconds: float
    heavy: list[str]
    modules: list[str]


def import_cost(path: Path, env: dict[str, str] | None = None) -> ImportCost:
    """Seconds to import ``path`` beyond the dag-processor's own imports, and the heavy libraries it loaded."""
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path), "1"], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"importing {path} failed:\n{out.stderr[-2000:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in data["modules"] if m in HEAVY]
    return ImportCost(str(path), data["seconds"], heavy, data["modules"])
