"""The Great Expectations gate on real and deliberately broken GOOG prices, through the ingest steps.

Each bad input is the real series with one problem written into a CSV; it goes through
fetch_prices -> validate_raw like a real run, must be refused with the right expectation
named, be quarantined, and leave the published snapshot and the manifest untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from stockops import ingest
from stockops.config import get_settings
from stockops.validation import MOVE_COL, DataValidationError, build_expectations, validate_prices

N_ROWS = 600  # the first 600 real trading days (2004-08-19 .. 2007-01-05)
ROW = 300  # the row the row-level cases corrupt


def _iso(value) -> str:
    return pd.Timestamp(value).date().isoformat()


def _write_csv(frame: pd.DataFrame, path) -> None:
    frame.to_csv(path, index=False, date_format="%Y-%m-%d")


@pytest.fixture
def real(goog) -> pd.DataFrame:
    return goog.iloc[:N_ROWS].reset_index(drop=True)


@pytest.fixture
def lake(settings, tmp_path, monkeypatch, real):
    """A csv-sourced stockops home with the real data published once as the baseline."""
    csv_path = tmp_path / "prices.csv"
    _write_csv(real, csv_path)
    monkeypatch.setenv("STOCKOPS_SOURCE", "csv")
    monkeypatch.setenv("STOCKOPS_CSV_PATH", str(csv_path))
    current = get_settings()
    day = _iso(real["Date"].iloc[-1])
    published = ingest.ingest_day(day)
    store = ingest.store_for(current)
    baseline = store.latest()
    assert published["new"] and baseline is not None and baseline.hash == published["hash"]
    return {"settings": current, "csv": csv_path, "day": day, "store": store, "baseline": baseline}


# ---- the real data passes ------------------------------------------------------------------

def test_whole_real_series_passes(settings, goog):
    """All 2148 real rows pass every expectation of the suite."""
    report = validate_prices(goog, goog["Date"].iloc[-1].date(), settings)
    assert report.success, report.summary()
    assert report.failures == []
    assert report.evaluated == len(build_expectations())


def test_baseline_was_published_from_the_csv(lake, real):
    """The fixture's baseline is the real data, validated and published."""
    pd.testing.assert_frame_equal(lake["store"].load(), real)
    assert len(lake["store"].entries()) == 1
    assert not (lake["settings"].data_dir / "quarantine").exists()


# ---- broken inputs -------------------------------------------------------------------------

def _date_at(frame: pd.DataFrame, i: int) -> str:
    return _iso(frame["Date"].iloc[i])


def _nan_close(f):
    f.loc[ROW, "Close"] = np.nan
    return f, _date_at(f, ROW)


def _negative_low(f):
    f.loc[ROW, "Low"] = -f.loc[ROW, "Low"]
    return f, _date_at(f, ROW)


def _negative_volume(f):
    f.loc[ROW, "Volume"] = -1
    return f, _date_at(f, ROW)


def _high_below_low(f):
    f.loc[ROW, ["High", "Low"]] = f.loc[ROW, ["Low", "High"]].to_numpy()
    return f, _date_at(f, ROW)


def _close_above_high(f):
    f.loc[ROW, "Close"] = f.loc[ROW, "High"] * 1.01
    return f, _date_at(f, ROW)


def _duplicate_date(f):
    f = pd.concat([f.iloc[:ROW + 1], f.iloc[ROW:]], ignore_index=True)
    return f, _date_at(f, ROW)


def _unsorted_dates(f):
    day = _date_at(f, ROW)
    f.iloc[[ROW, ROW + 1]] = f.iloc[[ROW + 1, ROW]].to_numpy()
    return f, day  # now one row after a newer one: the row that breaks the order


def _missing_volume(f):
    return f.drop(columns=["Volume"]), None


def _close_as_text(f):
    f["Close"] = f["Close"].astype(object)
    f.loc[ROW, "Close"] = "abc"
    return f, None  # the whole column is text now, so every row is off-type


def _unparseable_date(f):
    f["Date"] = f["Date"].dt.strftime("%Y-%m-%d")
    f.loc[ROW, "Date"] = "not-a-date"
    return f, None


def _empty(f):
    return f.iloc[:0], None


def _ten_day_gap(f):
    after = _date_at(f, ROW + 10)
    return f.drop(index=range(ROW, ROW + 10)).reset_index(drop=True), after


def _absurd_jump(f):
    f.loc[ROW, ["Close", "High"]] *= 3
    return f, _date_at(f, ROW)


@dataclass(frozen=True)
class Bad:
    name: str
    corrupt: Callable[[pd.DataFrame], tuple[pd.DataFrame, str | None]]
    expectation: str
    column: str | None
    stale_bdays: int = 0  # move the logical date this many business days past the last row


BETWEEN = "expect_column_values_to_be_between"
PAIR = "expect_column_pair_values_a_to_be_greater_than_b"
TYPES = "expect_column_values_to_be_in_type_list"

BAD = [
    Bad("nan_close", _nan_close, "expect_column_values_to_not_be_null", "Close"),
    Bad("negative_price", _negative_low, BETWEEN, "Low"),
    Bad("negative_volume", _negative_volume, BETWEEN, "Volume"),
    Bad("high_below_low", _high_below_low, PAIR, "High vs Low"),
    Bad("close_above_high", _close_above_high, PAIR, "High vs Close"),
    Bad("duplicate_date", _duplicate_date, "expect_column_values_to_be_unique", "Date"),
    Bad("unsorted_dates", _unsorted_dates, "expect_column_values_to_be_increasing", "Date"),
    Bad("missing_column", _missing_volume, "expect_column_to_exist", "Volume"),
    Bad("close_as_text", _close_as_text, TYPES, "Close"),
    Bad("unparseable_date", _unparseable_date, TYPES, "Date"),
    Bad("empty", _empty, "expect_table_row_count_to_be_between", None),
    Bad("ten_day_gap", _ten_day_gap, BETWEEN, "gap_bdays"),
    Bad("absurd_jump", _absurd_jump, BETWEEN, MOVE_COL),
    Bad("stale", lambda f: (f, _date_at(f, -1)), "expect_column_min_to_be_between", "bdays_behind_reference",
        stale_bdays=30),
]


def _refused(lake, day: str) -> DataValidationError:
    """Fetch and validate ``day``; return the validation error (the test fails if there is none)."""
    fetched = ingest.fetch_prices(day)
    with pytest.raises(DataValidationError) as info:
        ingest.validate_raw(fetched)
    return info.value


def _assert_nothing_published_and_quarantined(lake, day: str) -> None:
    store = lake["store"]
    latest = store.latest()
    assert latest is not None and latest.hash == lake["baseline"].hash
    assert latest == lake["baseline"]
    assert len(store.entries()) == 1
    folders = list((lake["settings"].data_dir / "quarantine").glob(f"{day}__*"))
    assert len(folders) == 1, folders
    assert (folders[0] / "data.csv").is_file()
    result = json.loads((folders[0] / "validation.json").read_text())
    assert result["success"] is False and result["logical_date"] == day


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_bad_input_is_refused_and_quarantined(lake, real, bad):
    """The broken input fails the named expectation at the broken row; nothing moves, it is quarantined."""
    frame, bad_date = bad.corrupt(real.copy())
    _write_csv(frame, lake["csv"])
    day = lake["day"]
    if bad.stale_bdays:
        day = _iso(np.busday_offset(np.datetime64(day, "D"), bad.stale_bdays))
    error = _refused(lake, day)
    message = str(error)
    assert bad.expectation in message
    matching = [f for f in error.report.failures if f.expectation == bad.expectation and f.column == bad.column]
    assert matching, error.report.summary()
    if bad_date is not None:
        assert bad_date in matching[0].offending_dates, matching[0].line()
        assert bad_date in message
    _assert_nothing_published_and_quarantined(lake, day)


def test_stale_case_differs_from_baseline_only_in_the_date(lake):
    """The stale case's data is the baseline's, byte for byte: staleness alone is refused."""
    day = _iso(np.busday_offset(np.datetime64(lake["day"], "D"), 30))
    fetched = ingest.fetch_prices(day)
    with pytest.raises(DataValidationError) as info:
        ingest.validate_raw(fetched)
    failed = {f.expectation for f in info.value.report.failures}
    assert failed == {"expect_column_min_to_be_between"}
    folder = next((lake["settings"].data_dir / "quarantine").glob(f"{day}__*"))
    assert json.loads((folder / "validation.json").read_text())["hash"] == lake["baseline"].hash


# ---- thresholds come from the settings -----------------------------------------------------

def test_max_abs_return_is_wired_from_settings(lake, monkeypatch):
    """A tiny STOCKOPS_MAX_ABS_RETURN makes the otherwise valid real data fail the move check."""
    monkeypatch.setenv("STOCKOPS_MAX_ABS_RETURN", "0.05")
    assert get_settings().max_abs_return == 0.05
    error = _refused(lake, lake["day"])
    assert error.report.parameters["max_abs_return"] == 0.05
    moves = [f for f in error.report.failures if f.column == MOVE_COL]
    assert len(moves) == 1 and moves[0].expectation == BETWEEN
    assert moves[0].unexpected_count and moves[0].unexpected_count > 0
    assert {f.expectation for f in error.report.failures} == {BETWEEN}
    assert MOVE_COL in str(error)
    _assert_nothing_published_and_quarantined(lake, lake["day"])
