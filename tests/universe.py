"""Universes the project makes itself: many tickers resampled from the 18 real series it ships.

The tests and the small benches need more tickers than the shipped 18 without depending on a universe
kept outside the repository. Each made ticker is a *block bootstrap* of one shipped series: its history is
cut into blocks of consecutive sessions, and the blocks are drawn again (per ticker, from its own seed) and
chained. A day keeps all of its own shape (the open, high and low relative to the close, the volume), so
every row is a real day of a real series; the level follows the chained daily returns. The dates are the
source's own sessions, so every made ticker trades on the NYSE calendar like the real ones.

    frames = synthetic_universe(60, seed=1)        # {"U000": frame, ...}, columns Date, Open .. Volume
    write_csv_folder(frames, tmp / "universe")     # <TICKER>.csv files for STOCKOPS_SOURCE=csv or replay
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stockops.core.settings import SHIPPED_PRICES

BLOCK = 21  # sessions per block: about a month, so volatility clusters survive the resampling


def _shipped(folder: Path) -> dict[str, pd.DataFrame]:
    from stockops.data.sources import shipped_series

    names = sorted(p.name.removesuffix(".csv.gz") for p in folder.glob("*.csv.gz"))
    return {name: shipped_series(name, folder) for name in names}


def resample_series(source: pd.DataFrame, rng: np.random.Generator, block: int = BLOCK) -> pd.DataFrame:
    """One block-bootstrap path of ``source`` (columns ``Date, Open, High, Low, Close, Volume``), same dates."""
    close = source["Close"].to_numpy(np.float64)
    n = len(close)
    ratios = source[["Open", "High", "Low"]].to_numpy(np.float64) / close[:, None]
    returns = np.diff(np.log(close), prepend=np.log(close[0]))
    starts = rng.integers(1, max(2, n - block), size=n // block + 1)
    rows = np.concatenate([np.arange(s, s + block) for s in starts])[:n]
    rows[0] = 0
    path = np.exp(np.cumsum(np.where(np.arange(n) == 0, 0.0, returns[rows]))) * close[0] * rng.uniform(0.3, 3.0)
    volume = source["Volume"].to_numpy(np.float64)[rows] * rng.uniform(0.2, 5.0)
    out = pd.DataFrame({"Date": source["Date"].to_numpy(), "Close": path})
    out["Open"], out["High"], out["Low"] = (ratios[rows] * path[:, None]).T
    out["Volume"] = np.round(volume).astype(np.int64)
    return out[["Date", "Open", "High", "Low", "Close", "Volume"]]


def synthetic_universe(n_tickers: int, seed: int = 0, folder: Path = SHIPPED_PRICES,
                       prefix: str = "U") -> dict[str, pd.DataFrame]:
    """``n_tickers`` made tickers (``U000``, ``U001``, ...), ticker i resampled from shipped series i mod 18."""
    shipped = _shipped(folder)
    names = list(shipped)
    rng = np.random.default_rng(seed)
    width = max(3, len(str(n_tickers - 1)))
    return {f"{prefix}{i:0{width}d}": resample_series(shipped[names[i % len(names)]],
                                                      np.random.default_rng(rng.integers(2**63)))
            for i in range(n_tickers)}


def write_csv_folder(frames: dict[str, pd.DataFrame], folder: Path) -> Path:
    """``<TICKER>.csv`` per frame in yfinance's layout (what the ``csv`` and ``replay`` sources read)."""
    folder.mkdir(parents=True, exist_ok=True)
    for ticker, frame in frames.items():
        frame.assign(Date=pd.to_datetime(frame["Date"]).dt.strftime("%Y-%m-%d")).to_csv(folder / f"{ticker}.csv",
                                                                                        index=False)
    return folder
