"""The Great Expectations gate on daily prices: run the committed checkpoint, report what it found.

The suite and the derived columns it judges are in :mod:`stockops.data.suite`; the GX project
(written, copied under the home, its stored results pruned) in :mod:`stockops.data.gxproject`.
:func:`validate_prices` returns a :class:`ValidationReport`: passed, held (an extreme move in the
newest session that a person must decide) or failed.

Validation is **incremental**: only the rows after the published snapshot are judged (with
the published history as context), as long as that history is unchanged. When the source
restated or re-adjusted history, every row is judged again and the restatement is described.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from stockops.core.settings import Settings
from stockops.data.gxproject import CHECKPOINT_NAME, _gx_context, prune_results
from stockops.data.sources import COLUMNS
from stockops.data.store import file_lock
from stockops.data.suite import (
    AWAITING,
    EXTREME_VOLUME_COL,
    RANGE_SHARE_COL,
    REVIEW_COL,
    _days,
    parameters_for,
    with_derived_columns,
)

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


@dataclass(frozen=True)
class Scope:
    """Which rows were judged, and why: ``first`` (no snapshot yet), ``incremental`` (the rows after
    the published snapshot), ``unchanged`` (no new row: the newest is re-checked) or ``restated``."""

    mode: str
    judged: int
    description: str
    restatement: dict | None = None


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



# ---- which rows are judged ---------------------------------------------------------------------
def _same_values(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if len(a) != len(b) or list(a.columns) != list(b.columns):
        return False
    for column in a.columns:
        left, right = a[column].to_numpy(), b[column].to_numpy()
        if column == "Date":
            if not np.array_equal(left.astype("datetime64[ns]"), right.astype("datetime64[ns]")):
                return False
        elif not np.array_equal(left.astype("float64"), right.astype("float64"), equal_nan=True):
            return False
    return True


def judged_rows(frame: pd.DataFrame, published: pd.DataFrame | None) -> tuple[np.ndarray, Scope]:
    """The rows to judge against the published snapshot, and the scope that says why."""
    n = len(frame)
    everything: np.ndarray = np.ones(n, dtype=bool)
    if published is None or not len(published):
        return everything, Scope("first", n, f"first snapshot: all {n} rows judged")
    if "Date" not in frame.columns or not pd.api.types.is_datetime64_any_dtype(frame["Date"]) or not all(
            pd.api.types.is_numeric_dtype(frame[c]) for c in COLUMNS[1:] if c in frame.columns):
        return everything, Scope("restated", n, f"the data does not have the published layout: all {n} rows "
                                                "judged", {"reason": "columns or types differ from the snapshot"})
    last = published["Date"].iloc[-1]
    history = frame[frame["Date"] <= last].reset_index(drop=True)
    # A backfill of an older day serves a prefix of the snapshot: compare with the same days only.
    known = published[published["Date"] <= frame["Date"].max()].reset_index(drop=True) if n else published
    try:
        unchanged = _same_values(history.reindex(columns=list(published.columns)), known)
    except (TypeError, ValueError):
        unchanged = False
    if not unchanged:
        restatement = describe_restatement(frame, published)
        return everything, Scope("restated", n, f"history differs from the published snapshot ({restatement['summary']}): "
                                                f"all {n} rows judged", restatement)
    new = (frame["Date"] > last).to_numpy()
    if new.any():
        return new, Scope("incremental", int(new.sum()),
                          f"{int(new.sum())} new row(s) after {_date_text(last)}, against the published history")
    newest: np.ndarray = np.zeros(n, dtype=bool)
    newest[-1:] = True
    return newest, Scope("unchanged", int(newest.sum()),
                         f"no row after the published {_date_text(last)}: the newest row is re-checked")


def describe_restatement(frame: pd.DataFrame, published: pd.DataFrame) -> dict:
    """What changed in history: rows added, removed and revised, and how much the closes moved."""
    span_end = min(frame["Date"].max(), published["Date"].iloc[-1])
    old = published[published["Date"] <= span_end].set_index("Date")
    new = frame[frame["Date"] <= span_end].drop_duplicates("Date").set_index("Date")
    common = old.index.intersection(new.index)
    columns = [c for c in COLUMNS[1:] if c in old.columns and c in new.columns]
    a = old.loc[common, columns].astype("float64")
    b = new.loc[common, columns].astype("float64")
    changed = ~np.isclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=0, equal_nan=True).all(axis=1)
    revised = common[changed]
    ratio = (b.loc[revised, "Close"] / a.loc[revised, "Close"]) if len(revised) else pd.Series(dtype=float)
    info = {
        "rows_revised": int(changed.sum()),
        "rows_added": int(len(new.index.difference(old.index))),
        "rows_removed": int(len(old.index.difference(new.index))),
        "first_revised": _date_text(revised.min()) if len(revised) else None,
        "last_revised": _date_text(revised.max()) if len(revised) else None,
        "close_ratio_min": round(float(ratio.min()), 6) if len(ratio) else None,
        "close_ratio_max": round(float(ratio.max()), 6) if len(ratio) else None,
    }
    parts = [f"{info['rows_revised']} revised" + (f" ({info['first_revised']}..{info['last_revised']}, closes x"
                                                   f"{info['close_ratio_min']}..{info['close_ratio_max']})"
                                                   if info["rows_revised"] else ""),
             f"{info['rows_added']} added", f"{info['rows_removed']} removed"]
    info["summary"] = "rows: " + ", ".join(parts)
    return info



# ---- running the suite ------------------------------------------------------------------------
def validate_prices(frame: pd.DataFrame, reference_date: date, settings: Settings, *,
                    published: pd.DataFrame | None = None, decisions: dict[str, str] | None = None,
                    run_name: str = "") -> ValidationReport:
    """Run the committed checkpoint on the rows to judge; never raises for bad data, returns the report.

    ``published`` is the ticker's latest snapshot (None: judge everything); ``decisions`` the
    operator's decisions on extreme days (see :func:`with_derived_columns`); ``run_name`` names
    the result in Data Docs (``<TICKER>-<logical date>``).
    """
    from great_expectations.core.run_identifier import RunIdentifier

    parameters = parameters_for(settings)
    derived = with_derived_columns(frame, reference_date, settings, decisions)
    judged, scope = judged_rows(frame, published)
    view = derived[judged].reset_index(drop=True)
    # One GX run at a time per home: the runtime project, its results and Data Docs are shared files.
    with file_lock(settings.gx_work_dir / ".lock"):
        context = _gx_context(settings.gx_project_dir, settings.gx_work_dir)
        checkpoint = context.checkpoints.get(CHECKPOINT_NAME)
        result = checkpoint.run(batch_parameters={"dataframe": view}, expectation_parameters=parameters,
                                run_id=RunIdentifier(run_name=run_name or None))
        prune_results(settings, settings.gx_keep_results)
    (run_result,) = result.run_results.values()
    failures = [_failure(res, view) for res in run_result.results if not res.success]
    evaluated = len(run_result.results)
    # Structural problems first: they explain the failures that follow from them.
    failures.sort(key=lambda f: (f.expectation not in STRUCTURAL, f.error is not None))
    critical = [f for f in failures if f.severity == "critical"]
    status = FAILED if critical else HELD if failures else PASSED
    held = held_moves(view, frame) if status == HELD else []
    return ValidationReport(status=status, evaluated=evaluated, failures=failures, parameters=parameters,
                            scope=scope, held=held, data_docs_path=str(settings.data_docs_dir / "index.html"))


def held_moves(view: pd.DataFrame, frame: pd.DataFrame) -> list[dict]:
    """The evidence a person needs for each held day: the move, the day's prices and volume."""
    closes = dict(zip(_days(frame).astype(str), pd.to_numeric(frame["Close"], errors="coerce"), strict=True))
    ordered = sorted(closes)
    held = []
    for _, row in view[view[REVIEW_COL] == AWAITING].iterrows():
        day = _date_text(row["Date"])
        position = ordered.index(day)
        previous_close = float(closes[ordered[position - 1]]) if position else float("nan")
        held.append({
            "day": day, "previous_close": previous_close,
            "open": float(row["Open"]), "high": float(row["High"]), "low": float(row["Low"]),
            "close": float(row["Close"]), "volume": float(row["Volume"]),
            "move_pct": round(100 * (float(row["Close"]) / previous_close - 1), 2),
            "gap_pct": round(100 * (float(row["Open"]) / previous_close - 1), 2),
            "range_share": round(float(row[RANGE_SHARE_COL]), 3),
            "volume_ratio": None if pd.isna(row[EXTREME_VOLUME_COL]) else round(float(row[EXTREME_VOLUME_COL]), 2),
        })
    return held


def _failure(res: Any, view: pd.DataFrame) -> Failure:
    config = res.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column") or (f"{kwargs['column_A']} vs {kwargs['column_B']}" if "column_A" in kwargs else None)
    detail = res.result or {}
    error = None
    info = res.exception_info or {}
    if info.get("raised_exception"):
        error = str(info.get("exception_message") or "error").splitlines()[0][:200]
    dates: list[str] = []
    index_list = detail.get("unexpected_index_list") or []
    if index_list and "Date" in view.columns:
        for item in index_list:
            idx = item.get("Date") if isinstance(item, dict) else item
            if isinstance(item, dict) and idx is not None:
                dates.append(str(pd.Timestamp(idx).date()) if not isinstance(idx, str) else idx)
            elif isinstance(idx, (int, np.integer)) and idx in view.index:
                dates.append(_date_text(view.loc[idx, "Date"]))
    elif config.type == "expect_column_min_to_be_between" and "Date" in view.columns and len(view):
        dates.append(_date_text(view["Date"].iloc[-1]))
    severity = getattr(config, "severity", None)
    return Failure(expectation=config.type, column=column, description=config.description or config.type,
                   unexpected_count=detail.get("unexpected_count"), offending_dates=dates, error=error,
                   severity=str(getattr(severity, "value", severity or "critical")))


def _date_text(value: Any) -> str:
    try:
        return str(pd.Timestamp(value).date())
    except (ValueError, TypeError):
        return str(value)
