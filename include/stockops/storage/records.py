"""Records and pointers in a database, one code path for two backends: SQLite embedded, PostgreSQL distributed.

The platform's state that is not a blob (manifests and ``latest`` pointers, logs, status and decisions) lives in two
tables, reached through SQLAlchemy Core:

- ``stockops_log``: append-only logs. A record is one row of its log (``log``: a name such as
  ``data/GOOG/manifest``), ordered by id, optionally with a ``key`` unique within its log, so an append that
  is already there (a re-run) adds nothing: :meth:`StateStore.append` returns whether it was new.
- ``stockops_pointer``: named JSON values with a version. :meth:`StateStore.put` replaces one (or only when its
  version is still the one the caller read: compare-and-set), :meth:`StateStore.get` reads one.

Several of them change together in one :meth:`StateStore.transaction`: a reader sees all of it or none of it, and a
writer killed inside it leaves nothing (the database rolls back what was not committed). That replaces the file
store's torn-line handling and its order of writes.

**Locks** (:meth:`StateStore.lock`) serialise a critical section across processes and hosts: PostgreSQL's session
advisory locks (held by a connection; the server drops them when the holder's connection dies) or, embedded, an
``flock`` on a file beside the SQLite database (the kernel drops it when the holder dies). A waiter gives up after
its timeout naming the lock.

**SQLite** runs in WAL mode (readers never wait for the writer), with a 30 s busy timeout, and every write
transaction starts ``BEGIN IMMEDIATE``: two writers queue instead of failing on a lock upgrade. **PostgreSQL**:
read committed; ids come from a sequence, so a reader may see a later id committed before an earlier one; readers
that need "everything after what I saw" use a pointer, not ids.

A process that forks (Celery's prefork pool, Airflow's task runner) gets fresh connections in the child: engines
are per process.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from stockops.storage.files import flock_within

METADATA = sa.MetaData()
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite's rowid alias must be INTEGER

LOGS = sa.Table(
    "stockops_log", METADATA,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("log", sa.String(400), nullable=False),
    sa.Column("key", sa.String(400), nullable=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.UniqueConstraint("log", "key", name="stockops_log_key"),
    sa.Index("stockops_log_by_log", "log", "id"),
)
POINTERS = sa.Table(
    "stockops_pointer", METADATA,
    sa.Column("name", sa.String(400), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)


class LockTimeout(TimeoutError):
    """A lock was not granted in time; the message names it."""


class VersionConflict(RuntimeError):
    """A compare-and-set found another version than the one expected: someone else wrote the pointer first."""


@dataclass(frozen=True)
class Pointer:
    name: str
    version: int
    updated_at: str
    value: Any


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


_ENGINES: dict[tuple[int, str], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """The process's engine for ``url`` (one per process: a forked child makes its own), with the schema created."""
    key = (os.getpid(), url)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _make_engine(url)
            _create_schema(engine)
        return engine


def _make_engine(url: str) -> Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4, future=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "isolation_level": None}, future=True)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never torn
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("readonly") else "BEGIN IMMEDIATE")

    return engine


def _create_schema(engine: Engine) -> None:
    """Create the tables where missing; two processes creating them at once is not an error."""
    for attempt in range(3):
        try:
            METADATA.create_all(engine, checkfirst=True)
            return
        except sa.exc.DBAPIError:
            if attempt == 2:
                raise
            time.sleep(0.2)


class StateStore:
    """The platform's records and pointers in the database at ``url`` (``sqlite:///<path>`` or
    ``postgresql+psycopg2://...``); every method is one transaction unless called on a :meth:`transaction`'s
    object."""

    def __init__(self, url: str):
        self.url = url
        self.engine = engine_for(url)
        self.backend = self.engine.dialect.name

    def __repr__(self) -> str:
        return f"StateStore({self.engine.url.render_as_string(hide_password=True)})"

    # ---- transactions --------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction: everything done on the object it yields commits together, or not at all."""
        with self.engine.begin() as conn:
            yield Transaction(self, conn)

    @contextmanager
    def _reading(self) -> Iterator[Transaction]:
        with self.engine.connect().execution_options(readonly=True) as conn, conn.begin():
            yield Transaction(self, conn)

    # ---- one-shot operations (each its own transaction) ----------------------------------------------
    def append(self, log: str, entry: dict, key: str | None = None) -> bool:
        with self.transaction() as tx:
            return tx.append(log, entry, key)

    def read(self, log: str, after_id: int = 0) -> list[dict]:
        with self._reading() as tx:
            return tx.read(log, after_id)

    def read_with_ids(self, log: str, after_id: int = 0) -> list[tuple[int, dict]]:
        with self._reading() as tx:
            return tx.read_with_ids(log, after_id)

    def find(self, log: str, key: str) -> dict | None:
        with self._reading() as tx:
            return tx.find(log, key)

    def stamp(self, log: str) -> tuple[int, int]:
        """``(records, last id)`` of ``log``: unchanged while nothing is appended (what caches of a log key on)."""
        with self._reading() as tx:
            row = tx.conn.execute(sa.select(sa.func.count(), sa.func.max(LOGS.c.id)).where(LOGS.c.log == log)).one()
            return int(row[0]), int(row[1] or 0)

    def append_many(self, log: str, entries: list[dict]) -> None:
        """Append every one of ``entries`` (unkeyed) in one transaction."""
        if entries:
            with self.transaction() as tx:
                now = _now()
                tx.conn.execute(LOGS.insert(), [{"log": log, "key": None, "at": now, "body": _dumps(e)}
                                                for e in entries])

    def read_bodies(self, log: str) -> list[str]:
        """The records of ``log`` as the JSON text they are stored as, oldest first (for a bulk JSON reader)."""
        with self._reading() as tx:
            return list(tx.conn.execute(sa.select(LOGS.c.body).where(LOGS.c.log == log).order_by(LOGS.c.id))
                        .scalars())

    def logs(self, prefix: str = "") -> list[str]:
        with self._reading() as tx:
            return tx.logs(prefix)

    def get(self, name: str) -> Pointer | None:
        with self._reading() as tx:
            return tx.get(name)

    def get_many(self, names: list[str]) -> dict[str, Pointer]:
        with self._reading() as tx:
            return tx.get_many(names)

    def put(self, name: str, value: Any, expect_version: int | None = None) -> int:
        with self.transaction() as tx:
            return tx.put(name, value, expect_version)

    def pointers(self, prefix: str = "") -> list[Pointer]:
        with self._reading() as tx:
            return tx.pointers(prefix)

    def delete(self, name: str) -> bool:
        """Remove the pointer ``name``; whether there was one."""
        with self.transaction() as tx:
            return bool(tx.conn.execute(POINTERS.delete().where(POINTERS.c.name == name)).rowcount)

    # ---- locks ------------------------------------------------------------------------------------
    @contextmanager
    def lock(self, name: str, timeout_s: float = 420.0, poll_s: float = 0.05) -> Iterator[None]:
        """Hold the lock ``name`` across processes and hosts for the ``with`` block; :class:`LockTimeout` after
        ``timeout_s``. A holder that dies releases it (its connection or its file descriptor goes)."""
        if self.backend == "postgresql":
            with self._advisory_lock(name, timeout_s, poll_s):
                yield
        else:
            with self._file_lock(name, timeout_s, poll_s):
                yield

    @contextmanager
    def _advisory_lock(self, name: str, timeout_s: float, poll_s: float) -> Iterator[None]:
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with self.engine.connect() as conn:
            deadline = time.monotonic() + timeout_s
            while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                conn.rollback()
                if time.monotonic() > deadline:
                    raise LockTimeout(f"lock {name!r} in {self!r} still held by another process after {timeout_s} s")
                time.sleep(poll_s)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()

    @contextmanager
    def _file_lock(self, name: str, timeout_s: float, poll_s: float) -> Iterator[None]:
        database = self.engine.url.database or ""
        folder = Path(f"{database}.locks")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".lock")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            if not flock_within(fd, timeout_s, poll_s):
                raise LockTimeout(f"lock {name!r} ({path}) still held by another process after {timeout_s} s")
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class Transaction:
    """The operations of :class:`StateStore` inside one open transaction (``StateStore.transaction``)."""

    def __init__(self, store: StateStore, conn: Connection):
        self.store, self.conn = store, conn

    def append(self, log: str, entry: dict, key: str | None = None) -> bool:
        """Append ``entry`` to ``log``; with ``key``, only if the log has no record of that key (returns False)."""
        row = {"log": log, "key": key, "at": _now(), "body": _dumps(entry)}
        if key is None:
            self.conn.execute(LOGS.insert().values(**row))
            return True
        insert = _insert_ignoring_duplicates(self.conn, LOGS, ["log", "key"])
        return bool(self.conn.execute(insert.values(**row)).rowcount)

    def read_with_ids(self, log: str, after_id: int = 0) -> list[tuple[int, dict]]:
        rows = self.conn.execute(sa.select(LOGS.c.id, LOGS.c.body).where(LOGS.c.log == log, LOGS.c.id > after_id)
                                 .order_by(LOGS.c.id))
        return [(row.id, json.loads(row.body)) for row in rows]

    def read(self, log: str, after_id: int = 0) -> list[dict]:
        return [entry for _, entry in self.read_with_ids(log, after_id)]

    def find(self, log: str, key: str) -> dict | None:
        body = self.conn.execute(sa.select(LOGS.c.body).where(LOGS.c.log == log, LOGS.c.key == key)).scalar()
        return None if body is None else json.loads(body)

    def logs(self, prefix: str = "") -> list[str]:
        query = sa.select(LOGS.c.log).distinct().where(LOGS.c.log.startswith(prefix, autoescape=True))
        return sorted(self.conn.execute(query).scalars())

    def get(self, name: str) -> Pointer | None:
        row = self.conn.execute(sa.select(POINTERS).where(POINTERS.c.name == name)).first()
        return None if row is None else Pointer(row.name, row.version, row.updated_at, json.loads(row.body))

    def get_many(self, names: list[str]) -> dict[str, Pointer]:
        if not names:
            return {}
        rows = self.conn.execute(sa.select(POINTERS).where(POINTERS.c.name.in_(names)))
        return {row.name: Pointer(row.name, row.version, row.updated_at, json.loads(row.body)) for row in rows}

    def pointers(self, prefix: str = "") -> list[Pointer]:
        rows = self.conn.execute(sa.select(POINTERS).where(POINTERS.c.name.startswith(prefix, autoescape=True))
                                 .order_by(POINTERS.c.name))
        return [Pointer(row.name, row.version, row.updated_at, json.loads(row.body)) for row in rows]

    def _locked_version(self, name: str) -> int | None:
        """The pointer's version, its row locked for this transaction (PostgreSQL; SQLite's write lock covers it)."""
        return self.conn.execute(sa.select(POINTERS.c.version).where(POINTERS.c.name == name).with_for_update()
                                 ).scalar()

    def put(self, name: str, value: Any, expect_version: int | None = None) -> int:
        """Set the pointer ``name`` to ``value``; returns its new version. With ``expect_version`` (0: it must not
        exist yet) only if it still has that version, else :class:`VersionConflict`."""
        body, now = _dumps(value), _now()
        if expect_version is None:  # unconditional: whatever version it has (a first write racing another: the
            current = self._locked_version(name)  # other's row, locked, is updated)
            if current is None:
                inserted = self.conn.execute(_insert_ignoring_duplicates(self.conn, POINTERS, ["name"]).values(
                    name=name, version=1, updated_at=now, body=body)).rowcount
                if inserted:
                    return 1
                current = self._locked_version(name) or 0
            expect_version = current
        if expect_version == 0:
            inserted = self.conn.execute(_insert_ignoring_duplicates(self.conn, POINTERS, ["name"]).values(
                name=name, version=1, updated_at=now, body=body)).rowcount
            if not inserted:
                raise VersionConflict(f"pointer {name!r} was created by another writer meanwhile")
            return 1
        updated = self.conn.execute(POINTERS.update().where(POINTERS.c.name == name,
                                                            POINTERS.c.version == expect_version)
                                    .values(version=expect_version + 1, updated_at=now, body=body)).rowcount
        if not updated:
            raise VersionConflict(f"pointer {name!r} is no longer at version {expect_version}: another writer "
                                  "changed it meanwhile")
        return expect_version + 1


def _insert_ignoring_duplicates(conn: Connection, table: sa.Table, unique: list[str]) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=unique)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing(index_elements=unique)
