"""Where each ticker of the watchlist stands: its latest ingest outcome (the pointer ``data/<T>/status`` of the
records' database, :mod:`stockops.core.pointers`; a :class:`TickerStatus`),
the watchlist's summary, and a day's outcome that ``stock_ingest``'s ``settled`` task waits on."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stockops.contracts import ContractError, IngestStatus, TickerStatus
from stockops.core.settings import Settings
from stockops.data import store_for

log = logging.getLogger(__name__)

# How a ticker's outcome is named (its status.json, the demo's and make run's summary).
PUBLISHED, QUARANTINED, HELD, REJECTED = (IngestStatus.PUBLISHED, IngestStatus.QUARANTINED, IngestStatus.HELD,
                                          IngestStatus.REJECTED)
UNREADABLE = IngestStatus.UNREADABLE  # the status file itself is corrupt (see read_status)


def status_path(settings: Settings, ticker: str) -> Path:
    return settings.ticker_data_dir(ticker) / "status.json"


def read_status(settings: Settings, ticker: str) -> TickerStatus | None:
    """The ticker's latest ingest outcome, None before its first ingest; :class:`CorruptState` if unreadable."""
    from stockops.core import pointers
    from stockops.data.store import CorruptState

    path = status_path(settings, ticker)
    way_out = (f"It only sums up the last ingest of {ticker}: delete it, or re-ingest {ticker} (stock_ingest with "
               f"tickers={ticker}), which writes it again")
    status = pointers.read(path, way_out)
    if status is None:
        return None
    try:
        return TickerStatus.from_xcom(status)
    except ContractError as exc:
        raise CorruptState(path, f"not an ingest status ({exc}): {str(status)[:200]}", way_out) from exc


def write_status(settings: Settings, ticker: str, logical_date: str, status: IngestStatus, detail: str, *,
                 hash: str | None = None, folder: str | None = None, days: list[str] | None = None) -> None:
    """The ticker's latest ingest outcome; an older day's run never overwrites a newer day's.

    An unreadable status is replaced (it only sums up the last ingest, and this is the newest one). Checked and
    written in one transaction: two runs of different days cannot both win.
    """
    from stockops.core import pointers

    record = TickerStatus(ticker=ticker, logical_date=logical_date, status=status, detail=detail,
                          at=datetime.now(UTC).isoformat(timespec="seconds"), hash=hash, folder=folder,
                          days=list(days or []))
    pointers.write_unless(status_path(settings, ticker), record.to_xcom(),
                          keep=lambda current: isinstance(current, dict)
                          and str(current.get("logical_date", "")) > logical_date)


def watchlist_status(settings: Settings) -> list[TickerStatus]:
    """Per watchlist ticker: its latest ingest outcome (``never ingested`` before the first run, ``unreadable``
    with the way out when its status file is corrupt: one bad file never hides the other tickers)."""
    from stockops.data.store import CorruptState

    rows = []
    for ticker in settings.tickers:
        try:
            rows.append(read_status(settings, ticker)
                        or TickerStatus(ticker=ticker, logical_date="", status=IngestStatus.NEVER_INGESTED))
        except CorruptState as exc:
            log.warning("%s", exc)
            rows.append(TickerStatus(ticker=ticker, logical_date="", status=UNREADABLE, detail=str(exc)))
    return rows


SETTLED = (PUBLISHED, QUARANTINED, HELD, REJECTED)  # outcomes that end a ticker's part of a day's ingest


def day_outcome(settings: Settings, day: str, tickers: list[str], since: str = "") -> dict[str, Any]:
    """Where each of ``tickers`` stands in ``day``'s ingest: ``settled`` (ticker -> its outcome: published,
    quarantined, held for a person, rejected; or superseded by a later day's), ``pending`` (not yet, or never:
    a fetch that failed for good leaves no outcome) and ``new``: the published ones whose snapshot was first
    published at ``since`` (ISO, the run's start) or later (a re-run of a day publishes the same snapshot again).
    What ``stock_ingest``'s ``settled`` task waits on before it tells training and the monitor that the day is
    ingested."""
    from stockops.data.store import CorruptState

    settled, pending, new = {}, [], []
    for ticker in tickers:
        try:
            status = read_status(settings, ticker)
        except CorruptState:
            status = None
        if status is not None and status.logical_date > day:
            settled[ticker] = f"superseded by {status.logical_date}"
        elif status is not None and status.logical_date == day and status.status in SETTLED:
            settled[ticker] = status.status.value
            if status.status is PUBLISHED and _first_published(settings, ticker, status.hash) >= since:
                new.append(ticker)
        else:
            pending.append(ticker)
    return {"day": day, "settled": settled, "pending": pending, "new": new}


def _first_published(settings: Settings, ticker: str, digest: str | None) -> str:
    """When snapshot ``digest`` of ``ticker`` was first published (its manifest entry), "" if it has none."""
    return next((e.published_at for e in store_for(settings, ticker).entries() if e.hash == digest), "")


def format_watchlist(rows: list[TickerStatus]) -> str:
    """A short summary: counts per outcome, then the tickers that need attention."""
    counts: dict[str, list[str]] = {}
    for row in rows:
        counts.setdefault(row.status.value, []).append(row.ticker)
    lines = [f"watchlist: {len(rows)} tickers — " + ", ".join(f"{len(t)} {s}" for s, t in sorted(counts.items()))]
    for status in (QUARANTINED, HELD, REJECTED, UNREADABLE):
        for row in rows:
            if row.status is status:
                lines.append(f"  {row.ticker:<6} {status.value:<11} {row.logical_date}  {row.detail[:150]}")
    return "\n".join(lines)
