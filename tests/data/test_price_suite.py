"""The Great Expectations gate on real and deliberately broken prices, through the ingest steps.

Every shipped series passes over its whole history, real crashes included. Each bad input is a
real series with one problem written into a CSV, modelled on real feed errors; it goes through
fetch -> validate like a real run, must be refused with the right expectation named at the
broken row, be quarantined, and leave the published snapshot and the manifest untouched. A new
extreme move that the day's own range and volume back is held for a person, not refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from stockops import ingest
from stockops.contracts import IngestRequest, Published, Rejected, Validated
from stockops.core import audit, pointers
from stockops.core.settings import WATCHLIST, Settings, make_settings
from stockops.data import decisions, store_for
from stockops.data.sources import shipped_series
from stockops.data.suite import (
    CLOSE_OUT_COL,
    DATE_ORDER_COL,
    EXTREME_VOLUME_COL,
    GAP_COL,
    RANGE_SHARE_COL,
    REPEAT_COL,
    REVERSAL_COL,
    REVIEW_COL,
    SESSION_COL,
    STALENESS_COL,
    VOLUME_RATIO_COL,
    build_expectations,
)
from stockops.data.validation import DataValidationError, validate_prices

N_ROWS = 600  # the first 600 real trading days (2004-08-19 .. 2007-01-05): the published baseline
ROW = 300  # the row the history cases corrupt (2005-10-25)


def _iso(value) -> str:
    return pd.Timestamp(value).date().isoformat()


def _write_csv(frame: pd.DataFrame, path) -> None:
    frame.to_csv(path, index=False, date_format="%Y-%m-%d")


@pytest.fixture
def real(goog) -> pd.DataFrame:
    return goog.iloc[:N_ROWS].reset_index(drop=True)


@pytest.fixture
def lake(tmp_path, real):
    """A csv-sourced GOOG-only home with the real data published once as the baseline."""
    csv_path = tmp_path / "prices.csv"
    _write_csv(real, csv_path)
    current = make_settings(home=tmp_path / "home", tickers="GOOG", source="csv", csv_path=csv_path)
    day = _iso(real["Date"].iloc[-1])
    published = ingest.ingest_day(day, settings=current)
    store = store_for(current)
    baseline = store.latest()
    assert isinstance(published, Published) and published.new
    assert baseline is not None and baseline.hash == published.entry.hash
    return {"settings": current, "csv": csv_path, "day": day, "store": store, "baseline": baseline}


# ---- the real data passes ------------------------------------------------------------------

@pytest.mark.parametrize("ticker", WATCHLIST)
def test_every_shipped_series_passes_its_whole_history(settings, ticker):
    """All 4,109 real rows pass every expectation with the default settings, nobody asked (BAC's
    +35 % of 2009-04-09 and JPM's +25 % of 2009-01-21 included)."""
    frame = shipped_series(ticker)
    report = validate_prices(frame, frame["Date"].iloc[-1].date(), settings)
    assert report.status == "passed", report.summary()
    assert report.failures == [] and report.held == []
    assert report.evaluated == len(build_expectations())
    assert report.scope.mode == "first" and report.scope.judged == len(frame)


def test_baseline_was_published_from_the_csv(lake, real):
    """The fixture's baseline is the real data, validated and published."""
    pd.testing.assert_frame_equal(lake["store"].load(), real)
    assert len(lake["store"].entries()) == 1
    assert not (lake["settings"].data_dir / "quarantine").exists()


# ---- broken inputs -------------------------------------------------------------------------
# Each takes the published history and the real rows that follow it, and returns the frame the
# feed serves plus the date at which the break must be reported.

def _at(frame: pd.DataFrame, i: int) -> str:
    return _iso(frame["Date"].iloc[i])


def _nan_close(f, _):
    f.loc[ROW, "Close"] = np.nan
    return f, _at(f, ROW)


def _negative_low(f, _):
    f.loc[ROW, "Low"] = -f.loc[ROW, "Low"]
    return f, _at(f, ROW)


def _negative_volume(f, _):
    f.loc[ROW, "Volume"] = -1
    return f, _at(f, ROW)


def _high_below_low(f, _):
    f.loc[ROW, ["High", "Low"]] = f.loc[ROW, ["Low", "High"]].to_numpy()
    return f, _at(f, ROW)


def _close_above_high(f, _):
    f.loc[ROW, "Close"] = f.loc[ROW, "High"] * 1.01
    return f, _at(f, ROW)


def _duplicate_date(f, _):
    f = pd.concat([f.iloc[:ROW + 1], f.iloc[ROW:]], ignore_index=True)
    return f, _at(f, ROW)


def _unsorted_dates(f, _):
    day = _at(f, ROW)
    f.iloc[[ROW, ROW + 1]] = f.iloc[[ROW + 1, ROW]].to_numpy()
    return f, day  # now one row after a newer one: the row that breaks the order


def _missing_volume(f, _):
    return f.drop(columns=["Volume"]), None


def _close_as_text(f, _):
    f["Close"] = f["Close"].astype(object)
    f.loc[ROW, "Close"] = "abc"
    return f, None  # the whole column is text now, so every row is off-type


def _unparseable_date(f, _):
    f["Date"] = f["Date"].dt.strftime("%Y-%m-%d")
    f.loc[ROW, "Date"] = "not-a-date"
    return f, None


def _empty(f, _):
    return f.iloc[:0], None


def _ten_day_gap(f, _):
    after = _at(f, ROW + 10)
    return f.drop(index=range(ROW, ROW + 10)).reset_index(drop=True), after


def _absurd_jump(f, _):
    f.loc[ROW, ["Close", "High"]] *= 3  # a +200 % close the day's High agrees with, gone the next day
    return f, _at(f, ROW)


def _decimal_shift(f, more):
    """The newest close divided by 100 (a price quoted in cents, say)."""
    f = pd.concat([f, more.iloc[:1]], ignore_index=True)
    f.loc[len(f) - 1, "Close"] /= 100
    return f, _at(f, -1)


def _spike_for_one_day(f, _):
    """One whole row x 10 (Open, High, Low, Close), back to normal the next day."""
    f.loc[ROW, ["Open", "High", "Low", "Close"]] *= 10
    return f, _at(f, ROW)


def _other_symbol_appended(f, more):
    """The next 20 sessions come from MSFT's prices, under GOOG's name."""
    msft = shipped_series("MSFT")
    following = msft[msft["Date"] > f["Date"].iloc[-1]].iloc[:20]
    return pd.concat([f, following], ignore_index=True), _iso(following["Date"].iloc[0])


def _stale_feed_repeats(f, more):
    """Three more sessions that repeat the last whole row: a feed stuck on yesterday."""
    repeats = pd.concat([f.iloc[[-1]]] * 3, ignore_index=True)
    repeats["Date"] = more["Date"].iloc[:3].to_numpy()
    return pd.concat([f, repeats], ignore_index=True), _iso(more["Date"].iloc[0])


def _row_on_an_nyse_holiday(f, more):
    """A row dated Monday 2007-01-15, Martin Luther King Jr. Day (the session of the 16th re-dated)."""
    new = more.iloc[:6].copy()  # 2007-01-08 .. 2007-01-16
    assert _iso(new["Date"].iloc[-1]) == "2007-01-16"
    new.iloc[-1, new.columns.get_loc("Date")] = pd.Timestamp("2007-01-15")
    return pd.concat([f, new], ignore_index=True), "2007-01-15"


def _volume_units_error(f, _):
    """An ordinary day whose volume is 1,000 x its median (shares counted in thousandths)."""
    f.loc[ROW, "Volume"] = int(f["Volume"].iloc[ROW - 50:ROW].median() * 1000)
    return f, _at(f, ROW)


@dataclass(frozen=True)
class Bad:
    name: str
    corrupt: Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, str | None]]
    expectation: str
    column: str | None
    stale_sessions: int = 0  # move the logical date this many NYSE sessions past the last row


BETWEEN = "expect_column_values_to_be_between"
PAIR = "expect_column_pair_values_a_to_be_greater_than_b"
TYPES = "expect_column_values_to_be_in_type_list"

BAD = [
    Bad("nan_close", _nan_close, "expect_column_values_to_not_be_null", "Close"),
    Bad("negative_price", _negative_low, BETWEEN, "Low"),
    Bad("negative_volume", _negative_volume, BETWEEN, "Volume"),
    Bad("high_below_low", _high_below_low, PAIR, "High vs Low"),
    Bad("close_above_high", _close_above_high, BETWEEN, CLOSE_OUT_COL),
    Bad("duplicate_date", _duplicate_date, "expect_compound_columns_to_be_unique", "Ticker, Date"),
    Bad("unsorted_dates", _unsorted_dates, "expect_column_values_to_be_in_set", DATE_ORDER_COL),
    Bad("missing_column", _missing_volume, "expect_column_to_exist", "Volume"),
    Bad("close_as_text", _close_as_text, TYPES, "Close"),
    Bad("unparseable_date", _unparseable_date, TYPES, "Date"),
    Bad("empty", _empty, "expect_table_row_count_to_be_between", None),
    Bad("ten_day_gap", _ten_day_gap, BETWEEN, GAP_COL),
    Bad("absurd_jump", _absurd_jump, BETWEEN, REVERSAL_COL),
    Bad("stale", lambda f, _: (f, _at(f, -1)), BETWEEN, STALENESS_COL, stale_sessions=30),
    # feed errors seen in real data feeds
    Bad("decimal_shift", _decimal_shift, BETWEEN, RANGE_SHARE_COL),
    Bad("spike_for_one_day", _spike_for_one_day, BETWEEN, REVERSAL_COL),
    Bad("other_symbol_appended", _other_symbol_appended, BETWEEN, RANGE_SHARE_COL),
    Bad("stale_feed_repeats", _stale_feed_repeats, BETWEEN, REPEAT_COL),
    Bad("row_on_an_nyse_holiday", _row_on_an_nyse_holiday, "expect_column_values_to_be_in_set", SESSION_COL),
    Bad("volume_units_error", _volume_units_error, BETWEEN, VOLUME_RATIO_COL),
]


def _refused(settings: Settings, day: str) -> DataValidationError:
    """Fetch and validate ``day``; return the validation error (the test fails if there is none)."""
    fetched = ingest.fetch_prices(IngestRequest(ticker="GOOG", logical_date=day), settings=settings)
    with pytest.raises(DataValidationError) as info:
        ingest.validate_raw(fetched, settings=settings)
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
    status = pointers.read(ingest.status_path(lake["settings"], "GOOG"))
    assert (status["status"], status["logical_date"]) == ("quarantined", day)


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_bad_input_is_refused_and_quarantined(lake, real, goog, bad):
    """The broken input fails the named expectation at the broken row; nothing moves, it is quarantined."""
    frame, bad_date = bad.corrupt(real.copy(), goog.iloc[N_ROWS:N_ROWS + 40].reset_index(drop=True))
    _write_csv(frame, lake["csv"])
    day = lake["day"] if frame.empty or frame["Date"].dtype == object else _iso(frame["Date"].iloc[-1])
    if bad.stale_sessions:
        day = _iso(pd.Timestamp(day) + pd.tseries.offsets.BDay(bad.stale_sessions))
    error = _refused(lake["settings"], day)
    message = str(error)
    assert bad.expectation in message
    matching = [f for f in error.report.failures if f.expectation == bad.expectation and f.column == bad.column]
    assert matching, error.report.summary()
    if bad_date is not None:
        assert bad_date in matching[0].offending_dates, matching[0].line()
        assert bad_date in message
    assert error.report.status == "failed" and error.report.held == []
    _assert_nothing_published_and_quarantined(lake, day)


def test_new_rows_are_judged_against_the_published_history(lake, goog):
    """A clean day is validated incrementally: only the rows after the snapshot are judged."""
    frame = goog.iloc[:N_ROWS + 2]
    _write_csv(frame, lake["csv"])
    validated = _validated(lake["settings"], "GOOG", _iso(frame["Date"].iloc[-1]))
    result = json.loads(open(validated.validation_path).read())
    assert (result["status"], result["scope"]["mode"], result["scope"]["judged"]) == ("passed", "incremental", 2)
    published = ingest.publish_validated(validated, settings=lake["settings"])
    assert isinstance(published, Published) and published.entry.rows == N_ROWS + 2


def test_a_restatement_is_validated_whole_and_recorded(lake, goog):
    """The source re-adjusts all history (a dividend, say): every row is judged again, and the audit log says so."""
    frame = goog.iloc[:N_ROWS + 1].copy()
    frame.loc[:N_ROWS - 1, ["Open", "High", "Low", "Close"]] *= 0.98
    _write_csv(frame, lake["csv"])
    day = _iso(frame["Date"].iloc[-1])
    validated = _validated(lake["settings"], "GOOG", day)
    assert not validated.held_for_review and "history differs" in validated.scope
    (entry,) = [e for e in audit.read(lake["settings"].audit_log) if e["event"] == "restatement"]
    assert (entry["ticker"], entry["logical_date"], entry["rows_revised"], entry["validation"]) == (
        "GOOG", day, N_ROWS, "passed")
    assert entry["close_ratio_min"] == pytest.approx(0.98) and entry["previous_hash"] == lake["baseline"].hash


def test_stale_case_differs_from_baseline_only_in_the_date(lake):
    """The stale case's data is the baseline's, byte for byte: staleness alone is refused."""
    day = _iso(pd.Timestamp(lake["day"]) + pd.tseries.offsets.BDay(30))
    error = _refused(lake["settings"], day)
    assert {(f.expectation, f.column) for f in error.report.failures} == {("expect_column_values_to_be_between", STALENESS_COL)}
    folder = next((lake["settings"].data_dir / "quarantine").glob(f"{day}__*"))
    assert json.loads((folder / "validation.json").read_text())["hash"] == lake["baseline"].hash


def test_a_holiday_is_never_a_gap(lake, goog):
    """Christmas, New Year and the Ford day of mourning (2007-01-02) fall in the baseline's last weeks; a
    one-session gap right after is fine."""
    frame = goog.iloc[:N_ROWS + 1]
    _write_csv(frame, lake["csv"])
    validated = _validated(lake["settings"], "GOOG", "2007-01-08")
    assert not validated.held_for_review and validated.held == []


# ---- thresholds come from the settings -----------------------------------------------------

def test_extreme_move_thresholds_are_wired_from_settings(settings):
    """Asking extreme moves for 100 x the usual volume makes BAC's real 2008-09 days fail that expectation."""
    current = make_settings(home=settings.home, extreme_min_volume_ratio=100)
    bac = shipped_series("BAC")
    report = validate_prices(bac, bac["Date"].iloc[-1].date(), current)
    assert report.parameters["extreme_min_volume_ratio"] == 100
    (failure,) = report.failures
    assert (failure.expectation, failure.column) == (BETWEEN, EXTREME_VOLUME_COL)
    assert "2009-04-09" in failure.offending_dates and failure.unexpected_count == 9


# ---- a person decides what rules cannot ------------------------------------------------------

@pytest.fixture
def banks(tmp_path):
    """BAC and JPM from the shipped CSVs, as a csv source: the logical date picks how far the feed goes."""
    shipped = make_settings().shipped_prices_dir
    return make_settings(home=tmp_path / "home", tickers="BAC,JPM", source="csv", csv_path=shipped)


def _validated(settings: Settings, ticker: str, day: str) -> Validated:
    request = IngestRequest(ticker=ticker, logical_date=day)
    return ingest.validate_raw(ingest.fetch_prices(request, settings=settings), settings=settings)


def test_a_new_extreme_move_that_the_day_backs_is_held_for_a_person_then_approved(banks):
    """BAC +35.3 % on 2009-04-09 as the newest session: held (not refused, not published); approved, it
    publishes and the day is never asked about again."""
    assert isinstance(ingest.ingest_day("2009-04-08", "BAC", settings=banks), Published)
    store = store_for(banks, "BAC")
    before = store.latest()

    validated = ingest.ingest_day("2009-04-09", "BAC", settings=banks)
    assert isinstance(validated, Validated) and validated.held_for_review, "held: returned, not published"
    (held,) = validated.held
    assert held.day == "2009-04-09" and held.move_pct == pytest.approx(35.3, abs=0.1)
    assert held.range_share > banks.extreme_min_range_share and held.volume_ratio > 1
    assert store.latest() == before, "nothing is published while a person has not decided"
    assert pointers.read(ingest.status_path(banks, "BAC"))["status"] == "held"
    question = ingest.review_request(validated)
    assert "BAC" in question["subject"] and "+35.3 %" in question["subject"] and "2009-04-09" in question["body"]
    with pytest.raises(RuntimeError, match="none was recorded"):
        ingest.publish_validated(validated, settings=banks)

    ingest.record_review(validated, approved=True, by="alice", reason="the bank rally after the stress tests",
                         settings=banks)
    published = ingest.publish_validated(validated, settings=banks)
    assert isinstance(published, Published) and published.entry.last_date == "2009-04-09"
    trail = [e for e in audit.read(banks.audit_log) if e["event"] in (decisions.REQUEST_EVENT, decisions.EVENT)]
    assert [(e["event"], e["ticker"]) for e in trail] == [(decisions.REQUEST_EVENT, "BAC"), (decisions.EVENT, "BAC")]
    assert (trail[1]["decision"], trail[1]["by"], trail[1]["day"]) == ("approved", "alice", "2009-04-09")

    # the same day is never asked again: a full re-validation (a restated history) accepts it
    report = validate_prices(store.load(), store_for(banks, "BAC").latest().last_date, banks,
                             decisions=decisions.decided_days(banks, "BAC"))
    assert report.status == "passed", report.summary()


def test_a_rejected_move_is_quarantined_and_stays_refused(banks):
    """JPM +25.1 % on 2009-01-21: rejected, the data is quarantined; served again, it is refused outright."""
    assert isinstance(ingest.ingest_day("2009-01-20", "JPM", settings=banks), Published)
    store = store_for(banks, "JPM")
    before = store.latest()
    validated = _validated(banks, "JPM", "2009-01-21")
    assert validated.held_for_review
    ingest.record_review(validated, approved=False, by="bob", reason="looks like a bad print", settings=banks)
    outcome = ingest.publish_validated(validated, settings=banks)
    assert isinstance(outcome, Rejected) and store.latest() == before
    assert outcome.reason == "an operator rejected 2009-01-21: quarantined" and outcome.validated == validated
    assert (store.root / "quarantine").is_dir() and any((store.root / "quarantine").iterdir())

    with pytest.raises(DataValidationError) as info:
        _validated(banks, "JPM", "2009-01-21")
    (failure,) = [f for f in info.value.report.failures if f.column == REVIEW_COL]
    assert failure.offending_dates == ["2009-01-21"] and "operator rejected" in failure.description


def test_a_held_day_the_next_session_confirms_needs_nobody(banks):
    """One session later the rules can judge BAC's 2009-04-09 themselves: no reversal, so it passes."""
    assert isinstance(ingest.ingest_day("2009-04-08", "BAC", settings=banks), Published)
    assert isinstance(ingest.ingest_day("2009-04-13", "BAC", settings=banks), Published)  # 04-09 and 04-13 (04-10: Good Friday)


def test_a_held_move_is_approved_and_published_on_another_host(tmp_path, monkeypatch):
    """Two hosts that share only the stores (one records database, a real S3 server): the chunk on host A holds
    BAC's +35.3 %; the review on host B, whose disk never saw A's landing, approves it and publishes it."""
    from stockops.launch.objectstore import ObjectStoreServer

    server = ObjectStoreServer(tmp_path / "s3").start(buckets=["stockops"])
    try:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        shipped = make_settings().shipped_prices_dir
        shared = {"tickers": "BAC,JPM", "source": "csv", "csv_path": shipped,
                  "state_db": f"sqlite:///{tmp_path / 'records.db'}", "blob_url": "s3://stockops/home"}
        host_a = make_settings(home=tmp_path / "a" / "home", **shared)
        host_b = make_settings(home=tmp_path / "b" / "home", **shared)
        assert isinstance(ingest.ingest_day("2009-04-08", "BAC", settings=host_a), Published)
        validated = ingest.ingest_day("2009-04-09", "BAC", settings=host_a)
        assert isinstance(validated, Validated) and validated.held_for_review
        assert not (host_b.home / "data" / "BAC" / "raw").exists(), "host B has no landing of its own"
        import shutil

        shutil.rmtree(host_a.home / "data" / "BAC" / "raw")  # on one machine, what host B could not see of A's
        assert validated.validation_path.startswith("s3://stockops/home/data/BAC/validations/")
        ingest.record_review(validated, approved=True, by="bob", reason="the stress-test rally", settings=host_b)
        published = ingest.publish_validated(validated, settings=host_b)
        assert isinstance(published, Published) and published.entry.last_date == "2009-04-09"
        assert store_for(host_a, "BAC").latest() == published.entry, "host A sees what host B published"
        assert len(store_for(host_a, "BAC").load()) == published.entry.rows
        assert (host_b.home / "data" / "BAC" / "raw").is_dir(), "host B fetched the landing from the blob store"
        from stockops.data import datadocs

        shown = [datadocs.read_result(host_b, p) for p in datadocs.result_files(host_b)]
        assert [(r.ticker, r.outcome) for r in shown] == [("BAC", datadocs.HELD), ("BAC", datadocs.PASSED)], \
            "host B's Data Docs show the GX results host A's runs stored"
        assert "BAC" in (datadocs.render_index(host_b) or "")
        kept = make_settings(home=tmp_path / "b" / "home", **shared, gx_keep_results=1)
        datadocs.share_results(kept, [])
        assert len(datadocs.result_files(host_b)) == 1, "pruned in the store, and so in every mirror"
    finally:
        server.stop()
