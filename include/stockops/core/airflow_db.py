"""How Airflow's SQLite metadata DB (``make run``'s) is opened: what ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS``
names (every Airflow process imports it, so it imports nothing), and its journal in WAL mode (:func:`use_wal`).

SQLite has one writer, and in its default journal mode a reader also holds writers off. Under load a click on
*Trigger* (or a run marked failed) waited for the lock and got a 500 ("Database error") when SQLite's busy timeout
ran out: after 5 s by default, and once after 30 s while some reader held on. With the write-ahead log readers and
the writer no longer block each other, and a write waits up to 30 s for another write. PostgreSQL (compose, the
Celery platform) uses neither.
"""

from __future__ import annotations

from pathlib import Path

CONNECT_ARGS = {"timeout": 30.0}  # seconds a write waits for SQLite's lock (sqlite3.connect's busy timeout)


def use_wal(database: Path) -> str:
    """Put the SQLite database at ``database`` in WAL mode (it stays so: the mode is kept in the file); the mode."""
    import sqlite3

    with sqlite3.connect(database, timeout=CONNECT_ARGS["timeout"]) as connection:
        return str(connection.execute("PRAGMA journal_mode=WAL").fetchone()[0])
