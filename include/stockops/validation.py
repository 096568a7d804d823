"""The Great Expectations gate on daily prices (GX Core 1.x).

The committed GX project in ``great_expectations/gx/`` holds the expectation suite, the
validation definition and the checkpoint. At run time that project is copied under the
stockops home (``<home>/gx``) so validation results and Data Docs are written there and
the repository stays read-only. Thresholds are suite parameters (``$PARAMETER``) filled
from the settings on every run, so they are configurable without editing the suite.

A few checks need values derived from neighbouring rows (business-day gaps, close-to-close
moves, staleness against the logical date). Those are computed here as extra columns of
the frame GX sees; the data that gets published is the original frame.

``python -m stockops gx-init`` rewrites the committed project from :func:`build_expectations`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockops.config import Settings
from stockops.data.sources import COLUMNS, PRICE_COLUMNS

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
GAP_COL = "gap_bdays"
MOVE_COL = "abs_close_return"
STALENESS_COL = "bdays_behind_reference"


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
    success: bool
    evaluated: int
    failures: list[Failure]
    parameters: dict[str, Any]
    result_path: str = ""
    data_docs_path: str = ""

    def summary(self) -> str:
        if self.success:
            return f"all {self.evaluated} expectations passed"
        lines = [f"{len(self.failures)} of {self.evaluated} expectations failed:"]
        lines += [f"  - {f.line()}" for f in self.failures]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def _bound(expectation: str, **kwargs: Any) -> dict:
    return {"type": expectation, "kwargs": kwargs}


def build_expectations() -> list[dict]:
    """The suite, as (type, kwargs) pairs; ``$PARAMETER`` values are filled at run time."""
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
        _bound("expect_column_values_to_be_between", column=GAP_COL,
               max_value={"$PARAMETER": "max_gap_bdays"},
               description="no gap between trading days longer than max_gap_bdays business days"),
        _bound("expect_column_values_to_be_between", column=MOVE_COL,
               max_value={"$PARAMETER": "max_abs_return"},
               description="close-to-close move within max_abs_return"),
        _bound("expect_column_min_to_be_between", column=STALENESS_COL, min_value=0,
               max_value={"$PARAMETER": "max_staleness_bdays"},
               description="newest row is at most max_staleness_bdays business days older than the "
                           "reference date, and none is after it"),
    ]
    return exps


def with_derived_columns(frame: pd.DataFrame, reference_date: date) -> pd.DataFrame:
    """The frame GX sees: the original columns plus gap, move and staleness per row."""
    view = frame.copy()
    n = len(view)
    dates = pd.to_datetime(view["Date"], errors="coerce") if "Date" in view.columns else pd.Series([pd.NaT] * n)
    days = dates.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    valid = ~np.isnat(days)
    gap = np.zeros(n)
    if n > 1:
        ok = valid[1:] & valid[:-1]
        counts = np.zeros(n - 1)
        counts[ok] = np.busday_count(days[:-1][ok], days[1:][ok])
        gap[1:] = counts
    view[GAP_COL] = gap
    if "Close" in view.columns:
        close = pd.to_numeric(view["Close"], errors="coerce")
        view[MOVE_COL] = close.pct_change(fill_method=None).abs().replace([np.inf, -np.inf], np.nan).fillna(0.0).to_numpy()
    else:
        view[MOVE_COL] = 0.0
    behind = np.full(n, np.nan)
    if valid.any():
        behind[valid] = np.busday_count(days[valid], np.datetime64(reference_date, "D"))
    view[STALENESS_COL] = behind
    return view


def _gx_context(settings: Settings):
    """A file context on the runtime copy of the committed project (results + Data Docs there)."""
    import great_expectations as gx

    source = settings.gx_project_dir / "gx"
    work = settings.gx_work_dir
    target = work / "gx"
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("uncommitted"))
    return gx.get_context(mode="file", project_root_dir=str(work))


def validate_prices(frame: pd.DataFrame, reference_date: date, settings: Settings) -> ValidationReport:
    """Run the committed checkpoint on ``frame``; never raises for bad data, returns the report."""
    context = _gx_context(settings)
    checkpoint = context.checkpoints.get(CHECKPOINT_NAME)
    parameters = {
        "max_gap_bdays": settings.max_gap_bdays,
        "max_abs_return": settings.max_abs_return,
        "max_staleness_bdays": settings.max_staleness_bdays,
    }
    view = with_derived_columns(frame, reference_date)
    result = checkpoint.run(batch_parameters={"dataframe": view}, expectation_parameters=parameters)
    (run_result,) = result.run_results.values()
    failures = [_failure(res, view) for res in run_result.results if not res.success]
    evaluated = len(run_result.results)
    # Structural problems first: they explain the failures that follow from them.
    failures.sort(key=lambda f: (f.expectation not in STRUCTURAL, f.error is not None))
    report = ValidationReport(success=not failures, evaluated=evaluated, failures=failures, parameters=parameters,
                              data_docs_path=str(settings.data_docs_dir / "index.html"))
    return report


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
    return Failure(expectation=config.type, column=column, description=config.description or config.type,
                   unexpected_count=detail.get("unexpected_count"), offending_dates=dates, error=error)


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
        classes[e["type"]](**e["kwargs"]) for e in build_expectations()
    ])
    suite = context.suites.add_or_update(suite)
    validation = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=VALIDATION_DEFINITION_NAME, data=batch_definition, suite=suite))
    context.checkpoints.add_or_update(gx.Checkpoint(
        name=CHECKPOINT_NAME, validation_definitions=[validation],
        actions=[UpdateDataDocsAction(name="update_data_docs")],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["Date"]},
    ))
    return Path(project_root) / "gx"
