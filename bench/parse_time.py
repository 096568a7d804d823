"""How much each DAG file costs the dag-processor to import, beyond what it has already loaded.

The baseline is ``airflow.sdk`` plus the dag-processor itself (see ``stockops.orchestration.dagcheck``).

Each file is imported in a fresh interpreter (median of several runs) and compared side by side
with a reference DAG that imports TensorFlow at module level, the common anti-pattern.
Results: bench/results/parse_time.json.

    .venv/bin/python bench/parse_time.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path

from stockops.orchestration.dagcheck import import_cost

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "bench" / "reference_dags" / "heavy_tf_dag.py"
RESULTS = ROOT / "bench" / "results" / "parse_time.json"


def median_cost(path: Path, repeats: int) -> dict:
    costs = [import_cost(path) for _ in range(repeats)]
    return {"file": str(path.relative_to(ROOT)), "median_s": statistics.median(c.seconds for c in costs),
            "runs_s": [round(c.seconds, 4) for c in costs], "heavy_modules": costs[0].heavy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    reference = median_cost(REFERENCE, args.repeats)
    rows = [median_cost(p, args.repeats) for p in sorted((ROOT / "dags").glob("*.py"))]
    print(f"{'DAG file':<34} {'import s':>9} {'ratio to ref':>13}  heavy modules")
    for row in [*rows, reference]:
        row["ratio_to_reference"] = row["median_s"] / reference["median_s"]
        print(f"{row['file']:<34} {row['median_s']:>9.3f} {row['ratio_to_reference']:>13.4f}  "
              f"{', '.join(row['heavy_modules']) or '-'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": __import__("os").cpu_count()},
        "repeats": args.repeats, "reference": reference, "dags": rows,
    }, indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
