"""The overview's data: one :class:`TickerRow` per watchlist ticker, gathered in one pass over cheap records.

* the forecast log, parsed once per change of the file for every ticker at once
  (:func:`~stockops.reporting.dashboard.forecast_log.forecast_table`);
* per ticker its snapshot pointer (``data/<T>/latest`` in the records' database), and of its snapshot only the dates and closes of the last
  :data:`CLOSE_DAYS` sessions (kept by snapshot hash: a published snapshot never changes), its ingest status;
* the latest monitor check's drift per ticker (``drift.per_ticker[t].drifted`` in its ``decision.json``);
* the champion's holdout forecasts (its evaluation), for tickers none of whose own forecasts is realized yet;
* the champion's online calibration state (:mod:`~stockops.reporting.dashboard.online`): each ticker's variance
  factor.

Every source is stamped (path, mtime, size, or the snapshot hash); the rows are computed again only when a stamp
changed, so a warm draw costs a ``stat`` per file.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stockops.charts.dashboard import FAN_DAYS
from stockops.contracts import IngestStatus
from stockops.core import audit
from stockops.core import pointers as named_values
from stockops.core.settings import Settings
from stockops.registry.holdouts import holdout_stamp
from stockops.reporting.dashboard.forecast_log import forecast_table, ticker_forecasts
from stockops.reporting.dashboard.online import online_view
from stockops.reporting.dashboard.panels import (
    TickerPanel,
    champion,
    file_stamp,
    holdout_forecasts,
    holdout_table,
    priced_panel,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from stockops.contracts import SnapshotEntry

log = logging.getLogger(__name__)

CLOSE_DAYS = 300  # sessions of closes kept per ticker: the sparkline's and the realized forecasts' days
STATUS_LABELS = {IngestStatus.PUBLISHED: "published", IngestStatus.QUARANTINED: "quarantined",
                 IngestStatus.HELD: "waiting for a person", IngestStatus.REJECTED: "quarantined (rejected by a person)",
                 IngestStatus.NEVER_INGESTED: "never ingested", IngestStatus.UNREADABLE: "status unreadable"}


@dataclass(frozen=True)
class TickerRow:
    """One ticker's line of the overview; None where the platform has nothing yet (the page shows a dash)."""

    ticker: str
    status: str  # an IngestStatus value
    status_detail: str  # the ingest's own words (held days, the failed expectations), with its day
    close_date: str | None  # the latest published session
    last_close: float | None
    forecast_for: str | None  # the newest forecast's day
    volatility: float | None  # its standard deviation of the day's log return (sqrt of the variance)
    low_90: float | None  # its 90 % interval, as prices
    high_90: float | None
    coverage_90: float | None  # share of realized closes inside their 90 % interval, over the window
    realized: int  # forecasts realized in the window (the last FAN_DAYS forecast days)
    source: str  # "live": the platform's own forecasts; "holdout": the champion's evaluation; "none"
    drifted: bool | None  # the latest monitor check's verdict on the ticker; None: not checked
    variance_factor: float | None = None  # the online calibration's factor on the model's variance; None: no state
    online_days: int = 0  # the realized days of its own the online calibration has seen (0: the market's factor only)
    closes: tuple[float, ...] = field(default=(), repr=False)  # the sparkline: closes of the last FAN_DAYS sessions
    lows: tuple[float, ...] = field(default=(), repr=False)  # the 90 % band per session (NaN: no forecast),
    highs: tuple[float, ...] = field(default=(), repr=False)  # one slot longer when the newest is for a later day

    @property
    def status_label(self) -> str:
        return STATUS_LABELS.get(IngestStatus(self.status), self.status)


# ---- the snapshots' closes, the ingest status, the monitor's drift ---------------------------------
_CLOSES: dict[str, tuple[str, Any, Any]] = {}  # ticker folder -> (its latest snapshot's hash, dates, closes)


def recent_closes(settings: Settings, ticker: str, entry: SnapshotEntry) -> tuple[np.ndarray, np.ndarray]:
    """The dates (ISO text) and closes of the snapshot's last :data:`CLOSE_DAYS` sessions.

    Read from the file's bytes checked against the sha256 its manifest entry recorded, two columns only; a file
    without that record (or that differs from it) is read whole and checked by content, as the store reads it."""
    import hashlib

    import numpy as np

    from stockops.data import store_for

    folder = str(settings.ticker_data_dir(ticker))
    cached = _CLOSES.get(folder)
    if cached is not None and cached[0] == entry.hash:
        return cached[1], cached[2]
    store = store_for(settings, ticker)
    data = store.snapshot_bytes(entry)
    if entry.file_sha256 and hashlib.sha256(data).hexdigest() == entry.file_sha256:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.ParquetFile(pa.BufferReader(data)).read(columns=["Date", "Close"])  # ~6 x faster than read_table
        table = table.slice(max(0, table.num_rows - CLOSE_DAYS))
        dates = table.column("Date").to_numpy()
        closes = table.column("Close").to_numpy().astype(np.float64)
    else:
        frame = store.load(entry).tail(CLOSE_DAYS)
        dates, closes = frame["Date"].to_numpy(), frame["Close"].to_numpy(np.float64)
    days = np.asarray(dates).astype("datetime64[D]").astype(str)
    _CLOSES[folder] = (entry.hash, days, closes)  # the previous snapshot's are dropped: one per ticker
    return days, closes


def _status(settings: Settings, ticker: str) -> tuple[str, str]:
    from stockops.data.store import CorruptState
    from stockops.ingest.status import read_status

    try:
        status = read_status(settings, ticker)
    except CorruptState as exc:
        return IngestStatus.UNREADABLE.value, str(exc)
    if status is None:
        return IngestStatus.NEVER_INGESTED.value, "no ingest has run for it yet"
    detail = f"{status.logical_date}: {status.detail}" if status.detail else status.logical_date
    return status.status.value, detail


def latest_drift(settings: Settings) -> tuple[dict[str, bool], dict | None]:
    """Per ticker whether the latest monitor check that assessed drift found it drifted, and that check's record
    (``checked_at``, ``decision_path``); empty before any such check. A one-series check names its ticker."""
    for entry in reversed(_monitor_entries(settings)):
        path = entry.get("decision_path")
        if entry.get("event") != "monitor" or not path:
            continue
        drift = _decision(settings, path).get("drift") or {}
        per_ticker = drift.get("per_ticker")
        if isinstance(per_ticker, dict) and per_ticker:
            flags = {entry.get("ticker") if name == "series" else name: bool(verdict.get("drifted"))
                     for name, verdict in per_ticker.items() if isinstance(verdict, dict)}
            return flags, entry
    return {}, None


_MONITOR: dict[str, tuple[tuple | None, list[dict]]] = {}
_DECISIONS: dict[str, tuple[tuple, dict]] = {}


def _monitor_entries(settings: Settings) -> list[dict]:
    """The monitor's decision log, read once per change of the file."""
    path = settings.monitor_log
    stamp = audit.stamp(path)
    cached = _MONITOR.get(str(path))
    if cached and cached[0] == stamp:
        return cached[1]
    entries = audit.read(path)
    _MONITOR[str(path)] = (stamp, entries)
    return entries


def _decision(settings: Settings, path: str) -> dict:
    from pathlib import Path

    stamp = file_stamp(Path(path))
    cached = _DECISIONS.get(path)
    if cached and cached[0] == stamp:
        return cached[1]
    _DECISIONS.clear()  # one check's decision kept (each names every ticker's drift)
    from stockops.monitoring.reports import read_report_file

    try:  # this host's home, or the blob store (a worker host's check)
        data = read_report_file(settings, path)
        decision = json.loads(data) if data is not None else {}
    except ValueError:  # being written: no verdicts from it
        decision = {}
    decision = decision if isinstance(decision, dict) else {}
    _DECISIONS[path] = (stamp, decision)
    return decision


# ---- the rows ------------------------------------------------------------------------------------
_ROWS: dict[str, tuple[tuple, list[TickerRow]]] = {}


def universe_rows(settings: Settings, now: datetime | None = None) -> list[TickerRow]:
    """Every watchlist ticker's row, in watchlist order; computed again only when one of its sources changed."""
    from stockops.ingest.status import status_path

    version = _champion_version(settings, now)
    pointers = {ticker: _pointer(settings, ticker) for ticker in settings.tickers}
    flags, check = latest_drift(settings)
    key = (settings.tickers, audit.stamp(settings.forecast_log), version,
           holdout_stamp(settings, version),
           check.get("decision_path") if check else None, tuple(e.hash if e else None for e in pointers.values()),
           named_values.stamps([status_path(settings, t) for t in settings.tickers]),
           named_values.stamp(settings.online_calibration_path))
    cached = _ROWS.get(str(settings.home))
    if cached and cached[0] == key:
        return cached[1]
    live = _by_ticker(forecast_table(settings), "variance")
    holdout = holdout_table(settings, version)
    holdouts = _by_ticker(_priced(holdout), None) if holdout is not None and len(holdout) else {}
    closes = _closes_of(settings, pointers)
    online = online_view(settings, version)
    rows = [_row(ticker, _status(settings, ticker), closes.get(ticker), live.get(ticker), holdouts.get(ticker),
                 flags.get(ticker), online.lineage(ticker)) for ticker in pointers]
    _ROWS[str(settings.home)] = (key, rows)
    return rows


def ticker_row(settings: Settings, ticker: str, now: datetime | None = None) -> TickerRow:
    """One ticker's row from the same records as :func:`universe_rows` (its page's headline), without the others'."""
    version = _champion_version(settings, now)
    forecasts = forecast_table(settings)
    live = _by_ticker(forecasts[forecasts["ticker"] == ticker], "variance")
    holdout = holdout_table(settings, version)
    holdouts = (_by_ticker(_priced(holdout[holdout["ticker"] == ticker]), None)
                if holdout is not None and len(holdout) else {})
    closes = _closes_of(settings, {ticker: _pointer(settings, ticker)})
    return _row(ticker, _status(settings, ticker), closes.get(ticker), live.get(ticker), holdouts.get(ticker),
                latest_drift(settings)[0].get(ticker), online_view(settings, version).lineage(ticker))


def _champion_version(settings: Settings, now: datetime | None) -> str | None:
    current = champion(settings, now or datetime.now(UTC))
    return current["version"] if current else None


def _pointer(settings: Settings, ticker: str) -> SnapshotEntry | None:
    from stockops.data import store_for

    try:
        return store_for(settings, ticker).latest()
    except ValueError:  # CorruptState: an unreadable pointer over an empty manifest; the status says so
        return None


def _closes_of(settings: Settings, pointers: dict[str, SnapshotEntry | None]) -> dict[str, tuple]:
    """:func:`recent_closes` of every ticker with a readable snapshot (~0.3 ms each)."""
    closes = {}
    for ticker, entry in pointers.items():
        if entry is None:
            continue
        try:
            closes[ticker] = recent_closes(settings, ticker, entry)
        except (OSError, ValueError) as exc:  # missing or corrupt: its page says how (the store's words)
            log.warning("dashboard: %s's latest snapshot is unreadable: %s", ticker, exc)
    return closes


def _priced(holdout: pd.DataFrame) -> pd.DataFrame:
    """The evaluation's holdout forecasts with their 90 % interval as prices."""
    import numpy as np

    close = holdout["last_close"].to_numpy(np.float64)
    return holdout[["ticker", "forecast_for"]].assign(q05=close * np.exp(holdout["q05"].to_numpy(np.float64)),
                                                      q95=close * np.exp(holdout["q95"].to_numpy(np.float64)))


def _by_ticker(table: pd.DataFrame, variance: str | None) -> dict[str, dict[str, np.ndarray]]:
    """Per ticker its forecasts' days (``<U10``), 90 % bounds and variances as arrays, oldest first: the rows'
    arithmetic is then numpy on a few dozen values, not pandas per ticker."""
    import numpy as np

    if not len(table):
        return {}
    ordered = table.sort_values(["ticker", "forecast_for"], kind="stable", ignore_index=True)
    days = ordered["forecast_for"].to_numpy().astype("U10")
    low, high = ordered["q05"].to_numpy(np.float64), ordered["q95"].to_numpy(np.float64)
    var = ordered[variance].to_numpy(np.float64) if variance else np.full(len(ordered), np.nan)
    return {str(ticker): {"days": days[at], "low": low[at], "high": high[at], "variance": var[at]}
            for ticker, at in ordered.groupby("ticker", sort=False).indices.items()}


def _row(ticker: str, status: tuple[str, str], closes: tuple | None, live: dict | None, holdout: dict | None,
         drifted: bool | None, online: dict | None = None) -> TickerRow:
    import numpy as np

    days, prices = closes if closes is not None else (np.array([], dtype="U10"), np.array([]))
    source, coverage, realized = "none", None, 0
    if live is not None:
        coverage, realized = _coverage(live, days, prices)
        source = "live"
    if not realized and holdout is not None:
        coverage, realized = _coverage(holdout, days, prices)
        source = "holdout"
    newest = None if live is None else {name: values[-1] for name, values in live.items()}
    return TickerRow(
        ticker=ticker, status=status[0], status_detail=status[1],
        close_date=str(days[-1]) if len(days) else None, last_close=float(prices[-1]) if len(prices) else None,
        forecast_for=None if newest is None else str(newest["days"]),
        volatility=None if newest is None or math.isnan(newest["variance"]) else math.sqrt(newest["variance"]),
        low_90=None if newest is None else float(newest["low"]), high_90=None if newest is None else float(newest["high"]),
        coverage_90=coverage, realized=realized, source=source, drifted=drifted,
        variance_factor=None if online is None else online["variance_factor"],
        online_days=0 if online is None else online["ticker_days"],
        **_spark(days[-FAN_DAYS:], prices[-FAN_DAYS:], live if source == "live" else None))


def _on(days: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``wanted`` is in the sorted ``days``, and whether it is there at all."""
    import numpy as np

    at = np.minimum(np.searchsorted(days, wanted), max(0, len(days) - 1))
    return at, (days[at] == wanted) if len(days) else np.zeros(len(wanted), dtype=bool)


def _coverage(forecasts: dict, days: np.ndarray, prices: np.ndarray) -> tuple[float | None, int]:
    """Share of the last :data:`FAN_DAYS` forecasts whose day's close is inside their 90 % interval, and how many
    of them are realized."""
    wanted = forecasts["days"][-FAN_DAYS:]
    at, realized = _on(days, wanted)
    if not realized.any():
        return None, 0
    close = prices[at][realized]
    inside = (close >= forecasts["low"][-FAN_DAYS:][realized]) & (close <= forecasts["high"][-FAN_DAYS:][realized])
    return float(inside.mean()), int(realized.sum())


def _spark(days: np.ndarray, prices: np.ndarray, forecasts: dict | None) -> dict[str, tuple[float, ...]]:
    """The sparkline's series: the closes, and the live forecasts' 90 % band on the same sessions (plus the newest
    forecast's day when it is after the last close)."""
    import numpy as np

    slots = days
    if forecasts is not None and len(forecasts["days"]) and (not len(days) or forecasts["days"][-1] > days[-1]):
        slots = np.append(days, forecasts["days"][-1])
    lows, highs = np.full(len(slots), np.nan), np.full(len(slots), np.nan)
    if forecasts is not None:
        at, there = _on(slots, forecasts["days"][-FAN_DAYS - 1:])
        lows[at[there]] = forecasts["low"][-FAN_DAYS - 1:][there]
        highs[at[there]] = forecasts["high"][-FAN_DAYS - 1:][there]
    return {"closes": tuple(prices.tolist()), "lows": tuple(lows.tolist()), "highs": tuple(highs.tolist())}


# ---- one ticker's charts ---------------------------------------------------------------------------
_PAGE_PANELS: dict[tuple[str, str], tuple[tuple, TickerPanel]] = {}  # (home, ticker) -> (sources' stamps, panel)


def ticker_page_panel(settings: Settings, ticker: str, now: datetime | None = None) -> TickerPanel:
    """``ticker``'s fan and coverage charts (:func:`~stockops.reporting.dashboard.panels.priced_panel`) from the
    shared :func:`forecast_table`, its latest snapshot and the champion's holdout forecasts; drawn again only when
    one of those changed."""
    from stockops.data import store_for

    version = _champion_version(settings, now)
    store = store_for(settings, ticker)
    entry = store.latest()
    key = (audit.stamp(settings.forecast_log), entry.hash if entry else None, version,
           holdout_stamp(settings, version))
    cached = _PAGE_PANELS.get((str(settings.home), ticker))
    if cached and cached[0] == key:
        return cached[1]
    try:
        frame = store.load(entry) if entry else None
    except (OSError, ValueError) as exc:  # CorruptState: the store says what is wrong and the way out
        return TickerPanel(ticker, 0, 0, None, None, None, None, None, f"its latest snapshot is unreadable: {exc}")
    panel = priced_panel(ticker, ticker_forecasts(settings, ticker), frame, holdout_forecasts(settings, version, ticker))
    _PAGE_PANELS[(str(settings.home), ticker)] = (key, panel)
    return panel
