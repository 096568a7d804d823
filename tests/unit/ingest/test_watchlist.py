"""The watchlist's plumbing without Airflow: the NYSE calendar, the plan of a day, the yfinance batch
landing, which rows validation judges, decisions, the audit log's torn line, pruning GX results."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
import yfinance

from stockops import ingest
from stockops.contracts import IngestRequest, IngestStatus
from stockops.core import audit, pointers
from stockops.core.settings import make_settings
from stockops.data import calendar, decisions, store_for
from stockops.data.gxproject import prune_results
from stockops.data.scope import judged_rows
from stockops.data.sources import shipped_series
from tests.unit.data.test_sources_and_store import FakeDownload, _download_shape

# ---- the calendar --------------------------------------------------------------------------


@pytest.mark.parametrize(("day", "reason"), [
    (date(2026, 11, 26), "an NYSE holiday (Thanksgiving)"),
    (date(2026, 11, 28), "a Saturday"),
    (date(2012, 10, 29), "an NYSE holiday (market closed)"),  # Hurricane Sandy
    (date(2026, 11, 27), None),  # the half day after Thanksgiving trades
])
def test_closed_reason_names_the_holiday(day, reason):
    assert calendar.closed_reason(day) == reason


def test_sessions_are_counted_across_holidays():
    """Friday 2009-01-16 to Tuesday 2009-01-20 is one session (Martin Luther King Jr. Day between)."""
    after = np.array(["2009-01-16", "2009-01-20", "NaT"], dtype="datetime64[D]")
    until = np.array(["2009-01-20", "2009-01-16", "2009-01-20"], dtype="datetime64[D]")
    np.testing.assert_array_equal(calendar.sessions_between(after, until), [1, -1, np.nan])


def test_every_shipped_day_is_a_session_and_no_session_is_missing(goog):
    days = goog["Date"].to_numpy(dtype="datetime64[D]")
    assert calendar.is_session(days).all()
    expected = calendar.sessions(goog["Date"].iloc[0].date(), goog["Date"].iloc[-1].date())
    np.testing.assert_array_equal(days, expected)


# ---- the plan of a day ------------------------------------------------------------------------

def test_plan_is_empty_on_a_closed_day_and_names_every_ticker_otherwise(settings):
    assert ingest.plan_watchlist("2026-11-26", settings=settings) == []
    requests = ingest.plan_watchlist("2026-11-27", settings=settings)
    assert requests == [IngestRequest(ticker=t, logical_date="2026-11-27", landed=None) for t in settings.tickers]
    assert [r.ticker for r in ingest.plan_watchlist("2026-11-27", "ko, msft", settings=settings)] == ["KO", "MSFT"]
    assert [r.ticker for r in ingest.plan_watchlist("2026-11-27", ["ko", "msft"], settings=settings)] == ["KO", "MSFT"]
    with pytest.raises(ValueError, match="AAPL not in the watchlist"):
        ingest.plan_watchlist("2026-11-27", "AAPL", settings=settings)



def test_the_plan_is_balanced_chunks_of_at_most_ingest_chunk_tickers(tmp_path):
    universe = ",".join(f"T{i:03d}" for i in range(421))
    chunks = ingest.plan_chunks("2026-11-27", settings=make_settings(home=tmp_path, tickers=universe))
    assert [len(c.requests) for c in chunks] == [47] * 8 + [45], "at most 50 a chunk, balanced"
    assert [t for c in chunks for t in c.tickers] == universe.split(",") and chunks[0].label == "T000..T046 (47)"
    one = ingest.plan_chunks("2026-11-27", "KO", settings=make_settings(home=tmp_path, ingest_chunk=2))
    assert [(c.label, c.tickers) for c in one] == [("KO", ["KO"])]
    assert ingest.plan_chunks("2026-11-26", settings=make_settings(home=tmp_path)) == [], "Thanksgiving: closed"

def test_yfinance_plan_lands_the_batch_and_a_missing_ticker_is_fetched_alone(settings, monkeypatch, goog):
    """One batched download lands GOOG and KO; MSFT was not in it, so its fetch asks Yahoo for MSFT alone."""
    current = make_settings(home=settings.home, source="yfinance", tickers="GOOG,KO,MSFT")
    rows = goog.iloc[:30].reset_index(drop=True)
    ko = shipped_series("KO").iloc[:30].reset_index(drop=True)
    msft = shipped_series("MSFT").iloc[:30].reset_index(drop=True)
    fake = FakeDownload(pd.concat([_download_shape(rows, "GOOG"), _download_shape(ko, "KO")], axis=1),
                        _download_shape(msft, "MSFT"))
    monkeypatch.setattr(yfinance, "download", fake)
    day = rows["Date"].iloc[-1].date().isoformat()
    requests = ingest.plan_watchlist(day, settings=current)
    assert len(fake.calls) == 1 and fake.calls[0][0][0] == ["GOOG", "KO", "MSFT"]
    landed = {r.ticker: r.landed for r in requests}
    assert landed["MSFT"] is None and landed["GOOG"] is not None and landed["GOOG"].rows == 30
    fetched = {r.ticker: ingest.fetch_prices(r, settings=current) for r in requests}
    assert fetched["GOOG"] == landed["GOOG"], "a landed ticker is not fetched again"
    assert len(fake.calls) == 2 and fake.calls[1][0][0] == "MSFT", "only the missing ticker is fetched again"
    for ticker, frame in (("GOOG", rows), ("KO", ko), ("MSFT", msft)):
        raw = store_for(current, ticker).read_raw(fetched[ticker].raw_path)
        pd.testing.assert_frame_equal(raw, frame)


# ---- which rows are judged ------------------------------------------------------------------------

def test_judged_rows_new_rows_backfill_and_restatement(goog):
    published = goog.iloc[:500].reset_index(drop=True)
    judged, scope = judged_rows(goog.iloc[:503].reset_index(drop=True), published)
    assert (scope.mode, judged.sum(), judged[-3:].all()) == ("incremental", 3, True)
    judged, scope = judged_rows(published, published)
    assert (scope.mode, judged.sum(), judged[-1]) == ("unchanged", 1, True)
    judged, scope = judged_rows(goog.iloc[:450].reset_index(drop=True), published)
    assert scope.mode == "unchanged", "a backfill of an older day serves a prefix: not a restatement"
    revised = goog.iloc[:501].reset_index(drop=True)
    revised.loc[10, "Close"] *= 1.01
    judged, scope = judged_rows(revised, published)
    assert (scope.mode, judged.all()) == ("restated", True)
    assert (scope.restatement["rows_revised"], scope.restatement["first_revised"]) == (1, "2004-09-02")
    judged, scope = judged_rows(goog.iloc[:10], None)
    assert (scope.mode, judged.all()) == ("first", True)


# ---- decisions and the audit log -------------------------------------------------------------------

def test_the_newest_decision_for_a_day_wins_and_everything_is_audited(settings):
    decisions.record_decision(settings, "BAC", ["2009-04-09"], decisions.REJECTED, by="a", reason="odd")
    decisions.record_decision(settings, "BAC", ["2009-04-09", "2009-04-13"], decisions.APPROVED, by="b", reason="real")
    assert decisions.decided_days(settings, "BAC") == {"2009-04-09": "approved", "2009-04-13": "approved"}
    assert decisions.decided_days(settings, "JPM") == {}
    entries = [e for e in audit.read(settings.audit_log) if e["event"] == decisions.EVENT]
    assert [(e["ticker"], e["day"], e["decision"], e["by"]) for e in entries] == [
        ("BAC", "2009-04-09", "rejected", "a"), ("BAC", "2009-04-09", "approved", "b"),
        ("BAC", "2009-04-13", "approved", "b")]
    with pytest.raises(ValueError, match="approved"):
        decisions.record_decision(settings, "BAC", ["2009-04-09"], "maybe", by="c", reason="?")


def test_an_entry_after_a_torn_line_is_not_lost(tmp_path):
    """A writer killed mid-line leaves no newline; the next entry still reads back (the torn one is skipped)."""
    path = tmp_path / "audit.jsonl"
    audit.record(path, "first")
    with open(path, "a") as log:
        log.write('{"at": "2026-11-23", "event": "torn')
    audit.record(path, "after the crash")
    assert [e["event"] for e in audit.read(path)] == ["first", "after the crash"]


def test_status_of_an_older_day_never_overwrites_a_newer_one(settings):
    ingest.write_status(settings, "KO", "2026-11-20", IngestStatus.PUBLISHED, "x", hash="h" * 64)
    ingest.write_status(settings, "KO", "2026-11-19", IngestStatus.QUARANTINED, "late backfill")
    ingest.write_status(settings, "PG", "2026-11-20", IngestStatus.HELD, "BAC-like move", days=["2026-11-20"])
    rows = {r.ticker: r for r in ingest.watchlist_status(settings)}
    assert (rows["KO"].status, rows["PG"].status, rows["MSFT"].status) == (
        IngestStatus.PUBLISHED, IngestStatus.HELD, IngestStatus.NEVER_INGESTED)
    assert (rows["KO"].hash, rows["PG"].days) == ("h" * 64, ["2026-11-20"])
    kept = pointers.read(ingest.status_path(settings, "PG"))
    assert (kept["status"], kept["detail"], kept["days"]) == ("held", "BAC-like move", ["2026-11-20"])
    text = ingest.format_watchlist(list(rows.values()))
    assert text.startswith("watchlist: 18 tickers") and "PG     held" in text


def test_a_status_file_is_parsed_once_and_an_unknown_outcome_is_refused(settings):
    """The status record is read back into a TickerStatus; a label it does not know makes it unreadable, by name."""
    from stockops.data.store import CorruptState

    path = ingest.status_path(settings, "KO")
    pointers.write(path, {"ticker": "KO", "logical_date": "2026-11-20", "status": "held", "detail": "x"})
    assert ingest.read_status(settings, "KO").status is IngestStatus.HELD
    pointers.write(path, {"ticker": "KO", "logical_date": "2026-11-20", "status": "maybe"})
    with pytest.raises(CorruptState, match=r"TickerStatus\.status: expected one of 'published', .*got str 'maybe'"):
        ingest.read_status(settings, "KO")
    assert {r.ticker: r.status for r in ingest.watchlist_status(settings)}["KO"] is IngestStatus.UNREADABLE


# ---- GX results do not pile up ------------------------------------------------------------------------

def test_prune_keeps_the_newest_results_and_their_pages(settings):
    root = settings.gx_work_dir / "gx" / "uncommitted"
    for i in range(5):
        result = root / "validations" / "stock_prices" / f"GOOG-{i}" / f"2026112{i}T000000Z" / "batch.json"
        page = settings.data_docs_dir / "validations" / "stock_prices" / f"GOOG-{i}" / f"2026112{i}T000000Z" / "batch.html"
        for path in (result, page):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"i": i}))
    assert prune_results(settings, keep=2) == 3
    left = sorted(p.parent.name for p in (root / "validations").rglob("*.json"))
    assert left == ["20261123T000000Z", "20261124T000000Z"]
    assert sorted(p.parent.name for p in settings.data_docs_dir.rglob("*.html")) == left
    assert not (root / "validations" / "stock_prices" / "GOOG-0").exists()


def test_a_day_is_settled_once_every_ticker_has_an_outcome_and_new_only_for_a_new_snapshot(settings, goog):
    """What stock_ingest's ``settled`` task waits on: published, quarantined, held or rejected (a later day's
    outcome too) settles a ticker; a ticker with no outcome for the day is pending; a snapshot published before
    the run began (a re-run of the day) is not new."""
    from stockops.data import store_for

    day, tickers = "2026-11-20", ["GOOG", "KO", "PG", "JNJ", "MSFT"]
    start = "2026-12-01T00:00:00+00:00"
    entry, _ = store_for(settings, "GOOG").publish(goog.iloc[:300], logical_date=day, source="test")
    ingest.write_status(settings, "GOOG", day, IngestStatus.PUBLISHED, "300 rows", hash=entry.hash)
    ingest.write_status(settings, "KO", day, IngestStatus.QUARANTINED, "2 of 41 expectations failed")
    ingest.write_status(settings, "PG", day, IngestStatus.HELD, "an extreme move", days=[day])
    ingest.write_status(settings, "JNJ", "2026-11-23", IngestStatus.PUBLISHED, "a later day's run", hash="j" * 64)
    outcome = ingest.day_outcome(settings, day, tickers, since=start)
    assert outcome["settled"] == {"GOOG": "published", "KO": "quarantined", "PG": "held",
                                  "JNJ": "superseded by 2026-11-23"}
    assert outcome["pending"] == ["MSFT"]  # never fetched: a fetch that failed for good leaves no outcome
    assert outcome["new"] == ["GOOG"]  # first published during the run
    # the same snapshot again, in a run that began after it was first published: nothing new to train on
    later = ingest.day_outcome(settings, day, tickers, since="2999-01-01T00:00:00+00:00")
    assert later["new"] == [] and later["settled"]["GOOG"] == "published"
