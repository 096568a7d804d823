"""The features the monitor watches for drift, and the training days' reference it compares them with.

Training saves the reference (the days a model was fitted on) with the model; the monitor computes the same
features on the days since. Both sides import this one definition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

FEATURES = ("log_return", "abs_return", "volatility_20d", "range_pct", "volume_ratio")


def monitor_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Per trading day: the model's input signal and its context, each from data up to that day.

    ``log_return`` and ``abs_return`` are what the LSTM's windows are made of; ``volatility_20d``
    (20-day std of log returns), ``range_pct`` ((high - low) / close) and ``volume_ratio`` (log of
    volume over its 50-day mean) describe the regime. All are scale-free, so a stock that simply
    rose is not "drift". Days before the rolling windows fill are dropped.
    """
    import numpy as np
    import pandas as pd

    with np.errstate(divide="ignore", invalid="ignore"):  # a day without volume: -inf, dropped below
        log_return = np.log(frame["Close"].astype("float64")).diff()
        volume = frame["Volume"].astype("float64")
        features = pd.DataFrame({
            "Date": _dates(frame["Date"]),
            "log_return": log_return,
            "abs_return": log_return.abs(),
            "volatility_20d": log_return.rolling(20).std(),
            "range_pct": (frame["High"] - frame["Low"]) / frame["Close"],
            "volume_ratio": np.log(volume / volume.rolling(50).mean()),
        })
    return features.replace([np.inf, -np.inf], np.nan).dropna().reset_index(drop=True)


def _dates(column: pd.Series) -> pd.Series:
    """``column`` as datetimes; one already of datetimes is kept as it is (``pd.to_datetime`` would walk it in Python
    to decide whether to cache: ~7 ms a 4,000-day series, the most of this module's time at 421 tickers)."""
    import pandas as pd

    return column if pd.api.types.is_datetime64_any_dtype(column) else pd.to_datetime(column)


def reference_features(frame: pd.DataFrame, last_training_index: int) -> pd.DataFrame:
    """The features of the days a model was trained on: rows ``0..last_training_index`` of ``frame``."""
    return monitor_features(frame.iloc[: last_training_index + 1])


def current_features(frame: pd.DataFrame, days: int) -> pd.DataFrame:
    """The features of the last ``days`` trading days of ``frame``."""
    features = monitor_features(frame)
    if len(features) < days:
        raise ValueError(f"the snapshot has {len(features)} days with complete features, fewer than the "
                         f"{days} the monitor compares (STOCKOPS_MONITOR_CURRENT_DAYS)")
    return features.iloc[-days:].reset_index(drop=True)
