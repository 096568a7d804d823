"""The Great Expectations gate on daily prices: run the committed checkpoint, report what it found.

The suite and the derived columns it judges are in :mod:`stockops.data.suite`; the GX project
(written, copied under the home, its stored results pruned) in :mod:`stockops.data.gxproject`.
:func:`validate_prices` returns a :class:`ValidationReport`: passed, held (an extreme move in the
newest session that a person must decide) or failed.

Validation is **incremental**: only the rows after the published snapshot are judged (with
the published history as context), as long as that history is unchanged. When the source
restated or re-adjusted history, every row is judged again and the restatement is described
(:mod:`stockops.data.scope`). :func:`validate_panel` judges many tickers in one run.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from stockops.core.settings import Settings
from stockops.data import datadocs
from stockops.data.gxproject import CHECKPOINT_NAME, _gx_context, prune_results
from stockops.data.scope import Scope, _date_text, judged_rows
from stockops.data.sources import COLUMNS
from stockops.data.suite import (
    AWAITING,
    EXTREME_VOLUME_COL,
    GAP_REVERSAL_COL,
    REVERSAL_COL,
    REVIEW_COL,
    TICKER_COL,
    VOLUME_MEDIAN_SESSIONS,
    _days,
    parameters_for,
    with_derived_columns,
)
from stockops.storage.files import file_lock

log = logging.getLogger(__name__)

STRUCTURAL = ("expect_table_row_count_to_be_between", "expect_column_to_exist",
              "expect_column_values_to_be_in_type_list")

# outcomes
PASSED, HELD, FAILED = "passed", "held", "failed"


class DataValidationError(ValueError):
    """Data failed the gate; the message names each failed expectation and the offending dates."""

    def __init__(self, message: str, report: ValidationReport):
        super().__init__(message)
        self.report = report


@dataclass
class Failure:
    expectation: str
    column: str | None
    description: str
    unexpected_count: int | None = None
    offending_dates: list[str] = field(default_factory=list)
    error: str | None = None
    severity: str = "critical"

    def line(self) -> str:
        where = f" [{self.column}]" if self.column else ""
        text = f"{self.expectation}{where}: {self.description}"
        if self.error:
            text += f" (could not be evaluated: {self.error})"
        if self.unexpected_count:
            text += f"; {self.unexpected_count} bad row(s)"
        if self.offending_dates:
            shown = ", ".join(self.offending_dates[:10])
            more = f" and {len(self.offending_dates) - 10} more" if len(self.offending_dates) > 10 else ""
            text += f"; dates: {shown}{more}"
        return text


@dataclass
class ValidationReport:
    status: str  # passed | held | failed
    evaluated: int
    failures: list[Failure]
    parameters: dict[str, Any]
    scope: Scope | None = None
    held: list[dict] = field(default_factory=list)  # the extreme moves a person must decide, with evidence
    result_path: str = ""
    data_docs_path: str = ""

    @property
    def success(self) -> bool:
        return self.status == PASSED

    @property
    def failed(self) -> bool:
        """Bad data: refused (a critical expectation failed)."""
        return self.status == FAILED

    @property
    def held_for_review(self) -> bool:
        """Only an extreme move that a person must judge stands in the way."""
        return self.status == HELD

    def summary(self) -> str:
        scope = f" ({self.scope.description})" if self.scope else ""
        if self.status == PASSED:
            return f"all {self.evaluated} expectations passed{scope}"
        if self.status == HELD:
            days = ", ".join(f"{h['day']} ({h['move_pct']:+.1f} %)" for h in self.held)
            return (f"held for an operator's decision{scope}: an extreme move in the newest session that "
                    f"its own range and volume back, and that no later session can confirm yet: {days}")
        lines = [f"{len(self.failures)} of {self.evaluated} expectations failed{scope}:"]
        lines += [f"  - {f.line()}" for f in self.failures]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {**asdict(self), "success": self.success}



# ---- running the suite ------------------------------------------------------------------------
CONTEXT_ROWS = VOLUME_MEDIAN_SESSIONS + 10  # published rows before the judged ones that their derived facts need


@dataclass(frozen=True)
class PanelItem:
    """One ticker's data for :func:`validate_panel`: ``frame`` up to ``reference_date``, its ``published`` snapshot
    (None: judge everything) and a person's ``decisions`` on its extreme days (see :func:`with_derived_columns`)."""

    ticker: str
    frame: pd.DataFrame
    reference_date: date
    published: pd.DataFrame | None = None
    decisions: dict[str, str] | None = None


def validate_prices(frame: pd.DataFrame, reference_date: date, settings: Settings, *,
                    published: pd.DataFrame | None = None, decisions: dict[str, str] | None = None,
                    run_name: str = "", ticker: str = "TICKER") -> ValidationReport:
    """One ticker's :func:`validate_panel`; never raises for bad data, returns the report."""
    item = PanelItem(ticker, frame, reference_date, published, decisions)
    return validate_panel([item], settings, run_name=run_name)[ticker]


def validate_panel(items: list[PanelItem], settings: Settings, *, run_name: str = "",
                   compare: dict[str, pd.DataFrame] | None = None) -> dict[str, ValidationReport]:
    """Judge many tickers in ONE run of the committed checkpoint; ticker -> its report.

    Each ticker's judged rows (:func:`judged_rows`: the new ones, with the published history as context) and their
    derived facts are stacked into one panel keyed by ``Ticker``; every failed expectation is traced back to the
    tickers of its offending rows, so one ticker's bad data fails that ticker only. A frame whose layout is wrong
    (a missing column, text for numbers, no rows) would spoil the panel's column types for everyone: it is judged
    in a run of its own. ``run_name`` names the result in Data Docs (``<TICKER>-<day>``). ``compare``: other
    tickers' frames (the market reference, when not among ``items``) whose rows the judged ones must not twin;
    they are not judged themselves.
    """
    parameters = parameters_for(settings)
    scopes: dict[str, Scope] = {}
    contexts, masks = [], []
    for item in items:
        judged, scopes[item.ticker] = judged_rows(item.frame, item.published)
        first = int(np.argmax(judged)) if judged.any() else len(judged)
        start = max(0, first - CONTEXT_ROWS)
        context = item.frame.iloc[start:].reset_index(drop=True)
        context.insert(0, TICKER_COL, item.ticker)
        contexts.append(context)
        masks.append(judged[start:])
    for ticker, frame in (compare or {}).items():
        if ticker not in scopes and _well_formed(frame):
            contexts.append(frame.iloc[-CONTEXT_ROWS:].reset_index(drop=True).assign(**{TICKER_COL: ticker}))
            masks.append(np.zeros(len(contexts[-1]), dtype=bool))
    views = _judged_views(items, contexts, masks, settings)
    whole = [item.ticker for item in items if _well_formed(item.frame)]
    runs = ([whole] if whole else []) + [[item.ticker] for item in items if item.ticker not in whole]
    reports: dict[str, ValidationReport] = {}
    for tickers in runs:
        panel = pd.concat([views[t] for t in tickers], ignore_index=True) if len(tickers) > 1 else views[tickers[0]]
        name = run_name if len(runs) == 1 else f"{run_name}-{tickers[0]}" if len(tickers) == 1 else run_name
        results = _run_checkpoint(panel, parameters, settings, name)
        failures = _failures_by_ticker(results, panel, tickers)
        for ticker in tickers:
            found, history_days = _history_to_decide(failures[ticker], scopes[ticker], views[ticker])
            # Structural problems first: they explain the failures that follow from them.
            found.sort(key=lambda f: (f.expectation not in STRUCTURAL, f.error is not None))
            status = FAILED if any(f.severity == "critical" for f in found) else HELD if found else PASSED
            frame = next(item.frame for item in items if item.ticker == ticker)
            reports[ticker] = ValidationReport(
                status=status, evaluated=len(results), failures=found, parameters=parameters, scope=scopes[ticker],
                held=held_moves(views[ticker], frame, history_days) if status == HELD else [],
                data_docs_path=str(settings.data_docs_dir / "index.html"))
    return reports


# An extreme move of history that the next session undid, on a day whose own range (else range_share fails) and
# heavy volume back it (NVDA 2000-03-13/14: +26 % then -26 %): real or not, no rule can tell. In a first snapshot
# or a restatement it goes to a person, once per ticker with every such day, instead of blocking the ticker; a
# reversal on usual volume (a bad print) stays refused.
UNDONE_MOVES = (REVERSAL_COL, GAP_REVERSAL_COL)
DECIDE_MIN_VOLUME_RATIO = 2.0


def _history_to_decide(found: list[Failure], scope: Scope, view: pd.DataFrame) -> tuple[list[Failure], list[str]]:
    """``found`` with the extreme moves of history that only a person can settle turned into one warning (held for
    a person), and those days; unchanged when anything else failed, or outside a first snapshot or restatement."""
    if scope.mode not in ("first", "restated"):
        return found, []
    moves = [f for f in found if f.column in UNDONE_MOVES and f.severity == "critical"]
    if not moves or any(f.severity == "critical" for f in found if f not in moves):
        return found, []
    days = sorted({day for f in moves for day in f.offending_dates})
    ratio = dict(zip(_days(view).astype(str), view[EXTREME_VOLUME_COL], strict=True))
    if not all(ratio.get(day, 0) >= DECIDE_MIN_VOLUME_RATIO for day in days):
        return found, []
    why = "; ".join(f"{f.column}: {', '.join(f.offending_dates[:5])}" for f in moves)
    held = Failure(expectation="expect_column_values_to_not_be_in_set", column=REVIEW_COL, severity="warning",
                   description=f"extreme moves in the history that no rule can settle ({why}): a person decides, "
                               "once for the ticker, every such day in one question",
                   unexpected_count=len(days), offending_dates=days)
    return [f for f in found if f not in moves] + [held], days


def _judged_views(items: list[PanelItem], contexts: list[pd.DataFrame], masks: list[np.ndarray],
                  settings: Settings) -> dict[str, pd.DataFrame]:
    """Ticker -> its judged rows with their derived facts: one vectorised pass over the well-formed tickers' panel
    (which also finds rows twinned across them), one per malformed frame (its own columns and types)."""
    whole = [i for i, item in enumerate(items) if _well_formed(item.frame)]
    compared = list(range(len(items), len(contexts)))  # comparison rows only: never judged
    groups = ([whole + compared] if whole else []) + [[i] for i in range(len(items)) if i not in whole]
    views: dict[str, pd.DataFrame] = {}
    for group in groups:
        panel = pd.concat([contexts[i] for i in group], ignore_index=True) if len(group) > 1 else contexts[group[0]]
        judged = [i for i in group if i < len(items)]
        decisions = {(items[i].ticker, day): what for i in judged for day, what in (items[i].decisions or {}).items()}
        reference = {str(contexts[i][TICKER_COL].iloc[0]): contexts[i]["Date"].iloc[-1].date()
                     for i in group if i >= len(items) and len(contexts[i])}
        reference |= {items[i].ticker: items[i].reference_date for i in judged}
        derived = with_derived_columns(panel, reference, settings, decisions)
        keep = np.concatenate([masks[i] for i in group])
        tickers = derived[TICKER_COL].to_numpy()
        for i in judged:
            views[items[i].ticker] = derived[keep & (tickers == items[i].ticker)].reset_index(drop=True)
    return views


def _well_formed(frame: pd.DataFrame) -> bool:
    """Whether ``frame`` can share a panel: every column present with the published types, at least one row."""
    return (len(frame) > 0 and all(c in frame.columns for c in COLUMNS)
            and pd.api.types.is_datetime64_any_dtype(frame["Date"])
            and all(pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
                    for c in COLUMNS[1:]))


def _run_checkpoint(panel: pd.DataFrame, parameters: dict[str, Any], settings: Settings, run_name: str) -> list:
    """The committed checkpoint's expectation results on ``panel`` (one GX run at a time per home)."""
    from great_expectations.core.run_identifier import RunIdentifier

    # The runtime project, its results and Data Docs are shared files.
    with file_lock(settings.gx_work_dir / ".lock"):
        context = _gx_context(settings.gx_project_dir, settings.gx_work_dir)
        checkpoint = context.checkpoints.get(CHECKPOINT_NAME)
        before = set(datadocs.gx_results_dir(settings).glob(datadocs.RESULT_GLOB)) if settings.blob_url else set()
        result = checkpoint.run(batch_parameters={"dataframe": panel}, expectation_parameters=parameters,
                                run_id=RunIdentifier(run_name=run_name or None))
        prune_results(settings, settings.gx_keep_results)
        if settings.blob_url:  # the api-server on another host shows it (stockops.data.datadocs)
            written = set(datadocs.gx_results_dir(settings).glob(datadocs.RESULT_GLOB)) - before
            datadocs.share_results(settings, sorted(written))
    (run_result,) = result.run_results.values()
    return list(run_result.results)


def _failures_by_ticker(results: list, panel: pd.DataFrame, tickers: list[str]) -> dict[str, list[Failure]]:
    """Each failed expectation as a :class:`Failure` of every ticker its offending rows belong to (all of the
    panel's tickers when it names no rows: a table-level expectation)."""
    out: dict[str, list[Failure]] = {t: [] for t in tickers}
    for res in results:
        if res.success:
            continue
        rows = _offending_rows(res, panel)
        if rows is None:
            for ticker in tickers:
                out[ticker].append(_failure(res, [], None))
            continue
        for ticker, dates in rows.items():
            out[ticker].append(_failure(res, dates, len(dates)))
    return out


def _offending_rows(res: Any, panel: pd.DataFrame) -> dict[str, list[str]] | None:
    """Ticker -> the dates of its rows that failed ``res``; None when the expectation names no rows."""
    detail = res.result or {}
    index_list = detail.get("unexpected_index_list")
    if not index_list:
        return None
    rows: dict[str, list[str]] = {}
    for item in index_list:
        if isinstance(item, dict) and TICKER_COL in item:
            ticker, day = str(item[TICKER_COL]), item.get("Date")
        elif isinstance(item, (int, np.integer)) and item in panel.index:
            ticker, day = str(panel.at[item, TICKER_COL]), panel.at[item, "Date"]
        else:
            return None
        rows.setdefault(ticker, []).append(_date_text(day) if day is not None and not isinstance(day, str) else
                                           day or "")
    return rows


def held_moves(view: pd.DataFrame, frame: pd.DataFrame, days: list[str] | None = None) -> list[dict]:
    """The evidence a person needs for each held day (the newest session's unconfirmed move, and ``days`` of
    history the rules could not settle): the move, the day's prices and volume."""
    closes = dict(zip(_days(frame).astype(str), pd.to_numeric(frame["Close"], errors="coerce"), strict=True))
    ordered = sorted(closes)
    held = []
    wanted = (view[REVIEW_COL] == AWAITING).to_numpy() | np.isin(_days(view).astype(str), list(days or []))
    for _, row in view[wanted].iterrows():
        day = _date_text(row["Date"])
        position = ordered.index(day)
        previous_close = float(closes[ordered[position - 1]]) if position else float("nan")
        held.append({
            "day": day, "previous_close": previous_close,
            "open": float(row["Open"]), "high": float(row["High"]), "low": float(row["Low"]),
            "close": float(row["Close"]), "volume": float(row["Volume"]),
            "move_pct": round(100 * (float(row["Close"]) / previous_close - 1), 2),
            "gap_pct": round(100 * (float(row["Open"]) / previous_close - 1), 2),
            "range_share": round(float(np.log(row["High"] / row["Low"])
                                       / abs(np.log(float(row["Close"]) / previous_close))), 3),
            "volume_ratio": None if pd.isna(row[EXTREME_VOLUME_COL]) else round(float(row[EXTREME_VOLUME_COL]), 2),
        })
    return held


def _failure(res: Any, dates: list[str], count: int | None) -> Failure:
    config = res.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column") or (f"{kwargs['column_A']} vs {kwargs['column_B']}" if "column_A" in kwargs else
                                      ", ".join(kwargs["column_list"]) if "column_list" in kwargs else None)
    error = None
    info = res.exception_info or {}
    if info.get("raised_exception"):
        error = str(info.get("exception_message") or "error").splitlines()[0][:200]
    severity = getattr(config, "severity", None)
    return Failure(expectation=config.type, column=column, description=config.description or config.type,
                   unexpected_count=count if count is not None else (res.result or {}).get("unexpected_count"),
                   offending_dates=[d for d in dates if d], error=error,
                   severity=str(getattr(severity, "value", severity or "critical")))
