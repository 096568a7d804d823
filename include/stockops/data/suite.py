"""The expectation suite on daily prices (GX Core 1.x), knowing real markets, and the frame it judges.

:func:`build_expectations` is the suite as data; :mod:`stockops.data.gxproject` writes it into the
committed GX project. Thresholds are suite parameters (``$PARAMETER``, :data:`PARAMETERS`) filled
from the settings on every run (:func:`parameters_for`), so they are configurable without editing the suite.

Checks that need neighbouring rows or a calendar are computed here as extra columns of the
frame GX sees (the data that gets published is the original frame):

- NYSE sessions (``exchange_calendars``): every row dated on a session, gaps and staleness
  counted in sessions, so a holiday is never a gap;
- a stale feed (a row repeating the previous whole row) and a volume units error (volume far
  above its median of the previous 50 sessions);
- **extreme moves** (close to close beyond ``max_abs_return``): real crashes and earnings days
  are accepted when the day's own range and volume back the move and the next session does
  not undo it. Feed errors (a decimal shift, a one-day spike, another symbol's prices) move
  the level without the range, or revert the next day. An extreme move in the newest session
  has no next session yet: it is *held* for a person (the one ``warning``-severity
  expectation), unless a person already decided that day.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from stockops.core.settings import Settings
from stockops.data.calendar import is_session, sessions_between
from stockops.data.sources import COLUMNS, PRICE_COLUMNS

SUITE_NAME = "stock_prices"

DATE_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"]
PRICE_TYPES = ["float64", "float32", "int64", "int32"]
VOLUME_TYPES = ["int64", "int32", "float64", "uint64"]

# The panel's key: one GX run judges many tickers' rows at once (see stockops.data.validation.validate_panel).
TICKER_COL = "Ticker"
# Derived columns (see module docstring).
DATE_ORDER_COL = "date_after_previous"
SESSION_COL = "is_nyse_session"
GAP_COL = "sessions_since_previous"
STALENESS_COL = "sessions_behind_reference"
MOVE_COL = "abs_close_return"
VOLUME_RATIO_COL = "volume_ratio"
REPEAT_COL = "repeated_rows"
RANGE_SHARE_COL = "extreme_range_share"
EXTREME_VOLUME_COL = "extreme_volume_ratio"
REVERSAL_COL = "extreme_reversal"
REVIEW_COL = "operator_review"
# values of REVIEW_COL
AWAITING = "awaiting_decision"
APPROVED = "approved"
REJECTED = "rejected"

VOLUME_MEDIAN_SESSIONS = 50  # the volume ratio's baseline: median of the previous 50 sessions
VOLUME_MEDIAN_MIN = 20  # fewer known sessions: no ratio (nothing to compare with)
PARAMETERS = ("max_gap_sessions", "max_staleness_sessions", "max_repeated_rows", "max_volume_ratio",
              "extreme_min_range_share", "extreme_min_volume_ratio", "max_reversal")


def parameters_for(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in PARAMETERS}


def _bound(expectation: str, severity: str = "critical", **kwargs: Any) -> dict:
    return {"type": expectation, "kwargs": kwargs, "severity": severity}


def build_expectations() -> list[dict]:
    """The suite, as (type, kwargs, severity); ``$PARAMETER`` values are filled at run time."""
    exps: list[dict] = [
        _bound("expect_table_row_count_to_be_between", min_value=1,
               description="the frame has at least one row"),
    ]
    for col in COLUMNS:
        exps.append(_bound("expect_column_to_exist", column=col, description=f"required column {col} exists"))
    exps.append(_bound("expect_column_values_to_be_in_type_list", column="Date", type_list=DATE_TYPES,
                       description="Date holds dates"))
    for col in PRICE_COLUMNS:
        exps.append(_bound("expect_column_values_to_be_in_type_list", column=col, type_list=PRICE_TYPES,
                           description=f"{col} is numeric"))
    exps.append(_bound("expect_column_values_to_be_in_type_list", column="Volume", type_list=VOLUME_TYPES,
                       description="Volume is numeric"))
    for col in COLUMNS:
        exps.append(_bound("expect_column_values_to_not_be_null", column=col, description=f"no missing {col}"))
    for col in PRICE_COLUMNS:
        exps.append(_bound("expect_column_values_to_be_between", column=col, min_value=0, strict_min=True,
                           description=f"{col} > 0"))
    exps.append(_bound("expect_column_values_to_be_between", column="Volume", min_value=0,
                       description="Volume >= 0"))
    for a, b, text in (("High", "Open", "High >= Open"), ("High", "Close", "High >= Close"),
                       ("Open", "Low", "Low <= Open"), ("Close", "Low", "Low <= Close"),
                       ("High", "Low", "High >= Low")):
        exps.append(_bound("expect_column_pair_values_a_to_be_greater_than_b", column_A=a, column_B=b,
                           or_equal=True, description=text))
    exps += [
        _bound("expect_compound_columns_to_be_unique", column_list=[TICKER_COL, "Date"],
               description="dates are unique (per ticker)"),
        _bound("expect_column_values_to_be_in_set", column=DATE_ORDER_COL, value_set=[True],
               description="dates strictly increase (each row after the previous one)"),
        _bound("expect_column_values_to_be_in_set", column=SESSION_COL, value_set=[True],
               description="every row is dated on an NYSE trading session (no weekend, no exchange holiday)"),
        _bound("expect_column_values_to_be_between", column=GAP_COL,
               max_value={"$PARAMETER": "max_gap_sessions"},
               description="no gap between rows longer than max_gap_sessions NYSE sessions"),
        _bound("expect_column_values_to_be_between", column=STALENESS_COL, min_value=0,
               max_value={"$PARAMETER": "max_staleness_sessions"},
               description="the newest row is at most max_staleness_sessions NYSE sessions older than the "
                           "reference date, and none is after it"),
        _bound("expect_column_values_to_be_between", column=REPEAT_COL,
               max_value={"$PARAMETER": "max_repeated_rows"},
               description="no row repeats the previous session's whole row (Open, High, Low, Close and Volume): "
                           "a stale feed"),
        _bound("expect_column_values_to_be_between", column=VOLUME_RATIO_COL,
               max_value={"$PARAMETER": "max_volume_ratio"},
               description="volume is at most max_volume_ratio x its median of the previous 50 sessions "
                           "(a units error)"),
        _bound("expect_column_values_to_be_between", column=RANGE_SHARE_COL,
               min_value={"$PARAMETER": "extreme_min_range_share"},
               description="an extreme close-to-close move (beyond max_abs_return) shows in the day's own range: "
                           "log(High/Low) spans at least extreme_min_range_share of it (a decimal shift, a "
                           "spike or another symbol's prices move the level, not the range)"),
        _bound("expect_column_values_to_be_between", column=EXTREME_VOLUME_COL,
               min_value={"$PARAMETER": "extreme_min_volume_ratio"},
               description="an extreme move trades on at least extreme_min_volume_ratio x the usual volume"),
        _bound("expect_column_values_to_be_between", column=REVERSAL_COL,
               max_value={"$PARAMETER": "max_reversal"},
               description="the next session does not undo an extreme move (more than max_reversal of it "
                           "reverting at once is a one-day spike)"),
        _bound("expect_column_values_to_not_be_in_set", column=REVIEW_COL, value_set=[REJECTED],
               description="no extreme move that an operator rejected"),
        _bound("expect_column_values_to_not_be_in_set", column=REVIEW_COL, value_set=[AWAITING], severity="warning",
               description="an extreme move in the newest session, which no later session can confirm yet, "
                           "has an operator's decision (warning: the ingest asks for one)"),
    ]
    return exps


# ---- derived columns -----------------------------------------------------------------------
def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index)
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def _run_lengths(flags: np.ndarray) -> np.ndarray:
    """For each position, how many consecutive True end there (0 where False)."""
    runs = np.zeros(len(flags))
    for i in np.flatnonzero(flags):
        runs[i] = (runs[i - 1] if i else 0) + 1
    return runs


def _days(frame: pd.DataFrame) -> np.ndarray:
    if "Date" not in frame.columns:
        return np.full(len(frame), np.datetime64("NaT"), dtype="datetime64[D]")
    return pd.to_datetime(frame["Date"], errors="coerce").to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")


def with_derived_columns(frame: pd.DataFrame, reference_date: date, settings: Settings,
                         decisions: dict[str, str] | None = None) -> pd.DataFrame:
    """The frame GX sees: the original columns plus the per-row facts the suite judges.

    ``decisions`` maps a day (ISO) to an operator's ``approved``/``rejected`` for this ticker; an
    approved day is accepted as real, a rejected one stays refused.
    """
    view = frame.copy()
    decisions = decisions or {}
    days = _days(view)
    previous = np.concatenate([[np.datetime64("NaT")], days[:-1]]).astype("datetime64[D]") if len(days) else days
    view[SESSION_COL] = is_session(days)
    view[GAP_COL] = sessions_between(previous, days)
    with np.errstate(invalid="ignore"):
        view[DATE_ORDER_COL] = np.concatenate([[True], days[1:] > days[:-1]]) if len(days) else np.array([], bool)
    # judged on the newest row only (the rows before it are older by construction)
    staleness = sessions_between(days, np.full(len(days), np.datetime64(reference_date, "D"))).astype("float64")
    staleness[:-1] = np.nan
    view[STALENESS_COL] = staleness

    opens, highs, lows, closes = (_numeric(view, c) for c in PRICE_COLUMNS)
    volume = _numeric(view, "Volume")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_return = np.log(closes / closes.shift(1))
        view[MOVE_COL] = (closes / closes.shift(1) - 1).abs()
        median = volume.shift(1).rolling(VOLUME_MEDIAN_SESSIONS, min_periods=VOLUME_MEDIAN_MIN).median()
        ratio = (volume / median).where(median > 0)
        view[VOLUME_RATIO_COL] = ratio
        values = view.reindex(columns=COLUMNS[1:])
        same = (values == values.shift(1)).all(axis=1).to_numpy() & values.notna().all(axis=1).to_numpy()
        view[REPEAT_COL] = _run_lengths(same)

        day_text = pd.Series([str(d) if not np.isnat(d) else "" for d in days], index=view.index)
        decided = day_text.map(decisions).fillna("")
        extreme = (view[MOVE_COL] > settings.max_abs_return).to_numpy()
        judged = extreme & (decided != APPROVED).to_numpy()
        has_next = np.arange(len(view)) < len(view) - 1
        view[RANGE_SHARE_COL] = (np.log(highs / lows) / log_return.abs()).where(judged)
        view[EXTREME_VOLUME_COL] = ratio.where(judged)
        view[REVERSAL_COL] = (-log_return.shift(-1) / log_return).where(judged & has_next)
    review = np.where(extreme & (decided == REJECTED).to_numpy(), REJECTED,
                      np.where(extreme & (decided == APPROVED).to_numpy(), APPROVED,
                               np.where(judged & ~has_next, AWAITING, "")))
    view[REVIEW_COL] = review
    return view
