"""Scale-free daily inputs for risk forecasting, from raw OHLCV (one path for training, baselines and serving).

For day t of one series (logs of prices, so nothing depends on the price level):

- ``ret``     log return ``log(C_t / C_{t-1})``;
- ``gk``      Garman–Klass range variance ``0.5 log(H/L)^2 - (2 log 2 - 1) log(C/O)^2``;
- ``gap``     the overnight gap ``log(O_t / C_{t-1})``;
- ``gko``     ``gk + gap^2``: the day's variance with the overnight part (what HARX-GKO models);
- ``volume_ratio``  ``log(V_t / mean(V_{t-22} .. V_{t-1}))``, 0 where volume is unknown;
- ``market_ret``    the market reference's log return on the same day (QQQ; 0 when absent).

Every value at day t uses data up to t only; the target for day t is ``ret`` of day t+1.
Depends on numpy and pandas only: the logged MLflow model carries this module (``code_paths``).

Two rules make a day's inputs the same bits wherever they are computed — over a ticker's whole history in
training's panel or over the last ``history`` rows in the bento, the monitor and a ``/predict`` request:

- the market reference is aligned to a ticker's days by :func:`align_market` only;
- trailing means are summed window by window (:func:`trailing_mean`), not by a running sum, whose rounding
  depends on where the series starts (pandas' ``rolling().mean()`` differs by ~1e-14 between a history and
  its tail).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VOLUME_DAYS = 22
HAR_DAYS = (1, 5, 22)
# floors: a day with no range and no gap (a halted or stale quote) must not give log(0)
VARIANCE_FLOOR = 1e-8  # in log-return units^2: a 0.01 % daily move
OHLCV = ("Open", "High", "Low", "Close", "Volume")
GK_CLOSE_OPEN = 2 * np.log(2) - 1


def daily_inputs(frame: pd.DataFrame, market_close: pd.Series | np.ndarray | None = None) -> pd.DataFrame:
    """Per-day inputs of one series (rows oldest first); the first row has no return or gap (NaN)."""
    missing = [c for c in ("Open", "High", "Low", "Close") if c not in frame.columns]
    if missing:
        raise ValueError(f"OHLCV input lacks column(s) {missing}; it has {list(frame.columns)}")
    o, h, low, c = (frame[k].to_numpy(dtype=np.float64) for k in ("Open", "High", "Low", "Close"))
    if not (np.all(np.isfinite([o, h, low, c])) and np.all(o > 0) and np.all(low > 0)):
        raise ValueError("OHLC prices must be finite and > 0")
    prev_close = np.concatenate([[np.nan], c[:-1]])
    ret = np.log(c / prev_close)
    gap = np.log(o / prev_close)
    gk = 0.5 * np.log(h / low) ** 2 - GK_CLOSE_OPEN * np.log(c / o) ** 2
    gk = np.maximum(gk, 0.0)  # inconsistent OHLC (Close outside [Low, High]) must not go negative
    out = pd.DataFrame({"ret": ret, "gk": gk, "gap": gap, "gko": gk + np.nan_to_num(gap) ** 2}, index=frame.index)
    out["volume_ratio"] = volume_ratio(frame["Volume"].to_numpy(dtype=np.float64)) if "Volume" in frame else 0.0
    if market_close is None:
        out["market_ret"] = 0.0
    else:
        m = np.asarray(market_close, dtype=np.float64)
        if len(m) != len(frame):
            raise ValueError(f"market closes ({len(m)}) and OHLCV rows ({len(frame)}) differ in length")
        out["market_ret"] = np.nan_to_num(np.log(m / np.concatenate([[np.nan], m[:-1]])))
    return out


def align_market(dates, market) -> np.ndarray | None:
    """The market reference's closes on ``dates``: THE alignment rule of stockops (training, baselines, the
    monitor, ``/predict`` requests and ``/forecast`` all call it).

    ``market``: a frame with ``Date`` and ``Close`` or a Series of closes indexed by date (None: no reference).
    A day the reference lacks takes its last known close before that day (a holiday of one exchange: the market
    did not move); days before its first close take that first close (no move). None when the reference has no
    close at all. Duplicate dates keep the last close.
    """
    if market is None:
        return None
    if isinstance(market, pd.DataFrame):
        market = pd.Series(market["Close"].to_numpy(np.float64), index=market["Date"].to_numpy(dtype="datetime64[D]"))
    closes = pd.Series(np.asarray(market, dtype=np.float64), index=pd.DatetimeIndex(market.index).to_numpy(
        dtype="datetime64[D]"))
    closes = closes[np.isfinite(closes.to_numpy())]
    if closes.empty:
        return None
    closes = closes[~closes.index.duplicated(keep="last")].sort_index()
    days = pd.DatetimeIndex(np.asarray(dates, dtype="datetime64[D]")).to_numpy(dtype="datetime64[D]")
    return closes.reindex(closes.index.union(days)).ffill().bfill().reindex(days).to_numpy(dtype=np.float64)


def trailing_mean(values: np.ndarray, days: int, min_periods: int) -> np.ndarray:
    """Mean of the last ``days`` values up to each day (NaN ignored), NaN where fewer than ``min_periods``.

    Each window is summed on its own, so a day's mean has the same bits whatever came before its window.
    """
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return v.copy()
    padded = np.concatenate([np.full(days - 1, np.nan), v])
    window = np.lib.stride_tricks.sliding_window_view(padded, days)
    counts = np.sum(~np.isnan(window), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.nansum(window, axis=1) / counts
    return np.where(counts >= min_periods, means, np.nan)


def volume_ratio(volume: np.ndarray, days: int = VOLUME_DAYS) -> np.ndarray:
    """``log(V_t / mean of the previous `days` volumes)``; 0 where it cannot be computed."""
    v = np.asarray(volume, dtype=np.float64)
    mean = trailing_mean(np.concatenate([[np.nan], v[:-1]]), days, min_periods=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log(v / mean)
    ratio[~np.isfinite(ratio)] = 0.0
    return np.clip(ratio, -5.0, 5.0)


def har_terms(gko: np.ndarray, days: tuple[int, ...] = HAR_DAYS) -> np.ndarray:
    """``log`` of the mean GKO variance over the last 1, 5 and 22 days, shape (n, 3); NaN before enough days."""
    s = np.maximum(np.asarray(gko, dtype=np.float64), VARIANCE_FLOOR)
    return np.column_stack([np.log(trailing_mean(s, d, min_periods=d)) for d in days])


def negative_return_term(ret: np.ndarray, gko: np.ndarray, bound: float = 4.0) -> np.ndarray:
    """The day's fall in units of its recent (22-day) volatility, in [0, bound]: leverage, bounded."""
    scale = np.sqrt(trailing_mean(np.maximum(gko, VARIANCE_FLOOR), 22, min_periods=1))
    return np.clip(-np.nan_to_num(np.asarray(ret, dtype=np.float64)) / scale, 0.0, bound)
