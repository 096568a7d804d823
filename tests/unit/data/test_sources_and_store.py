"""Price sources (yfinance at its boundary, CSV, replay) and the content-addressed snapshot store."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
import yfinance

from stockops.core.settings import get_settings
from stockops.data.sources import (
    COLUMNS,
    CsvSource,
    ReplaySource,
    SourceError,
    YFinanceSource,
    get_source,
    shipped_series,
)
from stockops.data.store import SnapshotStore, content_hash


def _day(frame: pd.DataFrame, i: int) -> date:
    return frame["Date"].iloc[i].date()


# ---- yfinance, patched at yfinance.download ------------------------------------------------

def _download_shape(rows: pd.DataFrame, ticker: str = "GOOG") -> pd.DataFrame:
    """What yfinance 1.x download() returns: (Price, Ticker) MultiIndex columns, Date index, no Adj Close."""
    body = rows.set_index("Date")[["Close", "High", "Low", "Open", "Volume"]]
    body.columns = pd.MultiIndex.from_product([body.columns, [ticker]], names=["Price", "Ticker"])
    return body


def _history_shape(rows: pd.DataFrame) -> pd.DataFrame:
    """What Ticker.history() returns: flat columns plus extras, tz-aware Date index."""
    body = rows.set_index("Date")[["Open", "High", "Low", "Close", "Volume"]].copy()
    body["Dividends"] = 0.0
    body["Stock Splits"] = 0.0
    body.index = body.index.tz_localize("America/New_York")
    return body


class FakeDownload:
    """Stands in for yfinance.download: plays back answers (frames or exceptions) and records calls."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer.copy()


def _yf(recorded: list, **kwargs) -> YFinanceSource:
    return YFinanceSource(sleep=lambda s: recorded.append(s), **kwargs)


def test_yfinance_download_multiindex_is_normalised(goog, monkeypatch):
    """A yfinance 1.x download() frame comes out as Date, Open, High, Low, Close, Volume with the same values."""
    rows = goog.iloc[100:160].reset_index(drop=True)
    fake = FakeDownload(_download_shape(rows))
    monkeypatch.setattr(yfinance, "download", fake)
    slept: list[float] = []
    result = _yf(slept).fetch("GOOG", _day(rows, -1))
    assert list(result.frame.columns) == COLUMNS
    pd.testing.assert_frame_equal(result.frame, rows)
    assert result.frame["Date"].dtype == "datetime64[ns]"
    assert result.source == "yfinance" and result.ticker == "GOOG"
    assert result.reference_date == _day(rows, -1)
    assert slept == [] and len(fake.calls) == 1
    args, kwargs = fake.calls[0]
    assert args[0] == "GOOG" and kwargs["auto_adjust"] is False  # the factor is judged here, not trusted
    assert _day(rows, -1) == date(2005, 4, 7)
    assert kwargs["end"] == "2005-04-08"  # yfinance's end is exclusive: the day after the logical date


def test_yfinance_download_picks_the_requested_ticker(goog, monkeypatch):
    """With two tickers in the columns, the requested one is taken."""
    rows = goog.iloc[:30].reset_index(drop=True)
    other = rows.assign(**{c: rows[c] * 10 for c in ["Open", "High", "Low", "Close"]})
    both = pd.concat([_download_shape(other, "MSFT"), _download_shape(rows, "GOOG")], axis=1)
    monkeypatch.setattr(yfinance, "download", FakeDownload(both))
    result = _yf([]).fetch("GOOG", _day(rows, -1))
    pd.testing.assert_frame_equal(result.frame, rows)


def test_yfinance_single_level_tz_aware_is_normalised(goog, monkeypatch):
    """Ticker.history()-style flat columns with a tz-aware index: same layout, naive midnight dates."""
    rows = goog.iloc[500:540].reset_index(drop=True)
    raw = _history_shape(rows)
    assert raw.index.tz is not None
    monkeypatch.setattr(yfinance, "download", FakeDownload(raw))
    result = _yf([]).fetch("GOOG", _day(rows, -1))
    assert list(result.frame.columns) == COLUMNS
    assert result.frame["Date"].dt.tz is None
    pd.testing.assert_frame_equal(result.frame, rows)


def test_yfinance_retries_after_an_error_with_backoff(goog, monkeypatch):
    """A connection error on attempt 1, data on attempt 2: one sleep of the base backoff."""
    rows = goog.iloc[:50].reset_index(drop=True)
    fake = FakeDownload(ConnectionError("reset by peer"), _download_shape(rows))
    monkeypatch.setattr(yfinance, "download", fake)
    slept: list[float] = []
    result = _yf(slept, attempts=3, backoff_s=1.5).fetch("GOOG", _day(rows, -1))
    assert len(fake.calls) == 2
    assert slept == [1.5]
    pd.testing.assert_frame_equal(result.frame, rows)


def test_yfinance_always_empty_raises_source_error(monkeypatch):
    """An empty answer on every attempt: SourceError naming the ticker and the attempt count."""
    fake = FakeDownload(pd.DataFrame())
    monkeypatch.setattr(yfinance, "download", fake)
    slept: list[float] = []
    with pytest.raises(SourceError) as info:
        _yf(slept, attempts=3, backoff_s=2.0).fetch("ZZZZ", date(2013, 3, 1))
    message = str(info.value)
    assert "'ZZZZ'" in message
    assert "after 3 attempts" in message
    assert "no rows" in message
    assert len(fake.calls) == 3
    assert slept == [2.0, 4.0]  # exponential backoff, no sleep after the last attempt


def test_yfinance_drops_rows_after_the_logical_date(goog, monkeypatch):
    """Rows newer than the logical date are cut even if Yahoo returns them."""
    rows = goog.iloc[:80].reset_index(drop=True)
    monkeypatch.setattr(yfinance, "download", FakeDownload(_download_shape(rows)))
    logical = _day(rows, 49)
    result = _yf([]).fetch("GOOG", logical)
    assert len(result.frame) == 50
    assert result.frame["Date"].max().date() == logical
    pd.testing.assert_frame_equal(result.frame, rows.iloc[:50])


# ---- csv -----------------------------------------------------------------------------------

def _write_csv(frame: pd.DataFrame, path) -> None:
    frame.to_csv(path, index=False, date_format="%Y-%m-%d")


def test_csv_with_adj_close_is_adjusted(goog, tmp_path):
    """OHLC are scaled by Adj Close / Close and Adj Close is dropped; Volume stays."""
    rows = goog.iloc[:200].reset_index(drop=True)
    raw = rows.copy()
    raw.insert(5, "Adj Close", raw["Close"] * 0.5)
    path = tmp_path / "goog.csv"
    _write_csv(raw, path)
    result = CsvSource(path).fetch("GOOG", _day(rows, -1))
    assert list(result.frame.columns) == COLUMNS
    for col in ["Open", "High", "Low", "Close"]:
        np.testing.assert_allclose(result.frame[col], rows[col] * 0.5, rtol=1e-12)
    assert (result.frame["Volume"] == rows["Volume"]).all()


def test_csv_without_adj_close_round_trips(goog, tmp_path):
    """A plain yfinance-format CSV comes back exactly."""
    rows = goog.iloc[:300].reset_index(drop=True)
    path = tmp_path / "goog.csv"
    _write_csv(rows, path)
    result = CsvSource(path).fetch("GOOG", _day(rows, -1))
    pd.testing.assert_frame_equal(result.frame, rows)
    assert result.reference_date == _day(rows, -1) and result.source == "csv"


def test_csv_excludes_rows_after_the_logical_date(goog, tmp_path):
    """Only rows up to and including the logical date are served."""
    path = tmp_path / "goog.csv"
    _write_csv(goog, path)
    logical = _day(goog, 99)
    result = CsvSource(path).fetch("GOOG", logical)
    assert len(result.frame) == 100 and result.frame["Date"].max().date() == logical


def test_csv_missing_file_raises_source_error(tmp_path):
    """No file: SourceError naming the path."""
    path = tmp_path / "nope.csv"
    with pytest.raises(SourceError, match="nope.csv"):
        CsvSource(path).fetch("GOOG", date(2010, 1, 4))


# ---- replay --------------------------------------------------------------------------------

START = "2026-01-05"  # a Monday


def test_replay_reveals_one_row_per_session(goog):
    """Monday..Friday: each NYSE session reveals exactly the next row of the real series."""
    source = ReplaySource(START, 100)
    days = pd.bdate_range(START, periods=5)
    frames = [source.fetch("GOOG", d).frame for d in days]
    sizes = [len(f) for f in frames]
    assert sizes == list(range(sizes[0], sizes[0] + 5))
    for f in frames:
        pd.testing.assert_frame_equal(f, goog.iloc[:len(f)].reset_index(drop=True))
    last = source.fetch("GOOG", days[-1])
    assert last.reference_date == _day(goog, len(last.frame) - 1)


def test_replay_start_day_knows_exactly_initial_days(goog):
    """On the start day exactly ``initial_days`` rows are known; the business day before, one fewer."""
    source = ReplaySource(START, 100)
    assert len(source.fetch("GOOG", START).frame) == 100
    assert len(source.fetch("GOOG", "2026-01-06").frame) == 101
    assert len(source.fetch("GOOG", "2026-01-02").frame) == 99  # the Friday before


def test_replay_saturday_is_the_same_as_friday(goog):
    """A weekend day reveals nothing new."""
    source = ReplaySource(START, 100)
    friday, saturday, monday = date(2026, 1, 9), date(2026, 1, 10), date(2026, 1, 12)
    fri, sat, mon = (source.fetch("GOOG", d) for d in (friday, saturday, monday))
    pd.testing.assert_frame_equal(fri.frame, sat.frame)
    assert sat.reference_date == fri.reference_date
    assert len(mon.frame) == len(fri.frame) + 1


def test_replay_note_says_replay():
    """The note makes clear this is not live data."""
    result = ReplaySource(START, 100).fetch("GOOG", START)
    assert result.note.startswith("REPLAY") and "not live data" in result.note
    assert result.source == "replay"


def test_replay_past_the_end_serves_the_whole_series(goog):
    """After the series runs out, every day serves all of it."""
    source = ReplaySource(START, len(goog) - 3)
    result = source.fetch("GOOG", "2027-06-01")
    pd.testing.assert_frame_equal(result.frame, goog)
    assert result.reference_date == _day(goog, -1)
    assert "exhausted" in result.note
    assert "exhausted" not in ReplaySource(START, 100).fetch("GOOG", START).note


def test_replay_an_nyse_holiday_reveals_nothing_new(goog):
    """Martin Luther King Jr. Day 2026 (Monday 19 January) is not a session: same data as the Friday before."""
    source = ReplaySource(START, 100)
    friday, holiday, tuesday = (source.fetch("GOOG", d) for d in ("2026-01-16", "2026-01-19", "2026-01-20"))
    pd.testing.assert_frame_equal(friday.frame, holiday.frame)
    assert len(tuesday.frame) == len(friday.frame) + 1


def test_replay_serves_every_shipped_ticker_and_names_what_it_has(settings):
    """The default replay covers the whole watchlist; a symbol it does not ship is a clear error."""
    source = get_source(settings)
    assert isinstance(source, ReplaySource)
    for ticker in settings.tickers:
        frame = source.fetch(ticker, settings.replay_start).frame
        assert len(frame) == settings.replay_initial_days
        pd.testing.assert_frame_equal(frame, shipped_series(ticker).iloc[:len(frame)])
    msft, goog = shipped_series("MSFT"), shipped_series("GOOG")
    assert (msft["Date"] == goog["Date"]).all() and not np.allclose(msft["Close"], goog["Close"])
    with pytest.raises(SourceError, match="AAPL") as info:
        source.fetch("AAPL", START)
    assert "GOOG" in str(info.value) and "STOCKOPS_CSV_PATH" in str(info.value)


def test_shipped_data_needs_nothing_outside_the_repository(settings):
    """The 18 series live in the repository (gzip CSV), all on the same 4,109 real trading days."""
    files = sorted(settings.shipped_prices_dir.glob("*.csv.gz"))
    assert [f.name.removesuffix(".csv.gz") for f in files] == sorted(settings.tickers)
    days = {len(shipped_series(t)) for t in settings.tickers}
    assert days == {4109}


def test_csv_folder_serves_each_ticker_its_own_file(goog, tmp_path, monkeypatch):
    """STOCKOPS_CSV_PATH may be a folder of <TICKER>.csv files; a missing one names the folder's tickers."""
    _write_csv(goog.iloc[:50], tmp_path / "GOOG.csv")
    _write_csv(shipped_series("KO").iloc[:60], tmp_path / "KO.csv")
    source = CsvSource(tmp_path)
    assert len(source.fetch("GOOG", date(2020, 1, 2)).frame) == 50
    assert len(source.fetch("KO", date(2020, 1, 2)).frame) == 60
    with pytest.raises(SourceError, match="no CSV for MSFT") as info:
        source.fetch("MSFT", date(2020, 1, 2))
    assert "GOOG, KO" in str(info.value)


def test_yfinance_fetches_the_watchlist_in_one_batch_and_splits_it(goog, monkeypatch):
    """One download for three tickers; a ticker Yahoo left empty (all NaN) is left out for a fetch of its own."""
    rows = goog.iloc[:40].reset_index(drop=True)
    ko = shipped_series("KO").iloc[:40].reset_index(drop=True)
    empty = rows.assign(**{c: np.nan for c in ["Open", "High", "Low", "Close", "Volume"]})
    batch = pd.concat([_download_shape(rows, "GOOG"), _download_shape(ko, "KO"), _download_shape(empty, "XYZ")],
                      axis=1)
    fake = FakeDownload(ConnectionError("reset"), batch)
    monkeypatch.setattr(yfinance, "download", fake)
    slept: list[float] = []
    results = _yf(slept, attempts=3, backoff_s=1.0).fetch_many(["GOOG", "KO", "XYZ"], _day(rows, -1))
    assert len(fake.calls) == 2 and fake.calls[1][0][0] == ["GOOG", "KO", "XYZ"] and slept == [1.0]
    assert sorted(results) == ["GOOG", "KO"]
    pd.testing.assert_frame_equal(results["GOOG"].frame, rows)
    pd.testing.assert_frame_equal(results["KO"].frame, ko)


def test_yfinance_batch_that_never_answers_leaves_every_ticker_to_its_own_fetch(monkeypatch):
    fake = FakeDownload(pd.DataFrame())
    monkeypatch.setattr(yfinance, "download", fake)
    assert _yf([], attempts=2).fetch_many(["GOOG", "KO"], date(2020, 1, 2)) == {}
    assert len(fake.calls) == 2


@pytest.mark.parametrize(("tickers", "ticker", "message"), [
    ("GOOG,,msft ko", None, None),
    ("GOOG,GOOG", None, "names a symbol twice"),
    ("GOOG", "MSFT", "not in the watchlist"),
    ("GOOG,../etc", None, "is not a symbol"),
])
def test_watchlist_setting(settings, monkeypatch, tickers, ticker, message):
    """STOCKOPS_TICKERS: comma or space separated, upper-cased; junk, repeats and a model ticker outside it are refused."""
    monkeypatch.setenv("STOCKOPS_TICKERS", tickers)
    if ticker:
        monkeypatch.setenv("STOCKOPS_TICKER", ticker)
    if message is None:
        current = get_settings()
        assert current.tickers == ("GOOG", "MSFT", "KO") and current.ticker == "GOOG"
        assert current.ticker_data_dir("KO") == current.home / "data" / "KO"
    else:
        with pytest.raises(ValueError, match=message):
            get_settings()


def test_default_watchlist_is_the_shipped_eighteen_and_goog_alone_works(settings, monkeypatch):
    assert len(settings.tickers) == 18 and settings.ticker == "GOOG"
    monkeypatch.setenv("STOCKOPS_TICKERS", "GOOG")
    assert get_settings().tickers == ("GOOG",)
    monkeypatch.setenv("STOCKOPS_TICKERS", "KO,PG")
    assert get_settings().ticker == "KO", "without STOCKOPS_TICKER the model follows the first symbol"


# ---- store ---------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    return SnapshotStore(tmp_path / "data" / "GOOG", "GOOG")


def _publish(store: SnapshotStore, frame: pd.DataFrame):
    return store.publish(frame, logical_date=_day(frame, -1).isoformat(), source="test")


def _manifest_lines(store: SnapshotStore) -> list[dict]:
    return [entry.hash for entry in store.entries()]


def test_content_hash_is_stable_and_sensitive(goog, store):
    """Same data, same hash (also after a publish/load round trip); one changed value, new hash."""
    frame = goog.iloc[:300].reset_index(drop=True)
    digest = content_hash(frame)
    assert len(digest) == 64
    assert content_hash(frame.copy()) == digest
    entry, _ = _publish(store, frame)
    assert entry.hash == digest
    assert content_hash(store.load(entry)) == digest
    changed = frame.copy()
    changed.loc[150, "Close"] += 0.01
    assert content_hash(changed) != digest


def test_publish_is_idempotent(goog, store):
    """The same frame twice: the second publish is not new and the manifest has one line."""
    frame = goog.iloc[:300].reset_index(drop=True)
    first, new1 = _publish(store, frame)
    second, new2 = _publish(store, frame)
    assert (new1, new2) == (True, False)
    assert second == first
    assert len(_manifest_lines(store)) == 1
    assert len(list((store.root / "snapshots").glob("*.parquet"))) == 1


def test_latest_moves_forward_only(goog, store):
    """latest follows newer data; a backfill of an older snapshot does not move it back."""
    old, mid, new = (goog.iloc[:n].reset_index(drop=True) for n in (100, 150, 200))
    e_old, _ = _publish(store, old)
    assert store.latest().hash == e_old.hash
    e_new, _ = _publish(store, new)
    assert store.latest().hash == e_new.hash
    e_mid, is_new = _publish(store, mid)
    assert is_new
    assert store.latest().hash == e_new.hash
    assert [e.hash for e in store.entries()] == [e_old.hash, e_new.hash, e_mid.hash]
    pd.testing.assert_frame_equal(store.load(), new)


def _crash_on_latest(monkeypatch):
    """The process dies as the pointer moves: inside the publish's transaction, after its manifest record."""
    from stockops.storage.records import Transaction

    real_put = Transaction.put

    def put(self, name, value, expect_version=None):
        if name.endswith("/latest"):
            raise OSError("simulated crash while moving the latest pointer")
        return real_put(self, name, value, expect_version)

    monkeypatch.setattr(Transaction, "put", put)


def test_crash_during_pointer_write_keeps_the_old_pointer_and_manifest(goog, store, monkeypatch):
    """A failure as the pointer moves rolls the manifest record back with it: the pointer and the manifest stay as
    they were (the checked blob is there, named by no record), and no temporary file is left."""
    first, _ = _publish(store, goog.iloc[:100].reset_index(drop=True))
    _crash_on_latest(monkeypatch)
    newer = goog.iloc[:200].reset_index(drop=True)
    with pytest.raises(OSError, match="simulated crash"):
        _publish(store, newer)
    assert store.latest() == first
    assert [e.hash for e in store.entries()] == [first.hash]
    assert store.snapshot_path(content_hash(newer)).exists()
    assert [p.name for p in store.root.rglob("*.tmp")] == []


def test_retry_after_pointer_crash_moves_latest(goog, store, monkeypatch):
    """After a crash as the pointer moves, publishing again finishes it: one record, the pointer on it."""
    _publish(store, goog.iloc[:100].reset_index(drop=True))
    newer = goog.iloc[:200].reset_index(drop=True)
    with monkeypatch.context() as patch:
        _crash_on_latest(patch)
        with pytest.raises(OSError):
            _publish(store, newer)
    entry, new = _publish(store, newer)
    assert new and store.latest() == entry and entry.hash == content_hash(newer)
    assert len(_manifest_lines(store)) == 2


def test_load_detects_a_modified_snapshot(goog, store):
    """Rewriting a snapshot's parquet with one changed value makes load() refuse it."""
    frame = goog.iloc[:100].reset_index(drop=True)
    entry, _ = _publish(store, frame)
    tampered = frame.copy()
    tampered.loc[50, "Close"] *= 1.01
    tampered.to_parquet(store.snapshot_path(entry.hash), index=False)
    with pytest.raises(ValueError, match=entry.hash):
        store.load()


def test_the_content_hash_is_pandas_canonical_text_however_it_is_computed(goog):
    """The numpy path writes exactly what ``to_csv`` writes (published snapshots are named by it): NaN, float
    volumes, no rows, and a column it does not know (text: pandas' own path) included."""
    import hashlib

    import numpy as np

    from stockops.model.portable.snapshot import _canonical_fast, content_hash

    with_nan = goog.iloc[:300].copy()
    with_nan.loc[7, "Close"] = np.nan
    float_volume = goog.iloc[:300].assign(Volume=goog["Volume"].iloc[:300].astype("float64") + 0.5)
    text = goog.iloc[:50].assign(Close=goog["Close"].iloc[:50].astype(str))
    for frame in (goog, with_nan, float_volume, goog.iloc[:0], text):
        canonical = frame.to_csv(index=False, date_format="%Y-%m-%d", float_format="%.10g", lineterminator="\n")
        assert content_hash(frame) == hashlib.sha256(canonical.encode()).hexdigest()
    assert _canonical_fast(goog) is not None and _canonical_fast(text) is None


def test_history_start_applies_to_every_source(tmp_path, goog):
    """A user starts the history later for the csv and replay sources too (AAPL's full Yahoo history has a null row
    from 1981: starting in 2004 never judges it)."""
    from stockops.core.settings import make_settings
    from stockops.data.sources import get_source

    goog.to_csv(tmp_path / "GOOG.csv", index=False, date_format="%Y-%m-%d")
    for source in ("csv", "replay"):
        settings = make_settings(home=tmp_path / source, source=source, csv_path=tmp_path, history_start="2010-01-04",
                                 replay_start="2026-01-02", replay_initial_days=100)
        frame = get_source(settings).fetch("GOOG", "2026-01-02" if source == "replay" else "2012-12-31").frame
        assert frame["Date"].iloc[0] == pd.Timestamp("2010-01-04"), source
    replay = get_source(make_settings(home=tmp_path / "r", history_start="2010-01-04", replay_start="2026-01-02",
                                      replay_initial_days=100)).fetch("GOOG", "2026-01-02").frame
    assert replay["Date"].iloc[0] == pd.Timestamp("2010-01-04") and len(replay) == 100
