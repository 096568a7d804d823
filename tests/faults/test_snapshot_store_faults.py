"""The snapshot store under crashes and corruption, on real files, real ingests and real killed processes.

A publish is killed (SIGKILL, in a child process running the real ``publish_validated``) at each of its
steps: the store stays consistent (every manifest record names a whole snapshot, ``latest`` names a
listed one) and the next run finishes the publish, once. Corrupt state raises ``CorruptState`` naming
the file and the way out, and following the way out works.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys

import pytest

from stockops.contracts import IngestRequest, IngestStatus, Published, Validated
from stockops.core import pointers
from stockops.core.settings import Settings
from stockops.data import store_for
from stockops.data.store import CorruptState, SnapshotStore
from stockops.ingest import (
    fetch_prices,
    ingest_day,
    publish_validated,
    read_status,
    validate_raw,
    watchlist_status,
)

pytestmark = pytest.mark.faults
DAY_1, DAY_2 = "2026-01-02", "2026-01-05"

# Runs publish_validated(<a Validated as JSON, in a file>) and SIGKILLs itself at the named step of the publish.
CHILD = r"""
import json, os, signal, sys
from pathlib import Path

from stockops.contracts import Validated
from stockops.core.settings import get_settings
from stockops.ingest import publish_validated
from stockops.storage import BlobStore
from stockops.storage.records import Transaction

step, validated = sys.argv[1], Validated.from_xcom(json.loads(Path(sys.argv[2]).read_text()))
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
replace, put_verified, append, put = os.replace, BlobStore.put_verified, Transaction.append, Transaction.put

def killing_replace(src, dst):
    if step == "snapshot written, not renamed" and Path(dst).suffix == ".parquet":
        die()
    replace(src, dst)

def killing_put_verified(self, key, data):
    digest = put_verified(self, key, data)
    if step == "snapshot checked, not recorded":
        die()
    return digest

def killing_append(self, log, entry, key=None):
    new = append(self, log, entry, key)
    if step == "manifest record written, not committed":
        die()
    return new

def killing_put(self, name, value, expect_version=None):
    version = put(self, name, value, expect_version)
    if step == "pointer moved, not committed":
        die()
    return version

os.replace, BlobStore.put_verified, Transaction.append, Transaction.put = (
    killing_replace, killing_put_verified, killing_append, killing_put)
publish_validated(validated, settings=get_settings())  # the child's home: STOCKOPS_HOME
print("the publish was not killed")
"""
STEPS = ["snapshot written, not renamed", "snapshot checked, not recorded", "manifest record written, not committed",
         "pointer moved, not committed"]


def validated_day(settings: Settings, day: str, ticker: str = "GOOG") -> Validated:
    return validate_raw(fetch_prices(IngestRequest(ticker=ticker, logical_date=day), settings=settings),
                        settings=settings)


def published_day(settings: Settings, day: str, ticker: str = "GOOG") -> Published:
    published = ingest_day(day, ticker, settings=settings)
    assert isinstance(published, Published), published
    return published


def assert_consistent(store: SnapshotStore) -> None:
    """Every listed snapshot is whole and listed once; ``latest`` is one of them."""
    hashes = [entry.hash for entry in store.entries()]
    assert len(hashes) == len(set(hashes)), "a snapshot is listed twice"
    for entry in store.entries():
        store.load(entry)  # raises if the file is missing, unreadable or not the listed data
    latest = store.latest()
    assert latest is None or latest.hash in hashes


@pytest.mark.parametrize("step", STEPS)
def test_a_publish_killed_at_any_step_leaves_a_consistent_store_and_the_rerun_finishes_it(settings, tmp_path, step):
    store = store_for(settings, "GOOG")
    first = published_day(settings, DAY_1).entry
    validated = validated_day(settings, DAY_2)
    (tmp_path / "validated.json").write_text(json.dumps(validated.to_xcom()))

    child = subprocess.run([sys.executable, "-c", CHILD, step, str(tmp_path / "validated.json")],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr[-3000:]

    assert_consistent(store)
    assert store.latest().hash == first.hash, "latest moved to a snapshot whose publish did not finish"
    published = publish_validated(validated, settings=settings)  # what the task's retry does
    assert isinstance(published, Published) and published.latest
    assert [e.hash for e in store.entries()] == [first.hash, validated.hash]
    assert store.latest().hash == validated.hash
    assert_consistent(store)
    assert [p.name for p in store.root.rglob("*.tmp")] == [], "a killed publish's temporary file was left behind"
    again = publish_validated(validated, settings=settings)
    assert isinstance(again, Published) and again.new is False
    assert len(store.entries()) == 2


def test_a_truncated_snapshot_names_the_file_and_a_reingest_writes_it_back(settings):
    store = store_for(settings, "GOOG")
    first = published_day(settings, DAY_1).entry
    path = store.snapshot_path(first.hash)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptState) as raised:
        store.load()
    message = str(raised.value)
    assert message.startswith(f"{path} is unreadable (") and "ArrowInvalid" in message
    assert "restore it from a backup, or re-ingest GOOG for 2026-01-02" in message
    with pytest.raises(CorruptState, match=str(path)):
        ingest_day(DAY_2, "GOOG", settings=settings)  # validating against the published data needs it

    again = published_day(settings, DAY_1)  # the way out: re-ingest its day, which writes the same data back
    assert again.entry.hash == first.hash and not again.new
    assert_consistent(store)
    assert published_day(settings, DAY_2).latest


def test_a_silently_changed_snapshot_is_caught_by_its_hash(settings, goog):
    """Readable Parquet with other data under a snapshot's name: the hash (the name) catches it."""
    store = store_for(settings, "GOOG")
    first = published_day(settings, DAY_1).entry
    frame = store.load()
    frame.loc[10, "Close"] *= 1.01
    frame.to_parquet(store.snapshot_path(first.hash), index=False)
    with pytest.raises(CorruptState, match=f"does not match its hash {first.hash}") as raised:
        store.load()
    assert raised.value.path == store.snapshot_path(first.hash)


def test_a_corrupt_status_file_is_named_never_hides_other_tickers_and_the_next_ingest_replaces_it(
        settings, monkeypatch, caplog):
    monkeypatch.setenv("STOCKOPS_TICKERS", "GOOG,MSFT")
    ingest_day(DAY_1, "GOOG", settings=settings)
    ingest_day(DAY_1, "MSFT", settings=settings)
    status = settings.ticker_data_dir("GOOG") / "status.json"
    pointers.write(status, {"ticker": "GOOG", "logical_da": 1})  # a record of another shape (an older version's)
    with pytest.raises(CorruptState, match=f"{status} is unreadable .*delete it, or re-ingest GOOG"):
        read_status(settings, "GOOG")
    with caplog.at_level(logging.WARNING):
        rows = {row.ticker: row for row in watchlist_status(settings)}
    assert rows["GOOG"].status is IngestStatus.UNREADABLE and str(status) in rows["GOOG"].detail
    assert rows["MSFT"].status is IngestStatus.PUBLISHED
    assert str(status) in caplog.text

    ingest_day(DAY_2, "GOOG", settings=settings)
    assert read_status(settings, "GOOG").logical_date == DAY_2
