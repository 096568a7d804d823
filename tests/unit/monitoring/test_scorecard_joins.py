"""The scorecard's join of the forecast log with the snapshots: one table join, the same rows as a record-by-record
lookup (the first record of a day, realized days only, one version)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from stockops.monitoring.scorecard import QUANTILES, realized_pairs
from tests.universe import synthetic_universe

DAYS = 20


def lookup_one_by_one(records: list[dict], frames: dict[str, pd.DataFrame], version: str, days: int) -> pd.DataFrame:
    """What the join must equal: each record looked up in its ticker's last ``days`` closes, in log order."""
    rows, seen = [], set()
    for entry in records:
        ticker = entry.get("ticker")
        if str(entry.get("model_version")) != version or ticker not in frames:
            continue
        window = frames[ticker].iloc[-days:]
        closes = dict(zip(window["Date"].dt.strftime("%Y-%m-%d"), window["Close"], strict=True))
        key = (ticker, entry.get("forecast_for"))
        if key in seen or key[1] not in closes:
            continue
        seen.add(key)
        rows.append({"ticker": ticker, "as_of": entry["as_of"], "forecast_for": key[1],
                     "ret": math.log(closes[key[1]] / entry["last_close"]), "variance": entry["variance"],
                     **{q: entry["quantiles"][q] for q in QUANTILES}})
    return pd.DataFrame(rows).sort_values(["ticker", "forecast_for"], ignore_index=True)


def test_the_join_equals_a_lookup_of_every_record():
    frames = {t: f.iloc[:400] for t, f in synthetic_universe(3, seed=5).items()}
    rng = np.random.default_rng(0)
    records = []
    for ticker, frame in frames.items():
        dates = frame["Date"].dt.strftime("%Y-%m-%d").to_list()
        for i in range(len(dates) - DAYS - 5, len(dates)):
            forecast_for = dates[i + 1] if i + 1 < len(dates) else "2099-01-02"  # the last: not realized yet
            for version in ("2", "1", "2"):  # "2" twice: the second record of a day is not counted
                records.append({"ticker": ticker, "as_of": dates[i], "forecast_for": forecast_for,
                                "model_version": version, "last_close": float(frame["Close"].iloc[i]),
                                "variance": float(rng.uniform(1e-4, 4e-4)),
                                "quantiles": {q: float(rng.normal(0, 0.02)) for q in QUANTILES}})
    records.append({**records[0], "ticker": "NOT_IN_FRAMES"})
    joined = realized_pairs(records, frames, "2", DAYS)
    expected = lookup_one_by_one(records, frames, "2", DAYS)
    assert len(joined) == 3 * DAYS  # every day of each ticker's window, once
    pd.testing.assert_frame_equal(joined, expected[joined.columns.tolist()], check_dtype=False)
    assert realized_pairs(records, frames, "7", DAYS).empty
