"""The expectation suite on daily prices (GX Core 1.x), knowing real markets, and the frame it judges.

:func:`build_expectations` is the suite as data; :mod:`stockops.data.gxproject` writes it into the
committed GX project. Thresholds are suite parameters (``$PARAMETER``, :data:`PARAMETERS`) filled
from the settings on every run (:func:`parameters_for`), so they are configurable without editing the suite.

Checks that need neighbouring rows or a calendar are computed here as extra columns of the
frame GX sees, vectorised over a panel of many tickers (the data that gets published is the original frame):

- NYSE sessions (``exchange_calendars``): every row dated on a session, gaps and staleness
  counted in sessions, so a holiday is never a gap;
- a stale feed (a row repeating the previous whole row; a zero-volume row that keeps the close is a
  trading halt, counted apart and bounded) and a volume units error (volume far above its median of
  the previous 50 sessions with nothing behind it: a spike on a day whose range or price also moved
  is an event);
- **extreme moves** (close to close beyond ``max_abs_return``): real crashes and earnings days
  are accepted when the day's own range and volume back the move and the next session does
  not undo it; an overnight gap (opened on the news, on volume, with a usual range) is real though
  its day's range is small, once the next session keeps it. Feed errors (a decimal shift, a one-day
  spike, another symbol's prices) move the level without the range, or revert the next day;
- **another symbol's prices** under a ticker, at any level: a row equal to another ticker's row of the
  same day in the panel (volume and intraday shape). An extreme move in the newest session
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
UNEXPLAINED_VOLUME_COL = "unexplained_volume_ratio"
HALT_COL = "halted_sessions"
CLOSE_OUT_COL = "close_outside_range"
GAP_REVERSAL_COL = "gap_reversal"
TWIN_COL = "twin_rows"
# values of REVIEW_COL
AWAITING = "awaiting_decision"
APPROVED = "approved"
REJECTED = "rejected"

VOLUME_MEDIAN_SESSIONS = 50  # the volume ratio's baseline: median of the previous 50 sessions
VOLUME_MEDIAN_MIN = 20  # fewer known sessions: no ratio (nothing to compare with)
PARAMETERS = ("max_gap_sessions", "max_staleness_sessions", "max_repeated_rows", "max_volume_ratio",
              "max_event_volume_ratio", "max_halt_sessions", "extreme_min_range_share", "extreme_min_volume_ratio",
              "max_reversal", "max_gap_reversal")


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
    for a, b, text in (("High", "Open", "High >= Open"), ("Open", "Low", "Low <= Open"),
                       ("High", "Low", "High >= Low")):
        exps.append(_bound("expect_column_pair_values_a_to_be_greater_than_b", column_A=a, column_B=b,
                           or_equal=True, description=text))
    exps.append(_bound("expect_column_values_to_be_between", column=CLOSE_OUT_COL, max_value=0,
                       description="Close within [Low, High] (a close carried forward unchanged from the session "
                                   "before, no closing trade printed, is exempt)"))
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
               max_value={"$PARAMETER": "max_event_volume_ratio"},
               description="volume is at most max_event_volume_ratio x its median of the previous 50 sessions on "
                           "any day (a units error is 1,000 x)"),
        _bound("expect_column_values_to_be_between", column=UNEXPLAINED_VOLUME_COL,
               max_value={"$PARAMETER": "max_volume_ratio"},
               description="volume beyond max_volume_ratio x its median needs an event behind it: the day's range, "
                           "its move or the session before's volume (else a units error)"),
        _bound("expect_column_values_to_be_between", column=HALT_COL,
               max_value={"$PARAMETER": "max_halt_sessions"},
               description="a trading halt (zero volume, close unchanged) lasts at most max_halt_sessions sessions"),
        _bound("expect_column_values_to_be_between", column=TWIN_COL, max_value=0,
               description="no row equals another ticker's row of the same day (volume and intraday shape): "
                           "another symbol's prices"),
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
                           "reverting at once is a one-day spike, unless both sessions trade on heavy volume "
                           "and range: a whipsaw)"),
        _bound("expect_column_values_to_be_between", column=GAP_REVERSAL_COL,
               max_value={"$PARAMETER": "max_gap_reversal"},
               description="an overnight gap (an extreme move that opened on volume and a usual range, though its "
                           "day's range is small) is kept by the next session: at most max_gap_reversal undone"),
        _bound("expect_column_values_to_not_be_in_set", column=REVIEW_COL, value_set=[REJECTED],
               description="no extreme move that an operator rejected"),
        _bound("expect_column_values_to_not_be_in_set", column=REVIEW_COL, value_set=[AWAITING], severity="warning",
               description="an extreme move in the newest session, which no later session can confirm yet, "
                           "has an operator's decision (warning: the ingest asks for one)"),
    ]
    return exps


# ---- derived columns -----------------------------------------------------------------------
# Evidence thresholds the derived columns apply (the bounds GX checks are settings: PARAMETERS). Chosen on the 421
# real series of the universe (bench/universe_rules.py): each sits clear of every real value.
EVENT_MIN_RANGE_RATIO = 1.5  # a volume spike is an event when the day's range is >= 1.5 x its 50-session median,
EVENT_MIN_MOVE_SIGMAS = 3.0  # ... or its move >= 3 robust sigmas of the previous 50 sessions,
EVENT_MIN_PRIOR_VOLUME_RATIO = 2.0  # ... or the session before already traded >= 2 x its median
GAP_MIN_OPEN_SHARE = 0.5  # an overnight gap: the open carries >= half the move,
GAP_MIN_VOLUME_RATIO = 2.0  # ... on >= 2 x the usual volume,
GAP_MIN_RANGE_RATIO = 1.0  # ... with at least the usual intraday range,
GAP_MAX_FACTOR = 4.0  # ... and a level change within a factor 4
WHIPSAW_MIN_VOLUME_RATIO = 2.0  # a reverted extreme move is a whipsaw when both sessions trade >= 2 x the usual
WHIPSAW_MIN_RANGE_SHARE = 0.5  # ... and the reverting session's range spans >= half its own move
CARRIED_CLOSE_TOLERANCE = 1e-5  # |log(Close / previous Close)| below this: the close was carried forward
TWIN_TOLERANCE = 1e-5  # log(O/C), log(H/C), log(L/C) this close (and the same volume): another ticker's row


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index)
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def _days(frame: pd.DataFrame) -> np.ndarray:
    if "Date" not in frame.columns:
        return np.full(len(frame), np.datetime64("NaT"), dtype="datetime64[D]")
    return pd.to_datetime(frame["Date"], errors="coerce").to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")


def _run_lengths(flags: np.ndarray, with_prev: np.ndarray) -> np.ndarray:
    """For each row, how many consecutive True end there within its ticker (0 where False); no loop."""
    flags = np.asarray(flags, dtype=bool)
    total = np.cumsum(flags)
    if not len(flags):
        return total.astype("float64")
    base = np.maximum.accumulate(np.where(~flags | ~with_prev, total - flags, 0))
    return (total - base).astype("float64")


def _prior_medians(values: np.ndarray, with_prev: np.ndarray) -> np.ndarray:
    """Per column, the median of the previous 50 rows of the same ticker (at least 20 known): one rolling median over
    the panel with 50 empty rows between tickers, so no window reaches into the ticker before."""
    codes = np.cumsum(~with_prev) - 1
    slots = np.arange(len(values)) + VOLUME_MEDIAN_SESSIONS * codes
    size = len(values) + VOLUME_MEDIAN_SESSIONS * (int(codes[-1]) + 1 if len(codes) else 0)
    padded = np.full((size, values.shape[1]), np.nan)
    padded[slots] = values
    rolled = pd.DataFrame(padded).shift(1).rolling(VOLUME_MEDIAN_SESSIONS, min_periods=VOLUME_MEDIAN_MIN).median()
    return rolled.to_numpy()[slots]


def with_derived_columns(frame: pd.DataFrame, reference_date: date | dict[str, date], settings: Settings,
                         decisions: dict[str, str] | dict[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """The frame GX sees: the original columns plus the per-row facts the suite judges, for one ticker's frame or
    a panel of many (a ``Ticker`` column, each ticker's rows together and in order). Vectorised over the panel:
    "the previous row" is the previous row of the same ticker; no per-ticker or per-row Python.

    ``reference_date``: the day the data should be current to (per ticker: a dict). ``decisions``: a person's
    ``approved``/``rejected`` per day (ISO) of a one-ticker frame, or per (ticker, day) of a panel; an approved day
    is accepted as real, a rejected one stays refused.
    """
    view = frame.copy()
    one = TICKER_COL not in view.columns
    tickers = np.full(len(view), "", dtype=object) if one else view[TICKER_COL].astype(str).to_numpy()
    n = len(view)
    with_prev: np.ndarray = np.zeros(n, dtype=bool)
    with_prev[1:] = tickers[1:] == tickers[:-1]
    with_next: np.ndarray = np.zeros(n, dtype=bool)
    with_next[:-1] = with_prev[1:]

    def back(values: np.ndarray, fill: Any = np.nan) -> np.ndarray:
        out = np.empty_like(values)
        if n:
            out[1:], out[0] = values[:-1], fill
        out[~with_prev] = fill
        return out

    def ahead(values: np.ndarray, fill: Any = np.nan) -> np.ndarray:
        out = np.empty_like(values)
        if n:
            out[:-1], out[-1] = values[1:], fill
        out[~with_next] = fill
        return out

    days = _days(view)
    previous = back(days, np.datetime64("NaT"))
    if isinstance(reference_date, dict):
        reference = np.array([np.datetime64(reference_date[t], "D") for t in tickers], dtype="datetime64[D]")
    else:
        reference = np.full(n, np.datetime64(reference_date, "D"))
    view[SESSION_COL] = is_session(days)
    view[GAP_COL] = sessions_between(previous, days)
    with np.errstate(invalid="ignore"):
        view[DATE_ORDER_COL] = ~with_prev | (days > previous)
    staleness: np.ndarray = sessions_between(days, reference).astype("float64")
    staleness[with_next] = np.nan  # judged on each ticker's newest row (the rows before it are older by construction)
    view[STALENESS_COL] = staleness

    opens, highs, lows, closes = (_numeric(view, c).to_numpy() for c in PRICE_COLUMNS)
    volume = _numeric(view, "Volume").to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        previous_close = back(closes)
        log_return = np.log(closes / previous_close)
        gap = np.log(opens / previous_close)
        day_range = np.log(highs / lows)
        view[MOVE_COL] = np.abs(closes / previous_close - 1)
        medians = _prior_medians(np.column_stack([volume, day_range, np.abs(log_return)]), with_prev)
        ratio = np.where(medians[:, 0] > 0, volume / medians[:, 0], np.nan)
        range_ratio = np.where(medians[:, 1] > 0, day_range / medians[:, 1], np.nan)
        sigma = 1.4826 * medians[:, 2]
        view[VOLUME_RATIO_COL] = ratio
        # a volume spike on a day whose range or price also moved (or right after one) is an event, not a units error
        event = ((range_ratio >= EVENT_MIN_RANGE_RATIO) | (np.abs(log_return) >= EVENT_MIN_MOVE_SIGMAS * sigma)
                 | (back(ratio) >= EVENT_MIN_PRIOR_VOLUME_RATIO))
        view[UNEXPLAINED_VOLUME_COL] = np.where(event, np.nan, ratio)
        # a zero-volume session that keeps the close is a halt (annotated, bounded), not a stale feed
        carried = np.abs(log_return) <= CARRIED_CLOSE_TOLERANCE
        values = np.column_stack([opens, highs, lows, closes, volume])
        known = ~np.isnan(values).any(axis=1)
        same: np.ndarray = np.zeros(n, dtype=bool)
        same[1:] = (values[1:] == values[:-1]).all(axis=1) & known[1:]
        halted = (volume == 0) & carried
        view[REPEAT_COL] = _run_lengths(same & with_prev & ~halted, with_prev)
        view[HALT_COL] = _run_lengths(halted, with_prev)
        # Close inside [Low, High], unless carried forward unchanged (no closing trade printed)
        outside = np.maximum(0.0, np.maximum(np.log(lows / closes), np.log(closes / highs)))
        view[CLOSE_OUT_COL] = np.where(carried, 0.0, outside)

        decided = _decided(decisions, tickers, days, one)
        extreme = view[MOVE_COL].to_numpy() > settings.max_abs_return
        judged = extreme & (decided != APPROVED)
        next_return = ahead(log_return)
        reversal = -next_return / log_return
        share = day_range / np.abs(log_return)
        gap_share = gap / log_return
        # an overnight gap (opened on the news, on volume and a usual range) is real though its day's range is small;
        # it is judged by the session after it instead
        overnight = (judged & (share < settings.extreme_min_range_share) & (gap_share >= GAP_MIN_OPEN_SHARE)
                     & (ratio >= GAP_MIN_VOLUME_RATIO) & (range_ratio >= GAP_MIN_RANGE_RATIO)
                     & (np.abs(log_return) <= np.log(GAP_MAX_FACTOR)))
        view[GAP_REVERSAL_COL] = np.where(overnight & with_next, reversal, np.nan)
        view[RANGE_SHARE_COL] = np.where(judged & ~overnight, share, np.nan)
        view[EXTREME_VOLUME_COL] = np.where(judged, ratio, np.nan)
        whipsaw = ((ratio >= WHIPSAW_MIN_VOLUME_RATIO) & (ahead(ratio) >= WHIPSAW_MIN_VOLUME_RATIO)
                   & (ahead(day_range) / np.abs(next_return) >= WHIPSAW_MIN_RANGE_SHARE))
        view[REVERSAL_COL] = np.where(judged & with_next & ~whipsaw, reversal, np.nan)
    view[REVIEW_COL] = np.where(extreme & (decided == REJECTED), REJECTED,
                                np.where(extreme & (decided == APPROVED), APPROVED,
                                         np.where(judged & ~with_next, AWAITING, "")))
    with np.errstate(divide="ignore", invalid="ignore"):  # a halt's zero volume: an infinite break, as it should
        breaks = np.abs(log_return) + np.abs(np.log(ratio))
    view[TWIN_COL] = np.zeros(n) if one else twin_rows(view, breaks)
    return view


def _decided(decisions: dict | None, tickers: np.ndarray, days: np.ndarray, one: bool) -> np.ndarray:
    """Per row: a person's decision on its day (``""`` when none)."""
    if not decisions:
        return np.full(len(days), "", dtype=object)
    text = np.datetime_as_string(days, unit="D").astype(object)  # "NaT" matches no decision
    if one:
        return pd.Series(text).map(decisions).fillna("").to_numpy()
    keys = pd.Series(tickers + "|" + text)
    return keys.map({f"{t}|{d}": v for (t, d), v in decisions.items()}).fillna("").to_numpy()


def twin_rows(panel: pd.DataFrame, breaks: np.ndarray) -> np.ndarray:
    """Per row: how many OTHER tickers of the panel have, on the same day, the same volume (> 0) and the same intraday
    shape log(O/C), log(H/C), log(L/C): another symbol's prices under this ticker, whatever their level. No two of
    the 421 real series share one (the nearest real pair differs by 1.5e-4).

    Of two twinned tickers only the impostor is counted: the one whose FIRST twinned row broke more with its own
    history (``breaks``: |log return| + |log volume ratio| of each row: the genuine ticker's row continues its own
    prices and volume, the impostor's jumps to another symbol's). Their later rows move alike and tell nothing; a
    first row that broke alike counts for both.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        close = _numeric(panel, "Close").to_numpy()
        shape = pd.DataFrame({"row": np.arange(len(panel)), "ticker": panel[TICKER_COL].to_numpy(),
                              "break": np.nan_to_num(breaks, nan=np.inf),
                              "day": _days(panel), "volume": _numeric(panel, "Volume").to_numpy(),
                              **{c: np.log(_numeric(panel, c).to_numpy() / close) for c in ("Open", "High", "Low")}})
    shape = shape[shape["volume"] > 0]
    pairs = shape.merge(shape, on=["day", "volume"], suffixes=("", "_other"))
    pairs = pairs[pairs["ticker"] != pairs["ticker_other"]]
    near: np.ndarray = np.ones(len(pairs), dtype=bool)
    for column in ("Open", "High", "Low"):
        near &= np.abs(pairs[column].to_numpy() - pairs[column + "_other"].to_numpy()) <= TWIN_TOLERANCE
    twins = pairs[near]
    counts = np.zeros(len(panel))
    if len(twins):
        first = twins.sort_values("day", kind="stable").groupby(["ticker", "ticker_other"], sort=False).first()
        guilty = first.index[(first["break"] >= first["break_other"] - 1e-12).to_numpy()]
        keys = pd.MultiIndex.from_arrays([twins["ticker"], twins["ticker_other"]])
        np.add.at(counts, twins["row"].to_numpy()[keys.isin(guilty)], 1)
    return counts
