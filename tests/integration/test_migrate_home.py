"""``python -m stockops migrate-home`` on a home written by the file store (issue 28's code: ``tests/fixtures/
home-issue28.tar.gz``, two tickers, three snapshots each, KO's manifest ending in a torn line), as a real process:
into the embedded stores, and into PostgreSQL with the blobs on a real S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from stockops.core.settings import make_settings
from stockops.data import store_for

pytestmark = pytest.mark.integration
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "home-issue28.tar.gz"


def old_home(tmp_path: Path) -> Path:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "home"


def migrate(home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stockops", "migrate-home"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "STOCKOPS_HOME": str(home), **(env or {})})


def expected(home: Path, ticker: str) -> tuple[list[str], str]:
    """The hashes the old manifest lists (whole lines) and the hash its pointer names."""
    lines = (home / "data" / ticker / "manifest.jsonl").read_text().splitlines()
    hashes = []
    for line in lines:
        try:
            hashes.append(json.loads(line)["hash"])
        except ValueError:
            pass
    return hashes, json.loads((home / "data" / ticker / "latest.json").read_text())["hash"]


def check_migrated(settings, before: dict) -> None:
    for ticker, (hashes, latest) in before.items():
        store = store_for(settings, ticker)
        assert [e.hash for e in store.entries()] == hashes
        assert store.latest().hash == latest
        for entry in store.entries():
            assert len(store.load(entry)) == entry.rows
        folder = settings.home / "data" / ticker
        assert not (folder / "manifest.jsonl").exists() and (folder / "manifest.jsonl.migrated").exists()


def test_an_older_home_migrates_into_the_embedded_stores_once(tmp_path):
    home = old_home(tmp_path)
    before = {t: expected(home, t) for t in ("GOOG", "KO")}
    assert len(before["KO"][0]) == 3, "the torn fourth line is not a record"
    done = migrate(home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "migrated 2 ticker(s): 6 snapshot record(s), 2 pointer(s)" in done.stdout
    assert "manifest.jsonl line 4 is not a whole JSON record" in done.stderr, "the torn line is named"
    assert "1 log(s): 1 record(s)" in done.stdout
    settings = make_settings(home=home)
    check_migrated(settings, before)
    from stockops.core import audit

    assert [e["event"] for e in audit.read(settings.audit_log)] == ["promoted"], "the audit log is a log of records"
    assert not settings.audit_log.exists() and settings.audit_log.with_name("audit.jsonl.migrated").exists()
    again = migrate(home)
    assert again.returncode == 0 and "migrated 0 ticker(s)" in again.stdout
    check_migrated(settings, before)
    # the platform goes on from the migrated store: a backfill is appended after the old records
    store = store_for(settings, "GOOG")
    frame = store.load()
    entry, new = store.publish(frame.iloc[:150], logical_date="2026-01-07", source="replay")
    assert new and store.latest().hash == before["GOOG"][1], "an older snapshot does not move latest back"


def test_an_older_home_migrates_into_postgresql_and_s3(tmp_path, request):
    from stockops.launch.cluster import _admin, database_dsn, unreachable_services
    from stockops.launch.objectstore import ObjectStoreServer

    missing = [p for p in unreachable_services() if p.startswith("PostgreSQL")]
    if missing:
        pytest.skip(missing[0])
    home = old_home(tmp_path)
    before = {t: expected(home, t) for t in ("GOOG", "KO")}
    damaged = home / "data" / "KO" / "snapshots" / f"{before['KO'][0][0]}.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])  # a listed snapshot damaged before the migration
    server = ObjectStoreServer(tmp_path / "s3").start(buckets=["stockops"])
    request.addfinalizer(server.stop)
    name = f"stockops_migrate_{os.getpid()}"
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _admin(f"CREATE DATABASE {name}")
    request.addfinalizer(lambda: _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    env = {**server.env(), "STOCKOPS_STATE_DB": database_dsn(name, "postgresql+psycopg2"),
           "STOCKOPS_BLOB_URL": "s3://stockops/home"}
    done = migrate(home, env)
    assert done.returncode == 1, "a snapshot that was not migrated is an error the summary names"
    assert f"not migrated: KO {before['KO'][0][0][:12]}" in done.stdout and "cannot be read" in done.stdout
    for key, value in env.items():
        os.environ[key] = value
    try:
        settings = make_settings(home=home, state_db=env["STOCKOPS_STATE_DB"], blob_url=env["STOCKOPS_BLOB_URL"])
        check_migrated(settings, {"GOOG": before["GOOG"], "KO": (before["KO"][0][1:], before["KO"][1])})
        assert sorted(p.name for p in (tmp_path / "s3" / "stockops" / "home" / "data" / "GOOG" / "snapshots")
                      .iterdir()) == sorted(f"{h}.parquet" for h in before["GOOG"][0]), "the blobs are on S3"
        from stockops.storage.records import _ENGINES

        for key in [k for k in _ENGINES if name in k[1]]:
            _ENGINES.pop(key).dispose()
    finally:
        for key in env:
            os.environ.pop(key, None)


def test_make_run_moves_an_older_home_into_the_stores_before_it_starts(tmp_path, capsys):
    """``make run`` on a home an older stockops wrote: its launcher migrates it first, saying so, once."""
    from stockops.launch.local import LocalPlatform

    home = old_home(tmp_path)
    before = {t: expected(home, t) for t in ("GOOG", "KO")}
    platform = LocalPlatform(make_settings(home=home))
    platform.migrate_older_home()
    said = capsys.readouterr().out
    assert "moving them into the stores" in said and "migrated 2 ticker(s): 6 snapshot record(s)" in said
    check_migrated(platform.settings, before)
    platform.migrate_older_home()
    assert capsys.readouterr().out == "", "a migrated home is left as it is"
