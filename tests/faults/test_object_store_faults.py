"""The distributed stores under a dying object store: publishes to PostgreSQL and a real S3 server
(``rclone serve s3``) that is killed (SIGKILL) and restarted again and again while they run, with a reader
loading ``latest`` all along. No half snapshot is ever ``latest`` or listed; a publish the client's retries did not
carry through fails, and running it again finishes it, once."""

from __future__ import annotations

import random
import secrets
import threading
import time

import pytest

from stockops.data.store import SnapshotStore
from stockops.launch.cluster import _admin, database_dsn, unreachable_services
from stockops.launch.objectstore import ObjectStoreServer
from stockops.model.portable.snapshot import content_hash
from stockops.storage import BlobStore, StateStore

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.fixture
def distributed(tmp_path, monkeypatch):
    missing = [p for p in unreachable_services() if p.startswith("PostgreSQL")]
    if missing:
        pytest.skip(missing[0])
    server = ObjectStoreServer(tmp_path / "s3").start(buckets=["stockops"])
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    name = f"stockops_faults_{secrets.token_hex(4)}"
    _admin(f"CREATE DATABASE {name}")
    url = database_dsn(name, "postgresql+psycopg2")
    yield server, url
    server.stop()
    from stockops.storage.records import _ENGINES

    for key in [k for k in _ENGINES if name in k[1]]:
        _ENGINES.pop(key).dispose()
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_an_object_store_killed_mid_publish_never_leaves_a_half_snapshot_latest(distributed, goog, tmp_path):
    server, url = distributed
    store = SnapshotStore(tmp_path / "data" / "GOOG", "GOOG", StateStore(url), BlobStore("s3://stockops/home"))
    # large enough (about 0.2-0.6 MB each) that a kill lands inside an upload now and then
    frames = [goog.iloc[: 2000 + 60 * i].reset_index(drop=True) for i in range(30)]
    stop, seen, half, publishing, kills = threading.Event(), [], [], threading.Event(), []

    def kill_and_restart() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            time.sleep(rng.uniform(0.05, 0.25))
            busy = publishing.is_set()
            server.kill()
            kills.append(busy)
            time.sleep(rng.uniform(0.0, 0.1))
            server.start()

    def read_latest() -> None:
        while not stop.is_set():
            try:
                latest = store.latest()
                if latest is not None:
                    frame = store.load(latest)
                    seen.append(latest.hash)
                    if content_hash(frame) != latest.hash:
                        half.append(latest.hash)
            except Exception as exc:  # noqa: BLE001 - the store is down: fine; a damaged snapshot: not
                if "does not match its hash" in str(exc) or "ArrowInvalid" in str(exc):
                    half.append(str(exc))
            time.sleep(0.01)

    threads = [threading.Thread(target=kill_and_restart), threading.Thread(target=read_latest)]
    for thread in threads:
        thread.start()
    failed = []
    try:
        for day, frame in enumerate(frames):
            publishing.set()
            try:
                store.publish(frame, logical_date=f"2026-02-{day + 1:02d}", source="test")
            except Exception as exc:  # noqa: BLE001 - the object store died under it: run again below
                failed.append((day, frame, type(exc).__name__))
            finally:
                publishing.clear()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        server.start()
    assert not half, f"a half snapshot was read as latest: {half[:3]}"
    assert sum(kills) >= 5, f"the object store was killed only {sum(kills)} times during a publish: too few to prove it"
    assert seen, "the reader never loaded a snapshot"
    listed = [entry.hash for entry in store.entries()]
    assert store.latest() is None or store.latest().hash in listed
    for entry in store.entries():
        assert content_hash(store.load(entry)) == entry.hash
    for day, frame, _ in failed:  # what the task's retry does
        store.publish(frame, logical_date=f"2026-02-{day + 1:02d}", source="test")
    assert sorted(e.hash for e in store.entries()) == sorted({content_hash(f) for f in frames}), "lost or doubled"
    assert store.latest().hash == content_hash(frames[-1])
    print(f"{sum(kills)} kills during publishes; {len(failed)} of {len(frames)} publishes failed (the client's "
          "retries absorb the others) "
          f"({sorted({kind for *_, kind in failed})}); the reader loaded latest {len(seen)} times")
