"""Where daily prices come from: one small interface, three implementations.

Every source returns the same shape, a :class:`FetchResult` whose frame has the columns
``Date, Open, High, Low, Close, Volume`` (``Date`` a column, not the index). Sources only
*reshape*; they never repair values. Judging the data is the validation step's job, so a
broken input reaches it unchanged and is quarantined there with a reason.

- ``yfinance``: live daily OHLCV from Yahoo, with timeout, retries and backoff; the watchlist
  in one batched download (:meth:`YFinanceSource.fetch_many`), split per ticker.
- ``replay``: a real price series served as if it arrived one NYSE session per run (offline):
  the 18 series shipped in ``include/data/prices/``, or the CSVs of a folder.
- ``csv``: any yfinance-format CSV file, or a folder of ``<TICKER>.csv`` files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from stockops.core.settings import SHIPPED_PRICES, Settings
from stockops.data.calendar import sessions_between

log = logging.getLogger(__name__)

PRICE_COLUMNS = ["Open", "High", "Low", "Close"]
COLUMNS = ["Date", *PRICE_COLUMNS, "Volume"]


class SourceError(RuntimeError):
    """The source could not deliver data (network, empty answer, unreadable file)."""


@dataclass(frozen=True)
class FetchResult:
    """What a source delivered for one logical date."""

    frame: pd.DataFrame
    source: str
    ticker: str
    logical_date: date
    # The day the data should be current to; freshness is judged against it. For live
    # sources it is the logical date; for the replay it is the replay clock's market day.
    reference_date: date
    note: str = ""


class PriceSource(Protocol):
    name: str

    def fetch(self, ticker: str, logical_date: date) -> FetchResult: ...


def to_date(value: date | str | pd.Timestamp) -> date:
    """Accept a date, datetime, Timestamp or ISO string; return a plain ``date``."""
    return pd.Timestamp(value).date()


def normalise_frame(raw: pd.DataFrame, ticker: str | None = None) -> pd.DataFrame:
    """Bring a yfinance-shaped frame into the stockops column layout, values untouched.

    Handles yfinance 1.x ``download()`` output (MultiIndex columns ``(Price, Ticker)``),
    ``Ticker.history()`` output, a DatetimeIndex or a ``Date`` column, and CSVs with an
    ``Adj Close`` column (prices are then adjusted the way yfinance's ``auto_adjust`` does,
    so every source yields adjusted prices). Unknown extra columns are dropped.
    """
    frame = raw.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        level = _ticker_level(frame.columns)
        if level is not None:
            tickers = frame.columns.get_level_values(level).unique()
            chosen = ticker if ticker in tickers else tickers[0]
            frame = frame.xs(chosen, axis=1, level=level)
        else:
            frame.columns = frame.columns.get_level_values(0)
    frame.columns = [str(c).strip() for c in frame.columns]
    if "Date" not in frame.columns:
        index_name = frame.index.name or "Date"
        frame = frame.reset_index().rename(columns={index_name: "Date", "index": "Date", "Datetime": "Date"})
    if "Date" in frame.columns and pd.api.types.is_datetime64_any_dtype(frame["Date"]):
        dates = frame["Date"]
        if getattr(dates.dt, "tz", None) is not None:
            dates = dates.dt.tz_localize(None)
        frame["Date"] = dates.dt.normalize().astype("datetime64[ns]")
    if "Adj Close" in frame.columns:
        frame = _apply_adjustment(frame)
    keep = [c for c in COLUMNS if c in frame.columns]
    out = frame[keep].reset_index(drop=True)
    out.attrs = {ANOMALIES: frame.attrs.get(ANOMALIES, [])}
    return out


def _ticker_level(columns: pd.MultiIndex) -> int | None:
    for i, name in enumerate(columns.names):
        if name and str(name).lower() == "ticker":
            return i
    # Unnamed levels: the one that does not hold the OHLCV names is the ticker level.
    for i in range(columns.nlevels):
        values = {str(v) for v in columns.get_level_values(i)}
        if not values & set(COLUMNS[1:]):
            return i
    return None


FACTOR_JUMP = 0.10  # a step of the vendor's Adj Close / Close beyond 10 % needs explaining
FACTOR_EXPLAINED_SHARE = 0.5  # explained: the raw close fell by at least half the step (a distribution, a spin-off)
ANOMALIES = "adjustment_anomalies"  # the frame's attrs key: the vendor's unexplained factor jumps


def _apply_adjustment(frame: pd.DataFrame) -> pd.DataFrame:
    """Scale OHLC by the vendor's adjustment factor ``Adj Close / Close`` where it is consistent; otherwise (text in
    a column) leave it to validation.

    Yahoo back-adjusts for distributions: on an ex-date the factor steps up by about the distribution's share of the
    price and the raw close falls by about as much; splits are already in ``Close``. A factor jump beyond 10 % that
    the raw close does not follow (it does not fall by half the step) is the vendor's error (DHR 2016-07-05: 0.667
    -> 0.976 on a +3.6 % day): multiplying by it would publish a fake move (+52 %). Such a step is taken out of the
    factor (the rows before it scaled as the rows after), so the series stays on one consistent basis and the day
    moves as the market did; each one is listed in ``frame.attrs["adjustment_anomalies"]`` (the ingest records it in
    the audit log as ``adjustment_anomaly``). Every other step, dividends included, is applied as the vendor gives it.
    """
    numeric = all(pd.api.types.is_numeric_dtype(frame[c]) for c in ("Adj Close", "Close"))
    anomalies: list[dict] = []
    if numeric:
        factor = (frame["Adj Close"] / frame["Close"]).to_numpy(dtype="float64")
        close = frame["Close"].to_numpy(dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.log(factor[1:] / factor[:-1])
            move = np.log(close[1:] / close[:-1])
        jump = np.abs(step) > np.log(1 + FACTOR_JUMP)
        unexplained = np.flatnonzero(jump & ~((step > 0) & (move <= -FACTOR_EXPLAINED_SHARE * step)))
        if len(unexplained):
            taken = np.zeros(len(factor))
            taken[unexplained + 1] = step[unexplained]
            after = np.cumsum(taken[::-1])[::-1] - taken  # the unexplained steps strictly after each row
            factor = factor * np.exp(after)
            days = pd.to_datetime(frame["Date"], errors="coerce")
            for i in unexplained:
                anomalies.append({"day": str(days.iloc[i + 1].date()) if pd.notna(days.iloc[i + 1]) else "",
                                  "factor_before": round(float(factor[i] / np.exp(after[i])), 6),
                                  "factor_after": round(float(factor[i + 1] / np.exp(after[i + 1])), 6),
                                  "close_move_pct": round(100 * float(np.expm1(move[i])), 2),
                                  "move_avoided_pct": round(100 * float(np.expm1(move[i] + step[i])), 2)})
        for col in PRICE_COLUMNS:
            if col in frame.columns and pd.api.types.is_numeric_dtype(frame[col]):
                frame[col] = frame[col] * factor
    out = frame.drop(columns=["Adj Close"])
    out.attrs[ANOMALIES] = anomalies
    return out


def read_price_csv(path: Path) -> pd.DataFrame:
    """Read a yfinance-format CSV (``Date,Open,High,Low,Close[,Adj Close],Volume``; ``.csv.gz`` too)."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise SourceError(f"CSV source: no file at {path}") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise SourceError(f"CSV source: cannot parse {path}: {exc}") from exc
    if "Date" in frame.columns:
        parsed = pd.to_datetime(frame["Date"], errors="coerce")
        if parsed.notna().all():
            frame["Date"] = parsed
    return normalise_frame(frame)


def csv_for(location: Path, ticker: str) -> Path:
    """The CSV of ``ticker``: ``location`` itself when it is a file, else ``<location>/<TICKER>.csv[.gz]``."""
    location = Path(location)
    if not location.is_dir():
        return location
    for name in (f"{ticker}.csv", f"{ticker}.csv.gz"):
        if (location / name).is_file():
            return location / name
    available = sorted(p.name.split(".")[0] for p in location.glob("*.csv*"))
    raise SourceError(f"no CSV for {ticker} in {location} (expected {ticker}.csv or {ticker}.csv.gz; "
                      f"it has: {', '.join(available) or 'none'})")


@lru_cache(maxsize=64)
def _cached_csv(path: str, mtime_ns: int) -> pd.DataFrame:
    return read_price_csv(Path(path))


def read_series(path: Path) -> pd.DataFrame:
    """A CSV read once per process (and again only when the file changes); callers get a copy."""
    try:
        mtime = Path(path).stat().st_mtime_ns
    except FileNotFoundError as exc:
        raise SourceError(f"CSV source: no file at {path}") from exc
    return _cached_csv(str(path), mtime).copy()


def _since(frame: pd.DataFrame, start: date | str | None) -> pd.DataFrame:
    """Rows from ``start`` on (``STOCKOPS_HISTORY_START``: where a ticker's history begins, for every source)."""
    if start is None or "Date" not in frame.columns or not pd.api.types.is_datetime64_any_dtype(frame["Date"]):
        return frame
    return frame[frame["Date"] >= pd.Timestamp(start)].reset_index(drop=True)


def _until(frame: pd.DataFrame, day: date) -> pd.DataFrame:
    """Rows up to and including ``day`` (a frame whose dates do not parse is returned whole)."""
    if "Date" not in frame.columns or not pd.api.types.is_datetime64_any_dtype(frame["Date"]):
        return frame
    return frame[frame["Date"] <= pd.Timestamp(day)].reset_index(drop=True)


class CsvSource:
    """Any yfinance-format CSV (or a folder of ``<TICKER>.csv``), any ticker: rows up to the logical date."""

    name = "csv"

    def __init__(self, path: Path, start: date | str | None = None):
        self.path = Path(path)
        self.start = start

    def fetch(self, ticker: str, logical_date: date) -> FetchResult:
        logical_date = to_date(logical_date)
        path = csv_for(self.path, ticker)
        frame = _until(_since(read_price_csv(path), self.start), logical_date)
        log.info("CSV source: %d rows of %s from %s up to %s", len(frame), ticker, path, logical_date)
        return FetchResult(frame, self.name, ticker, logical_date, logical_date, note=str(path))


def shipped_series(ticker: str, folder: Path = SHIPPED_PRICES) -> pd.DataFrame:
    """A real daily series shipped with the project (``include/data/prices/<TICKER>.csv.gz``)."""
    path = folder / f"{ticker}.csv.gz"
    if not path.is_file():
        shipped = sorted(p.name.removesuffix(".csv.gz") for p in folder.glob("*.csv.gz"))
        raise SourceError(f"the replay ships no series for {ticker!r} (it has {', '.join(shipped)}): set "
                          f"STOCKOPS_CSV_PATH to a folder with {ticker}.csv, or STOCKOPS_SOURCE=yfinance")
    return read_series(path)


class ReplaySource:
    """Serve real series as if they arrived one NYSE session per run.

    On ``start`` the first ``initial_days`` rows are known; every NYSE session after it reveals
    one more row, so the logical date maps to a market day of the series (the replay clock), and
    a day the market is closed reveals nothing new. Days before ``start`` reveal fewer rows, which
    makes backfills behave. Once a series is exhausted, every later day serves it whole.
    """

    name = "replay"

    def __init__(self, start: date | str, initial_days: int,
                 series: Callable[[str], pd.DataFrame] = shipped_series,
                 label: str = "the real daily series shipped in include/data/prices"):
        self.start = to_date(start)
        self.initial_days = initial_days
        self._series = series
        self.label = label

    def rows_known(self, logical_date: date, total: int) -> int:
        """How many rows of a series have 'arrived' by ``logical_date``."""
        # NYSE sessions in (start, logical_date], or minus those in (logical_date, start] before
        # ``start``: on ``start`` itself exactly ``initial_days`` rows are known
        arrived = int(sessions_between(np.array([self.start]), np.array([to_date(logical_date)]))[0])
        return max(0, min(total, self.initial_days + arrived))

    def fetch(self, ticker: str, logical_date: date) -> FetchResult:
        logical_date = to_date(logical_date)
        series = self._series(ticker)
        n = self.rows_known(logical_date, len(series))
        frame = series.iloc[:n].reset_index(drop=True)
        if n == 0:
            market_day = logical_date
        else:
            market_day = to_date(frame["Date"].iloc[-1])
        exhausted = " (replay exhausted: the series has no newer day)" if n == len(series) else ""
        note = (f"REPLAY, not live data: {ticker} from {self.label}, served as if it arrived one NYSE session "
                f"per run; logical date {logical_date} -> market day {market_day} (row {n} of {len(series)}){exhausted}")
        log.warning(note)
        return FetchResult(frame, self.name, ticker, logical_date, market_day, note=note)


class YFinanceSource:
    """Live daily OHLCV from Yahoo via yfinance 1.x, auto-adjusted, up to the logical date."""

    name = "yfinance"

    def __init__(self, start: str = "2004-01-01", timeout_s: float = 20.0, attempts: int = 3,
                 backoff_s: float = 2.0, sleep: Callable[[float], None] = time.sleep):
        self.start = start
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._sleep = sleep

    def _download(self, tickers: str | list[str], end: date) -> pd.DataFrame | None:
        import yfinance as yf  # heavy; only where it is used

        return yf.download(tickers, start=self.start, end=end.isoformat(), interval="1d", auto_adjust=False,
                           progress=False, threads=False, timeout=self.timeout_s)

    def fetch_many(self, tickers: Sequence[str], logical_date: date) -> dict[str, FetchResult]:
        """The watchlist in one batched download (retried), split per ticker.

        Returns what the batch delivered; a ticker it did not deliver (no column, or no row with
        a value) is left out, for :meth:`fetch` to try on its own. Never raises for a bad batch:
        the per-ticker fetch is the fallback.
        """
        logical_date = to_date(logical_date)
        end = logical_date + timedelta(days=1)
        raw = None
        for attempt in range(1, self.attempts + 1):
            try:
                raw = self._download(list(tickers), end)
            except Exception as exc:  # yfinance raises many kinds; all mean "try again"
                log.warning("yfinance batch of %d tickers, attempt %d: %s: %s", len(tickers), attempt,
                            type(exc).__name__, exc)
            else:
                if raw is not None and not raw.empty:
                    break
                log.warning("yfinance batch of %d tickers, attempt %d: Yahoo answered no rows", len(tickers), attempt)
            raw = None
            if attempt < self.attempts:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
        if raw is None:
            return {}
        results: dict[str, FetchResult] = {}
        for ticker in tickers:
            frame = split_batch(raw, ticker)
            if frame is not None:
                results[ticker] = FetchResult(_until(frame, logical_date), self.name, ticker, logical_date,
                                              logical_date, note=f"batched download of {len(tickers)} tickers")
        missing = sorted(set(tickers) - set(results))
        log.info("yfinance batch: %d of %d tickers delivered%s", len(results), len(tickers),
                 f"; {', '.join(missing)} will be fetched one by one" if missing else "")
        return results

    def fetch(self, ticker: str, logical_date: date) -> FetchResult:
        logical_date = to_date(logical_date)
        end = logical_date + timedelta(days=1)  # yfinance's end is exclusive
        problems: list[str] = []
        for attempt in range(1, self.attempts + 1):
            try:
                raw = self._download(ticker, end)
            except Exception as exc:  # yfinance raises many kinds; all mean "try again"
                problems.append(f"attempt {attempt}: {type(exc).__name__}: {exc}")
            else:
                if raw is not None and not raw.empty:
                    frame = _until(normalise_frame(raw, ticker), logical_date)
                    log.info("yfinance: %d rows of %s up to %s (attempt %d)", len(frame), ticker, logical_date, attempt)
                    return FetchResult(frame, self.name, ticker, logical_date, logical_date)
                problems.append(f"attempt {attempt}: Yahoo answered no rows")
            if attempt < self.attempts:
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.warning("yfinance: %s; retrying in %.1f s", problems[-1], delay)
                self._sleep(delay)
        raise SourceError(
            f"yfinance: no daily prices for {ticker!r} from {self.start} to {logical_date} after "
            f"{self.attempts} attempts ({'; '.join(problems)}). Is the ticker right and Yahoo reachable?"
        )


def split_batch(raw: pd.DataFrame, ticker: str) -> pd.DataFrame | None:
    """One ticker's frame out of a multi-ticker download, or None when the batch did not deliver it.

    A batch aligns every ticker on the union of their dates; rows where this ticker has no value
    at all are that alignment, not data, and are dropped. Anything else is left for validation.
    """
    if isinstance(raw.columns, pd.MultiIndex):
        level = _ticker_level(raw.columns)
        if level is None or ticker not in raw.columns.get_level_values(level):
            return None
        frame = raw.xs(ticker, axis=1, level=level)
    else:
        frame = raw  # a one-ticker batch comes back flat
    values = [c for c in frame.columns if str(c) in COLUMNS[1:]]
    frame = frame.dropna(how="all", subset=values) if values else frame.iloc[:0]
    if frame.empty:
        return None
    return normalise_frame(frame, ticker)


def get_source(settings: Settings) -> PriceSource:
    """The source the settings ask for."""
    if settings.source == "yfinance":
        return YFinanceSource(settings.history_start, settings.fetch_timeout_s, settings.fetch_attempts,
                              settings.fetch_backoff_s)
    start = settings.history_start
    if settings.source == "csv":
        return CsvSource(settings.csv_path, start)  # type: ignore[arg-type]
    if settings.csv_path is not None:
        location = settings.csv_path
        return ReplaySource(settings.replay_start, settings.replay_initial_days,
                            series=lambda ticker: _since(read_series(csv_for(location, ticker)), start),
                            label=f"{location}")
    return ReplaySource(settings.replay_start, settings.replay_initial_days,
                        series=lambda ticker: _since(shipped_series(ticker, settings.shipped_prices_dir), start))
