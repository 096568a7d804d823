"""NYSE trading sessions (``exchange_calendars``' XNYS): gaps, staleness and the replay clock count
sessions, so a holiday is never a gap and an ingest on a closed day knows it.

The calendar is built once per process for the years asked (about 0.1 s a decade) and cached.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd

CALENDAR = "XNYS"


@lru_cache(maxsize=8)
def _calendar(first_year: int, last_year: int):
    import exchange_calendars  # ~0.5 s; only where sessions are counted

    return exchange_calendars.get_calendar(CALENDAR, start=f"{first_year}-01-01", end=f"{last_year}-12-31")


def _years(first: date, last: date) -> tuple[int, int]:
    # Whole decades, so nearby questions share one cached calendar; one year of margin each side.
    return (min(first.year, last.year) - 1) // 10 * 10, (max(first.year, last.year) + 1) // 10 * 10 + 9


def sessions(first: date, last: date) -> np.ndarray:
    """NYSE sessions from ``first`` to ``last`` (inclusive), as ``datetime64[D]``."""
    cal = _calendar(*_years(first, last))
    days = cal.sessions.to_numpy(dtype="datetime64[D]")
    return days[(days >= np.datetime64(first, "D")) & (days <= np.datetime64(last, "D"))]


def _covering(days: np.ndarray) -> np.ndarray:
    valid = days[~np.isnat(days)]
    if not len(valid):
        return np.array([], dtype="datetime64[D]")
    return sessions(pd.Timestamp(valid.min()).date(), pd.Timestamp(valid.max()).date())


def is_session(days: np.ndarray) -> np.ndarray:
    """Per day (``datetime64[D]``, NaT allowed): is it an NYSE trading session?"""
    days = np.asarray(days, dtype="datetime64[D]")
    return np.isin(days, _covering(days)) & ~np.isnat(days)


def sessions_between(after: np.ndarray, until: np.ndarray) -> np.ndarray:
    """Per pair: NYSE sessions in ``(after, until]``; negative when ``until`` is before ``after``, NaN for NaT."""
    after = np.asarray(after, dtype="datetime64[D]")
    until = np.asarray(until, dtype="datetime64[D]")
    known = np.concatenate([after.ravel(), until.ravel()])
    table = _covering(known)
    counts = (np.searchsorted(table, until, side="right") - np.searchsorted(table, after, side="right")).astype(float)
    counts[np.isnat(after) | np.isnat(until)] = np.nan
    return counts


def is_open(day: date) -> bool:
    return bool(is_session(np.array([day], dtype="datetime64[D]"))[0])


def closed_reason(day: date) -> str | None:
    """Why NYSE has no session on ``day`` ('Thanksgiving', 'a Saturday', ...), or None when it trades."""
    if is_open(day):
        return None
    if day.weekday() >= 5:
        return f"a {day.strftime('%A')}"
    cal = _calendar(*_years(day, day))
    names = cal.regular_holidays.holidays(pd.Timestamp(day), pd.Timestamp(day), return_name=True)
    if len(names):
        return f"an NYSE holiday ({names.iloc[0]})"
    return "an NYSE holiday (market closed)"

