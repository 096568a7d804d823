"""Measure what the gate thresholds should be, on the real bundled series.

For several cut points of the series (as the replay would serve it on different days) and
several seeds, train the default model and record its holdout RMSE ratio to persistence.
- the spread across seeds at one cut point is retraining noise: the champion margin should
  exceed it, so a retrain on the same data does not churn the champion;
- the ratios across cut points show how often an honest default model beats persistence.
Results: bench/results/gate_thresholds.json.

    .venv/bin/python bench/gate_thresholds.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import UTC, datetime
from pathlib import Path

from stockops.data.sources import shipped_series
from stockops.evaluation import score_all
from stockops.features import build_dataset, raw_windows
from stockops.model import ModelConfig, predict_prices, train

RESULTS = Path(__file__).resolve().parent / "results" / "gate_thresholds.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cuts", type=int, nargs="*", default=[1000, 1250, 1500, 1750, 2000, 2148])
    args = parser.parse_args()
    # GOOG up to 2013-03-01 (2,148 days): the series these results were first measured on
    closes_all = shipped_series("GOOG").iloc[:2148]["Close"].to_numpy()
    rows = []
    for cut in args.cuts:
        closes = closes_all[:cut]
        ratios = []
        for seed in range(args.seeds):
            config = ModelConfig(seed=seed)
            dataset = build_dataset(closes, config.window)
            model = train(closes, dataset, config)
            forecast = predict_prices(model.model, raw_windows(closes, config.window, dataset.split.test))
            ratios.append(score_all(closes, dataset.split.test, {"candidate": forecast})["candidate"]["rmse_ratio"])
        row = {"rows": cut, "ratios": ratios, "mean": statistics.mean(ratios),
               "seed_spread": max(ratios) - min(ratios)}
        rows.append(row)
        print(f"rows {cut:>5}: ratio to persistence {', '.join(f'{r:.4f}' for r in ratios)}  "
              f"(spread across seeds {row['seed_spread']:.4%})", flush=True)
    all_ratios = [r for row in rows for r in row["ratios"]]
    summary = {"share_beating_persistence": sum(r <= 1.0 for r in all_ratios) / len(all_ratios),
               "max_seed_spread": max(row["seed_spread"] for row in rows),
               "median_ratio": statistics.median(all_ratios), "worst_ratio": max(all_ratios)}
    print(json.dumps(summary, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                                   "config": ModelConfig().__dict__, "cuts": rows, "summary": summary},
                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
