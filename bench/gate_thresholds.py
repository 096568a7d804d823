"""How far apart two honest retrains land: the gate's non-inferiority margin and its DM threshold.

Train the default model (all 18 shipped symbols, the split ``stock_train`` uses) with several
seeds on the same data and score each on the same holdout. The spread of pooled QLIKE between
seeds is retraining noise: a stale champion may be refreshed by a candidate within a margin above
it, and a Diebold–Mariano t ≥ 2 between two seeds would mean the test calls noise a win.
Results: bench/results/gate_thresholds.json.

    .venv/bin/python bench/gate_thresholds.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "gate_thresholds.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    from stockops.core.settings import WATCHLIST, get_settings
    from stockops.data.sources import shipped_series
    from stockops.model.risk_model import (
        RiskModelConfig,
        build_panel,
        fraction_split,
        sample_dates,
        sample_returns,
        sample_windows,
        train_risk,
    )
    from stockops.model.scoring import date_average, diebold_mariano, pinball, qlike

    settings = get_settings()
    panel = build_panel({t: shipped_series(t) for t in WATCHLIST})
    split = fraction_split(panel)
    runs = []
    for seed in range(args.seeds):
        config = RiskModelConfig(window=settings.train_window, epochs=settings.train_epochs, seed=seed)
        trained = train_risk(panel, split, config)
        test = split.parts(panel, config.window)["test"]
        f = trained.forecaster.predict_windows(sample_windows(panel, test, config.window))
        r, dates = sample_returns(panel, test), sample_dates(panel, test)
        losses = {"qlike": qlike(f["variance"], r), "pinball": pinball(f["quantiles"], r)}
        runs.append({"seed": seed, "seconds": trained.seconds, "losses": losses, "dates": dates,
                     "coverage_90": float(np.mean((r >= f["quantiles"][:, 1]) & (r <= f["quantiles"][:, 5])))})
        print(f"seed {seed}: QLIKE {losses['qlike'].mean():.4f}, pinball {losses['pinball'].mean():.4f}, "
              f"90 % coverage {runs[-1]['coverage_90']:.3f}, {trained.seconds:.0f} s", flush=True)
    pairs = []
    for a, b in itertools.combinations(runs, 2):
        pair = {"seeds": [a["seed"], b["seed"]]}
        for loss in ("qlike", "pinball"):
            da = date_average(a["losses"][loss], a["dates"])[1]
            db = date_average(b["losses"][loss], b["dates"])[1]
            pair[f"{loss}_difference"] = float(a["losses"][loss].mean() - b["losses"][loss].mean())
            pair[f"dm_{loss}"] = diebold_mariano(da, db)[0]
        pairs.append(pair)
        print(f"seeds {pair['seeds']}: QLIKE difference {pair['qlike_difference']:+.4f} (DM t {pair['dm_qlike']:+.2f}),"
              f" pinball {pair['pinball_difference']:+.4f} (DM t {pair['dm_pinball']:+.2f})")
    spread = max(abs(p["qlike_difference"]) for p in pairs)
    largest_t = max(max(abs(p["dm_qlike"]), abs(p["dm_pinball"])) for p in pairs)
    print(f"largest QLIKE difference between seeds: {spread:.4f} nats/day -> margin {settings.gate_margin} "
          f"({'covers' if settings.gate_margin >= spread else 'does NOT cover'} it); largest |DM t| between seeds "
          f"{largest_t:.2f} ({'below' if largest_t < settings.gate_dm_t else 'NOT below'} the gate's "
          f"{settings.gate_dm_t})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
        "runs": [{k: v for k, v in run.items() if k not in ("losses", "dates")} | {
            "qlike": float(run["losses"]["qlike"].mean()), "pinball": float(run["losses"]["pinball"].mean())}
            for run in runs],
        "pairs": pairs, "largest_qlike_difference": spread, "largest_abs_dm_t": largest_t,
        "gate_margin": settings.gate_margin, "gate_dm_t": settings.gate_dm_t,
    }, indent=1) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
