"""Model quality and training time of the default model on the whole bundled GOOG series.

Trains the default configuration (the one `stock_train` uses) and prints, side by side with
the persistence and moving-average baselines on the same holdout (last 10 % of days): RMSE,
its ratio to persistence, MAE, MAPE, directional accuracy, and training seconds (goal: at
most 60 s on the 2-core machine). Results: bench/results/model_quality.json.

    .venv/bin/python bench/model_quality.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "model_quality.json"


def main() -> None:
    started = time.perf_counter()
    from stockops.data.sources import shipped_series
    from stockops.evaluation import score_all
    from stockops.features import build_dataset, raw_windows
    from stockops.model import ModelConfig, predict_prices, train
    from stockops.training import format_scores

    import_seconds = time.perf_counter() - started
    # GOOG up to 2013-03-01 (2,148 days): the series these results were first measured on
    closes = shipped_series("GOOG").iloc[:2148]["Close"].to_numpy()
    config = ModelConfig()
    dataset = build_dataset(closes, config.window)
    trained = train(closes, dataset, config)
    forecast = predict_prices(trained.model, raw_windows(closes, config.window, dataset.split.test))
    scores = score_all(closes, dataset.split.test, {"candidate": forecast})
    print(f"bundled GOOG series: {len(closes)} days; holdout {len(dataset.split.test)} days")
    print(format_scores(scores))
    print(f"training: {trained.seconds:.1f} s ({len(trained.history['loss'])} epochs, best {trained.best_epoch}, "
          f"shrink {trained.shrink:.3f}); goal <= 60 s; imports {import_seconds:.1f} s (not counted)")
    print(f"RMSE ratio to persistence: {scores['candidate']['rmse_ratio']:.4f} (goal < 1.00)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "device": "cpu"},
        "config": asdict(config), "days": len(closes), "holdout_days": len(dataset.split.test),
        "scores": scores, "train_seconds": trained.seconds, "epochs_run": len(trained.history["loss"]),
        "best_epoch": trained.best_epoch, "shrink": trained.shrink,
        "gpu": "no GPU machine was lent to this task; CPU only",
    }, indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
