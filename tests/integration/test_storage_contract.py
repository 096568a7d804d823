"""One contract, both backends of each store: records on SQLite and on a real PostgreSQL server, blobs in a local
folder and on a real S3 server (``rclone serve s3``). Write and read back, a writer killed midway (SIGKILL, a real
process), concurrent writers (real processes), and locks across processes.

PostgreSQL is the machine's server (127.0.0.1:5432): each run gets its own database, dropped afterwards; skipped
with the reason where it cannot be reached.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stockops.launch.cluster import POSTGRES_ADMIN_DSN, _admin, database_dsn, unreachable_services
from stockops.launch.objectstore import ObjectStoreServer
from stockops.storage import BlobStore, LockTimeout, StateStore, VersionConflict

pytestmark = pytest.mark.integration


# ---- the backends -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def postgres_url():
    missing = [p for p in unreachable_services() if p.startswith("PostgreSQL")]
    if missing:
        pytest.skip(missing[0])
    name = f"stockops_contract_{secrets.token_hex(4)}"
    _admin(f"CREATE DATABASE {name}")
    yield database_dsn(name, "postgresql+psycopg2")
    from stockops.storage.records import _ENGINES

    for key in [k for k in _ENGINES if name in k[1]]:
        _ENGINES.pop(key).dispose()
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", POSTGRES_ADMIN_DSN)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    # one database for the module; each test its own names (a prefix), so tests do not see each other's rows
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def ns(request) -> str:
    """A name prefix of this test's own: the PostgreSQL database is shared by the module's tests."""
    return f"t{secrets.token_hex(4)}/"


@pytest.fixture(scope="module")
def object_store(tmp_path_factory):
    server = ObjectStoreServer(tmp_path_factory.mktemp("s3"), log_path=tmp_path_factory.mktemp("s3log") / "rclone.log")
    server.start(buckets=["contract"])
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
def blob_env(request, tmp_path, monkeypatch) -> tuple[str, dict[str, str]]:
    """A blob store URL and the environment that reaches it (a fresh prefix per test)."""
    if request.param == "local":
        return str(tmp_path / "blobs"), {}
    server = request.getfixturevalue("object_store")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://contract/{secrets.token_hex(4)}", server.env()


def _child(code: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A real process running ``code`` (stdout piped: it says ``ready`` when it reached the point to kill it)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _wait_ready(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == "ready":
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"the child exited with {proc.returncode} before it was ready")
    raise AssertionError("the child was not ready in time")


# ---- records ------------------------------------------------------------------------------------------
def test_records_write_and_read_back(state_url, ns):
    store = StateStore(state_url)
    assert store.read(ns + "log") == [] and store.get(ns + "p") is None
    assert store.append(ns + "log", {"n": 1}) and store.append(ns + "log", {"n": 2}, key="b")
    assert not store.append(ns + "log", {"n": 3}, key="b"), "a key already in the log adds nothing"
    assert store.read(ns + "log") == [{"n": 1}, {"n": 2}]
    assert store.find(ns + "log", "b") == {"n": 2} and store.find(ns + "log", "c") is None
    assert store.logs(ns) == [ns + "log"]
    ids = [i for i, _ in store.read_with_ids(ns + "log")]
    assert store.read(ns + "log", after_id=ids[0]) == [{"n": 2}]

    assert store.put(ns + "p", {"hash": "a"}) == 1
    assert store.put(ns + "p", {"hash": "b"}, expect_version=1) == 2
    with pytest.raises(VersionConflict, match="no longer at version 1"):
        store.put(ns + "p", {"hash": "c"}, expect_version=1)
    with pytest.raises(VersionConflict, match="created by another writer"):
        store.put(ns + "p", {"hash": "c"}, expect_version=0)
    pointer = store.get(ns + "p")
    assert pointer is not None and (pointer.version, pointer.value) == (2, {"hash": "b"})
    assert set(store.get_many([ns + "p", ns + "q"])) == {ns + "p"}
    assert [p.name for p in store.pointers(ns)] == [ns + "p"]
    # names are text, not patterns: a prefix with LIKE's wildcards matches only itself
    store.put(ns + "a_b", 1)
    store.put(ns + "axb", 1)
    assert [p.name for p in store.pointers(ns + "a_")] == [ns + "a_b"]
    assert store.delete(ns + "axb") and not store.delete(ns + "axb") and store.get(ns + "axb") is None


def test_a_transaction_commits_whole_or_not_at_all(state_url, ns):
    store = StateStore(state_url)
    with pytest.raises(RuntimeError, match="midway"):
        with store.transaction() as tx:
            tx.append(ns + "manifest", {"hash": "h1"}, key="h1")
            tx.put(ns + "latest", {"hash": "h1"})
            raise RuntimeError("midway")
    assert store.read(ns + "manifest") == [] and store.get(ns + "latest") is None
    with store.transaction() as tx:
        tx.append(ns + "manifest", {"hash": "h1"}, key="h1")
        tx.put(ns + "latest", {"hash": "h1"})
    assert store.read(ns + "manifest") == [{"hash": "h1"}] and store.get(ns + "latest").value == {"hash": "h1"}


@pytest.mark.faults
def test_a_writer_killed_inside_its_transaction_leaves_nothing(state_url, ns):
    """SIGKILL after 500 appends and a pointer move, before the commit: none of it is seen, and the store (its
    write lock included) serves the next writer at once."""
    store = StateStore(state_url)
    store.put(ns + "latest", {"hash": "old"})
    child = _child(f"""
        import time
        from stockops.storage import StateStore
        store = StateStore({state_url!r})
        with store.transaction() as tx:
            for i in range(500):
                tx.append({ns + 'manifest'!r}, {{"i": i}}, key=str(i))
            tx.put({ns + 'latest'!r}, {{"hash": "new"}})
            print("ready", flush=True)
            time.sleep(60)
    """)
    try:
        _wait_ready(child)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert store.read(ns + "manifest") == []
    assert store.get(ns + "latest").value == {"hash": "old"}
    started = time.monotonic()
    assert store.append(ns + "manifest", {"i": 0}, key="0")
    assert time.monotonic() - started < 5, "the dead writer's lock held the next one up"


@pytest.mark.faults
def test_concurrent_writers_lose_nothing_and_duplicate_nothing(state_url, ns):
    """Two processes append the same 150 keyed records and 150 of their own, write one new pointer 60 times each,
    and each adds 1 to a counter 60 times by compare-and-set: every record once, no write and no increment lost."""
    code = f"""
        import sys
        from stockops.storage import StateStore, VersionConflict
        store = StateStore({state_url!r})
        me = sys.argv[1]
        print("ready", flush=True)
        for i in range(150):
            store.append({ns + 'log'!r}, {{"key": f"shared{{i}}", "by": me}}, key=f"shared{{i}}")
            store.append({ns + 'log'!r}, {{"key": f"{{me}}{{i}}", "by": me}})
        for i in range(60):  # unconditional writes, the first of them racing the other process's first
            store.put({ns + 'plain'!r}, {{"by": me, "i": i}})
        done = 0
        while done < 60:
            with store.transaction() as tx:
                pointer = tx.get({ns + 'counter'!r})
                try:
                    tx.put({ns + 'counter'!r}, (pointer.value if pointer else 0) + 1,
                           expect_version=pointer.version if pointer else 0)
                except VersionConflict:
                    continue
            done += 1
    """
    children = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), who], stdout=subprocess.PIPE,
                                 text=True) for who in ("a", "b")]
    for child in children:
        assert child.wait(120) == 0
    records = StateStore(state_url).read(ns + "log")
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 150 + 2 * 150
    assert StateStore(state_url).get(ns + "counter").value == 120
    assert StateStore(state_url).get(ns + "plain").version == 120, "an unconditional write never conflicts"


@pytest.mark.faults
def test_a_lock_excludes_other_processes_and_dies_with_its_holder(state_url, ns):
    store = StateStore(state_url)
    holder = _child(f"""
        import time
        from stockops.storage import StateStore
        with StateStore({state_url!r}).lock({ns + 'deploy'!r}):
            print("ready", flush=True)
            time.sleep(60)
    """)
    try:
        _wait_ready(holder)
        with pytest.raises(LockTimeout, match="deploy"):
            with store.lock(ns + "deploy", timeout_s=0.3):
                pass
        with store.lock(ns + "other", timeout_s=1):  # another name is another lock
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        started = time.monotonic()
        with store.lock(ns + "deploy", timeout_s=10):
            waited = time.monotonic() - started
    finally:
        if holder.poll() is None:
            holder.kill()
    assert waited < 3, f"the dead holder's lock took {waited:.1f} s to go"


# ---- blobs --------------------------------------------------------------------------------------------
def test_blobs_write_and_read_back(blob_env):
    url, _ = blob_env
    blobs = BlobStore(url)
    assert not blobs.exists("data/GOOG/snapshots/a.parquet") and blobs.keys("data/") == []
    with pytest.raises(FileNotFoundError, match="no blob data/GOOG/snapshots/a.parquet"):
        blobs.get("data/GOOG/snapshots/a.parquet")
    digest = blobs.put_verified("data/GOOG/snapshots/a.parquet", b"rows" * 1000)
    assert blobs.put_verified("data/GOOG/snapshots/a.parquet", b"rows" * 1000) == digest
    blobs.put("data/KO/quarantine/x/data.csv", b"a,b\n")
    assert blobs.get("data/GOOG/snapshots/a.parquet") == b"rows" * 1000 and blobs.sha256("data/KO/quarantine/x/"
                                                                                        "data.csv") is not None
    assert blobs.keys("data/") == ["data/GOOG/snapshots/a.parquet", "data/KO/quarantine/x/data.csv"]
    blobs.delete("data/KO/quarantine/x/data.csv")
    blobs.delete("data/KO/quarantine/x/data.csv")  # twice: gone is gone
    assert blobs.keys("data/KO/") == []
    for bad in ("/etc/passwd", "data/../../x", ""):
        with pytest.raises(ValueError, match="relative path"):
            blobs.put(bad, b"x")


def test_a_remote_blob_is_fetched_once_into_the_cache(blob_env, tmp_path):
    url, _ = blob_env
    blobs = BlobStore(url, cache_dir=tmp_path / "cache")
    digest = blobs.put_verified("bentos/v3.bento", b"bento" * 100)
    path = blobs.fetch("bentos/v3.bento", digest)
    assert path.read_bytes() == b"bento" * 100
    if not blobs.is_local:
        assert path.parent == tmp_path / "cache"
        mtime = path.stat().st_mtime_ns
        assert blobs.fetch("bentos/v3.bento", digest).stat().st_mtime_ns == mtime, "downloaded again"


@pytest.mark.faults
def test_a_put_killed_midway_leaves_no_partial_blob(blob_env):
    """A writer killed while it streams 48 MB: the key then holds nothing, or (never seen, but allowed) the whole
    blob; never a part of it."""
    url, env = blob_env
    data_size = 48 * 1024 * 1024
    child = _child(f"""
        import threading, os, time
        from stockops.storage import BlobStore
        blobs = BlobStore({url!r})
        threading.Timer(0.0, lambda: print("ready", flush=True)).start()
        blobs.put("big/blob.bin", os.urandom(16) * ({data_size} // 16))
        time.sleep(60)
    """, env)
    try:
        _wait_ready(child)
        time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    blobs = BlobStore(url)
    try:
        size = len(blobs.get("big/blob.bin"))
    except FileNotFoundError:
        size = 0
    assert size in (0, data_size)
    if blobs.is_local:  # what the killed writer left half-written is a temporary file, which the next writer drops
        blobs.remove_partial("big")
        assert [p.name for p in Path(url, "big").glob("*")] in ([], ["blob.bin"]), "a temporary file was left"


@pytest.mark.faults
def test_concurrent_puts_of_one_content_addressed_blob(blob_env):
    """Two processes publishing the same snapshot at once: both succeed, the blob is whole."""
    url, env = blob_env
    code = f"""
        from stockops.storage import BlobStore
        BlobStore({url!r}).put_verified("data/GOOG/snapshots/same.parquet", bytes(range(256)) * 20000)
    """
    children = [_child(code, env) for _ in range(2)]
    for child in children:
        assert child.wait(60) == 0
    assert BlobStore(url).get("data/GOOG/snapshots/same.parquet") == bytes(range(256)) * 20000
