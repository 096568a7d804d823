"""The Great Expectations gate on daily prices (GX Core 1.x), knowing real markets.

The committed GX project in ``great_expectations/gx/`` holds the expectation suite, the
validation definition and the checkpoint. At run time that project is copied under the
stockops home (``<home>/gx``) so validation results and Data Docs are written there and
the repository stays read-only. Thresholds are suite parameters (``$PARAMETER``) filled
from the settings on every run, so they are configurable without editing the suite.

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

Validation is **incremental**: only the rows after the published snapshot are judged (with
the published history as context), as long as that history is unchanged. When the source
restated or re-adjusted history, every row is judged again and the restatement is described.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockops.core.settings import Settings
from stockops.data.calendar import is_session, sessions_between
from stockops.data.sources import COLUMNS, PRICE_COLUMNS
from stockops.data.store import file_lock

log = logging.getLogger(__name__)

SUITE_NAME = "stock_prices"
DATASOURCE_NAME = "stockops_pandas"
ASSET_NAME = "prices"
BATCH_DEFINITION_NAME = "whole_frame"
VALIDATION_DEFINITION_NAME = "stock_prices_validation"
CHECKPOINT_NAME = "stock_prices_checkpoint"

DATE_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"]
PRICE_TYPES = ["float64", "float32", "int64", "int32"]
VOLUME_TYPES = ["int64", "int32", "float64", "uint64"]

STRUCTURAL = ("expect_table_row_count_to_be_between", "expect_column_to_exist",
              "expect_column_values_to_be_in_type_list")

# Derived columns (see module docstring).
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

DOCS_SITE = "local_site"
DOCS_INDEX_LIMIT = 36  # the Data Docs index lists (and loads) the newest 36 results (two days of 18 tickers)
VOLUME_MEDIAN_SESSIONS = 50  # the volume ratio's baseline: median of the previous 50 sessions
VOLUME_MEDIAN_MIN = 20  # fewer known sessions: no ratio (nothing to compare with)
PARAMETERS = ("max_gap_sessions", "max_staleness_sessions", "max_repeated_rows", "max_volume_ratio",
              "extreme_min_range_share", "extreme_min_volume_ratio", "max_reversal")

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
        _bound("expect_column_values_to_be_unique", column="Date", description="dates are unique"),
        _bound("expect_column_values_to_be_increasing", column="Date", strictly=True,
               description="dates strictly increase"),
        _bound("expect_column_values_to_be_in_set", column=SESSION_COL, value_set=[True],
               description="every row is dated on an NYSE trading session (no weekend, no exchange holiday)"),
        _bound("expect_column_values_to_be_between", column=GAP_COL,
               max_value={"$PARAMETER": "max_gap_sessions"},
               description="no gap between rows longer than max_gap_sessions NYSE sessions"),
        _bound("expect_column_min_to_be_between", column=STALENESS_COL, min_value=0,
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
    view[STALENESS_COL] = sessions_between(days, np.full(len(days), np.datetime64(reference_date, "D")))

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
@lru_cache(maxsize=4)
def _gx_context(source: Path, work: Path):
    """A file context on the runtime copy of the committed project (results + Data Docs there); once per process."""
    import great_expectations as gx

    shutil.copytree(source / "gx", work / "gx", dirs_exist_ok=True, ignore=shutil.ignore_patterns("uncommitted"))
    return gx.get_context(mode="file", project_root_dir=str(work))


def parameters_for(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in PARAMETERS}


def prune_results(settings: Settings, keep: int) -> int:
    """Keep the newest ``keep`` GX validation results (and their Data Docs pages); returns how many went.

    Every run stores a result (~50 KB) and renders a page (~100 KB): 18 tickers a day would grow
    without bound. The stockops result of every validation stays in each ticker's ``validations/``.
    """
    root = settings.gx_work_dir / "gx" / "uncommitted"
    results = sorted((root / "validations").glob(f"{SUITE_NAME}/*/*/*.json"), key=lambda p: p.parent.name)
    gone = results[:-keep] if keep > 0 else results
    for path in gone:
        relative = path.relative_to(root / "validations")
        page = (settings.data_docs_dir / "validations" / relative).with_suffix(".html")
        for leaf in (path, page):
            leaf.unlink(missing_ok=True)
            for folder in (leaf.parent, leaf.parent.parent):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    return len(gone)


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


def write_gx_project(project_root: Path) -> Path:
    """(Re)write the committed GX project from :func:`build_expectations`; idempotent."""
    import great_expectations.expectations as gxe
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.expectation_suite import ExpectationSuite

    import great_expectations as gx

    context = gx.get_context(mode="file", project_root_dir=str(project_root))
    datasource = context.data_sources.add_or_update_pandas(name=DATASOURCE_NAME)
    asset = next((a for a in datasource.assets if a.name == ASSET_NAME), None) or \
        datasource.add_dataframe_asset(name=ASSET_NAME)
    batch_definition = next((b for b in asset.batch_definitions if b.name == BATCH_DEFINITION_NAME), None) or \
        asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION_NAME)
    classes = {cls.expectation_type: cls for cls in vars(gxe).values()
               if isinstance(cls, type) and hasattr(cls, "expectation_type")}
    suite = ExpectationSuite(name=SUITE_NAME, expectations=[
        classes[e["type"]](**e["kwargs"], severity=e["severity"]) for e in build_expectations()
    ])
    suite = context.suites.add_or_update(suite)
    validation = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=VALIDATION_DEFINITION_NAME, data=batch_definition, suite=suite))
    context.checkpoints.add_or_update(gx.Checkpoint(
        name=CHECKPOINT_NAME, validation_definitions=[validation],
        actions=[UpdateDataDocsAction(name="update_data_docs")],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["Date"]},
    ))
    # Rebuilding the index loads every listed result: bound it, or each run costs O(history).
    site = dict(context.variables.data_docs_sites[DOCS_SITE])
    site["site_index_builder"] = {"class_name": "DefaultSiteIndexBuilder", "validation_results_limit": DOCS_INDEX_LIMIT}
    context.update_data_docs_site(DOCS_SITE, site)
    return Path(project_root) / "gx"
