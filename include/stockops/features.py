"""Features for the forecaster: windows of recent closes, made scale-free.

A window of the last ``window`` closes ending at day t becomes ``log(close[t-k] / close[t])``
for k = window-1 … 0 (so the newest value is always 0), and the target is the next day's log
return ``log(close[t+1] / close[t])``. Nothing depends on the price level, which is what made
a level-scaled LSTM lose to persistence by 70 % on this series (an LSTM on z-scored price levels
scored 1.70 x persistence's RMSE: prices left the range it was trained on), and a feature at
day t uses closes up to t only.

The holdout is defined by *target days* (the last ``test_frac`` of the series), so models with
different window lengths — a candidate and the champion — are scored on the same days.
Scalers are fitted on the training part only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def relative_log_windows(closes: np.ndarray, window: int, ends: np.ndarray | None = None) -> np.ndarray:
    """Rows ``log(closes[t-window+1 : t+1] / closes[t])`` for each end index t in ``ends``."""
    closes = np.asarray(closes, dtype=np.float64)
    if ends is None:
        ends = np.arange(window - 1, len(closes))
    ends = np.asarray(ends)
    if len(ends) and (ends.min() < window - 1 or ends.max() >= len(closes)):
        raise ValueError(f"window {window} does not fit end indices {ends.min()}..{ends.max()} of {len(closes)} closes")
    idx = ends[:, None] + np.arange(-window + 1, 1)[None, :]
    logs = np.log(closes)
    return logs[idx] - logs[ends][:, None]


def next_log_returns(closes: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Targets: ``log(closes[t+1] / closes[t])`` for each end index t."""
    logs = np.log(np.asarray(closes, dtype=np.float64))
    return logs[ends + 1] - logs[ends]


@dataclass(frozen=True)
class Split:
    """End indices (day t of each window; the target is day t+1) for each chronological part."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def chronological_split(n_closes: int, window: int, val_frac: float = 0.1, test_frac: float = 0.1) -> Split:
    """Split window end indices in time order: train, then validation, then test.

    Validation and test are the last ``val_frac`` and ``test_frac`` of all target days,
    whatever the window, so models with different windows are scored on the same days.
    """
    n_targets = n_closes - 1  # the last close has no next day
    n_test = max(1, int(round(n_targets * test_frac)))
    n_val = max(1, int(round(n_targets * val_frac)))
    val_start = n_targets - n_test - n_val
    if val_start - (window - 1) < 10:
        raise ValueError(f"{n_closes} closes are too few for a window of {window} "
                         f"(need at least {window + 10 + n_test + n_val})")
    return Split(train=np.arange(window - 1, val_start), val=np.arange(val_start, n_targets - n_test),
                 test=np.arange(n_targets - n_test, n_targets))


@dataclass(frozen=True)
class Scaler:
    """Mean/std standardisation, fitted on the training part only."""

    mean: float
    std: float

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        std = float(np.std(values))
        return cls(mean=float(np.mean(values)), std=std if std > 0 else 1.0)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean


@dataclass(frozen=True)
class Dataset:
    """Everything training needs, built from one series of closes."""

    window: int
    split: Split
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_scaler: Scaler
    y_scaler: Scaler


def build_dataset(closes: np.ndarray, window: int, val_frac: float = 0.1, test_frac: float = 0.1) -> Dataset:
    """Scale-free windows and next-day log returns, split in time, scalers fitted on train."""
    split = chronological_split(len(closes), window, val_frac, test_frac)
    x_train = relative_log_windows(closes, window, split.train)
    y_train = next_log_returns(closes, split.train)
    x_scaler = Scaler.fit(x_train[:, :-1])  # the last column is always 0
    y_scaler = Scaler.fit(y_train)
    return Dataset(
        window=window, split=split,
        x_train=x_train, y_train=y_train,
        x_val=relative_log_windows(closes, window, split.val), y_val=next_log_returns(closes, split.val),
        x_scaler=x_scaler, y_scaler=y_scaler,
    )


def raw_windows(closes: np.ndarray, window: int, ends: np.ndarray) -> np.ndarray:
    """Raw closes ``closes[t-window+1 : t+1]`` per end index: what the served model takes."""
    idx = np.asarray(ends)[:, None] + np.arange(-window + 1, 1)[None, :]
    return np.asarray(closes, dtype=np.float64)[idx]
