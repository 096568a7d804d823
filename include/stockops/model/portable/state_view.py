"""The platform's stores as a served model reads them: pointers from the records' database, blobs from the blob
store, with what the bento carries (the standard library's sqlite3, psycopg2, fsspec; no SQLAlchemy, no stockops).

The tables and their meaning are :mod:`stockops.storage.records`'; this reads only ``stockops_pointer``.

**Freshness.** :class:`PointerView` keeps every pointer under a prefix (``data/``) in memory and reads them again
only when they may have changed: on SQLite when the database's ``PRAGMA data_version`` moves (another connection
committed; a microsecond's check, so a publish is seen by the next request), on PostgreSQL at most every
``refresh_s`` (0.25 s: one query, whatever the number of tickers). A pointer's version is its stamp: an unchanged
version means an unchanged snapshot.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

POINTERS_TABLE = "stockops_pointer"


class PointerView:
    """The pointers named ``<prefix>...`` of the database at ``url`` (a SQLAlchemy URL), read-only."""

    def __init__(self, url: str, prefix: str = "data/", refresh_s: float = 0.25):
        self.url, self.prefix, self.refresh_s = url, prefix, refresh_s
        self.sqlite_path = _sqlite_path(url)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._seen: Any = None  # SQLite's data_version, or PostgreSQL's last refresh time
        self._pointers: dict[str, tuple[int, dict]] = {}

    def get(self, name: str) -> tuple[int, dict] | None:
        """``(version, value)`` of the pointer ``name``, or None without one. ``OSError`` when the database cannot
        be read (the caller answers 503)."""
        with self._lock:
            self._refresh()
            return self._pointers.get(name)

    def version(self, name: str) -> int | None:
        found = self.get(name)
        return None if found is None else found[0]

    def _refresh(self) -> None:
        try:
            if self.sqlite_path is not None:
                self._refresh_sqlite()
            else:
                self._refresh_postgres()
        except Exception as exc:  # a lost connection is opened again by the next read
            self._close()
            raise OSError(f"the records' database {_redacted(self.url)} cannot be read: {type(exc).__name__}: "
                          f"{exc}") from exc

    def _refresh_sqlite(self) -> None:
        import sqlite3

        if self._conn is None:
            if not Path(self.sqlite_path or "").exists():
                self._pointers = {}  # no database yet: nothing published
                return
            self._conn = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=30,
                                         check_same_thread=False, isolation_level=None)
            self._seen = None
        seen = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if seen != self._seen:
            self._pointers = self._select(self._conn.execute(
                f"SELECT name, version, body FROM {POINTERS_TABLE} WHERE substr(name, 1, ?) = ?",
                (len(self.prefix), self.prefix)).fetchall())
            self._seen = seen

    def _refresh_postgres(self) -> None:
        now = time.monotonic()
        if self._seen is not None and now - self._seen < self.refresh_s:
            return
        import psycopg2

        if self._conn is None:
            self._conn = psycopg2.connect(_psycopg2_dsn(self.url), connect_timeout=5)
            self._conn.autocommit = True
        with self._conn.cursor() as cur:
            cur.execute(f"SELECT name, version, body FROM {POINTERS_TABLE} WHERE left(name, %s) = %s",
                        (len(self.prefix), self.prefix))
            self._pointers = self._select(cur.fetchall())
        self._seen = now

    @staticmethod
    def _select(rows: list) -> dict[str, tuple[int, dict]]:
        return {name: (int(version), json.loads(body)) for name, version, body in rows}

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001, S110 - already broken
                pass
        self._conn, self._seen = None, None


class BlobReader:
    """Blobs by key from ``url`` (a folder, or ``s3://bucket/prefix`` through fsspec), as the platform's blob store
    (:mod:`stockops.storage.blobs`) writes them. A remote blob is kept in ``cache_dir`` under its digest: fetched
    once."""

    def __init__(self, url: str, cache_dir: Path | None = None):
        parsed = urlparse(url)
        self.remote = parsed.scheme not in ("", "file")
        self.root = (parsed.netloc + parsed.path).rstrip("/") if self.remote else (
            parsed.path if parsed.scheme == "file" else url)
        self.url, self.cache_dir = url, cache_dir
        self._fs: Any = None

    def path(self, key: str, digest: str) -> Path:
        """A local file with the blob ``key`` (whose content's digest is ``digest``)."""
        if not self.remote:
            return Path(self.root) / key
        if self.cache_dir is None:
            raise OSError(f"no cache folder to fetch {key} from {self.url} into")
        target = self.cache_dir / f"{digest}{Path(key).suffix}"
        if not target.exists():
            if self._fs is None:
                import fsspec

                endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
                self._fs = fsspec.filesystem(urlparse(self.url).scheme, skip_instance_cache=True,
                                             client_kwargs={"endpoint_url": endpoint} if endpoint else {})
            data = self._fs.cat_file(f"{self.root}/{key}")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return target


def _sqlite_path(url: str) -> str | None:
    if not url.startswith("sqlite"):
        return None
    return url.split(":///", 1)[1] if ":///" in url else ""


def _psycopg2_dsn(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def _redacted(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url

