"""make run's Airflow opens its SQLite metadata DB with a 30 s busy timeout (a click on Trigger while tasks write
waited 5 s and got a 500); the Celery platform's PostgreSQL is not given SQLite's arguments."""

from __future__ import annotations

import subprocess

from stockops.core.processes import venv_bin
from stockops.launch.local import LocalPlatform


def test_the_local_platform_gives_airflow_a_sqlite_busy_timeout_it_reads(tmp_path, settings):
    env = LocalPlatform(settings, port=18080, mlflow_port=15000).env()
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] == "stockops.core.airflow_db.CONNECT_ARGS"
    # Airflow builds its engine with this very dict (and adds check_same_thread to it while doing so)
    code = ("from airflow import settings; from stockops.core.airflow_db import CONNECT_ARGS; "
            "print(settings.engine.dialect.name, sorted(CONNECT_ARGS.items()))")
    read = subprocess.run([str(venv_bin("python")), "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr[-2000:]
    line = read.stdout.strip().splitlines()[-1]
    assert line == "sqlite [('check_same_thread', False), ('timeout', 30.0)]", line


def test_a_postgresql_airflow_gets_no_sqlite_arguments(settings, monkeypatch):
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://u@127.0.0.1/airflow")
    env = LocalPlatform(settings, port=18080, mlflow_port=15000).env()
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" not in env


def test_make_runs_sqlite_is_put_in_wal_mode_and_stays_there(tmp_path, settings):
    import sqlite3

    from stockops.core.airflow_db import use_wal

    platform = LocalPlatform(settings, port=18080, mlflow_port=15000)
    assert platform.sqlite_database() == settings.airflow_home / "airflow.db"
    database = tmp_path / "airflow.db"
    sqlite3.connect(database).execute("CREATE TABLE t (x)").connection.close()
    assert use_wal(database) == "wal"
    with sqlite3.connect(database) as again:  # the mode is the file's, for every later connection
        assert again.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_postgresql_airflow_has_no_sqlite_file(settings, monkeypatch):
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://u@127.0.0.1/airflow")
    assert LocalPlatform(settings, port=18080, mlflow_port=15000).sqlite_database() is None
