"""The snapshot store: versioned, immutable, content-addressed price data (DVC's job, in-house).

A ticker's published data lives in the platform's two stores (:mod:`stockops.storage`):

- **blobs** (``STOCKOPS_BLOB_URL``; embedded: the home): ``data/<TICKER>/snapshots/<sha256>.parquet``, immutable,
  named by the SHA-256 of their content, and the quarantine's evidence ``data/<TICKER>/quarantine/<day>__<hash12>/``;
- **records** (``STOCKOPS_STATE_DB``; embedded: SQLite in the home): the log ``data/<TICKER>/manifest``, one record
  per published snapshot (keyed by its hash), and the pointer ``data/<TICKER>/latest`` to the newest.

Beside them, on the local disk of the host that runs the ingest (scratch and evidence of one run):
``raw/<logical_date>.parquet`` (what a run fetched, before judgement; ``.csv`` when parquet cannot hold it) and
``validations/`` (the validation results of everything judged).

A publish writes the snapshot blob, reads it back and checks it, and only then records it: its manifest record and
the pointer's move are one transaction. Whatever dies midway (the publish, the object store, the database), no
record names a blob that is not whole, ``latest`` never names a snapshot the manifest lacks, and running the
publish again finishes it. Publishes of one ticker are serialised by a lock of the database (an advisory lock on
PostgreSQL), so two runs of the same day cannot race. A blob that cannot be read raises :class:`CorruptState`,
which names it and the way out.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow

from stockops.contracts import SnapshotEntry
from stockops.core.audit import CorruptState
from stockops.model.portable import snapshot as snapshot_format
from stockops.model.portable.snapshot import content_hash
from stockops.storage import BlobStore, StateStore
from stockops.storage.files import atomic_write_bytes
from stockops.storage.records import Transaction

log = logging.getLogger(__name__)




class SnapshotStore:
    """Raw landing, validated snapshots, quarantine and the manifest for one ticker.

    ``root``: the ticker's folder on this host (``<home>/data/<TICKER>``: raw landing, validation results).
    ``state``, ``blobs``: the platform's stores (:func:`stockops.data.store_for` passes the configured ones); left
    out, the embedded ones of the home ``root`` lies in (SQLite ``<home>/state.db``, blobs under ``<home>``).
    """

    def __init__(self, root: Path, ticker: str, state: StateStore | None = None, blobs: BlobStore | None = None):
        self.root = Path(root)
        self.ticker = ticker
        home = self.root.parent.parent
        self.state = state if state is not None else StateStore(f"sqlite:///{(home / 'state.db').absolute()}")
        self.blobs = blobs if blobs is not None else BlobStore(home)
        self.prefix = f"data/{ticker}"

    # ---- locations -------------------------------------------------------------------
    @property
    def manifest_log(self) -> str:
        return f"{self.prefix}/manifest"

    @property
    def latest_pointer(self) -> str:
        return snapshot_format.pointer_name(self.ticker)

    @property
    def validations_dir(self) -> Path:
        return self.root / "validations"

    def raw_path(self, logical_date: str) -> Path:
        return self.root / "raw" / f"{logical_date}.parquet"

    def snapshot_key(self, digest: str) -> str:
        return snapshot_format.snapshot_key(self.ticker, digest)

    def snapshot_path(self, digest: str) -> Path:
        """The snapshot's file, where the blob store is a local folder (embedded)."""
        return self.blobs.local_path(self.snapshot_key(digest))

    # ---- raw landing ---------------------------------------------------------------------
    def write_raw(self, frame: pd.DataFrame, logical_date: str) -> Path:
        """Land what a run fetched, as it came, dtypes included (a re-run of the day replaces it). Parquet; a frame
        parquet cannot hold (a column mixing text and numbers) lands as CSV, and validation names what is wrong."""
        path = self.raw_path(logical_date)
        other = path.with_suffix(".csv")
        try:
            data = frame.to_parquet(None, index=False)
        except (ValueError, TypeError, pyarrow.ArrowException):
            path, other = other, path
            data = frame.to_csv(index=False, date_format="%Y-%m-%d").encode()
        atomic_write_bytes(path, data)
        other.unlink(missing_ok=True)  # what an earlier run of the day landed in the other format
        return path

    @staticmethod
    def read_raw(path: Path | str) -> pd.DataFrame:
        """Read a raw landing file back with the dtypes it had (from a CSV: dates parsed only if they all parse)."""
        if Path(path).suffix == ".parquet":
            return pd.read_parquet(path)
        frame = pd.read_csv(path)
        if "Date" in frame.columns:
            parsed = pd.to_datetime(frame["Date"], errors="coerce", format="%Y-%m-%d")
            if parsed.notna().all():
                frame["Date"] = parsed.astype("datetime64[ns]")
        return frame

    # ---- publish -------------------------------------------------------------------------
    def publish(self, frame: pd.DataFrame, *, logical_date: str, source: str,
                validation_path: str | Path = "", digest: str | None = None) -> tuple[SnapshotEntry, bool]:
        """Publish validated data as an immutable snapshot; idempotent.

        Returns the manifest entry and whether it is new. Publishing data whose hash is already in the manifest
        adds no record. ``latest`` moves only forward in market time, so a backfill of an old day never hides newer
        data. A run killed at any step is finished by the next publish of the same data: the blob is (re)written
        unless it already holds exactly this data, and the record and the pointer are written together.

        ``digest``: the frame's :func:`content_hash` when the caller just computed it (validation did).
        """
        digest = digest or content_hash(frame)
        key = self.snapshot_key(digest)
        with self.state.lock(f"{self.prefix}/publish"):
            self.blobs.remove_partial(f"{self.prefix}/snapshots")
            file_sha = self._held_sha256(key, digest)
            if file_sha is None:  # written, read back and checked before any record names it
                file_sha = self.blobs.put_verified(key, frame.to_parquet(None, index=False))
            with self.state.transaction() as tx:
                found = tx.find(self.manifest_log, digest)
                if found is not None:
                    existing = SnapshotEntry.from_dict(found)
                    self._advance_latest(tx, existing)
                    return existing, False
                entry = SnapshotEntry(
                    hash=digest, ticker=self.ticker, rows=len(frame),
                    first_date=_iso(frame["Date"].iloc[0]), last_date=_iso(frame["Date"].iloc[-1]),
                    source=source, logical_date=logical_date, path=key,
                    validation_path=str(validation_path),
                    published_at=datetime.now(UTC).isoformat(timespec="seconds"),
                    file_sha256=file_sha,
                )
                tx.append(self.manifest_log, asdict(entry), key=digest)
                self._advance_latest(tx, entry)
                return entry, True

    def _held_sha256(self, key: str, digest: str) -> str | None:
        """The SHA-256 of the blob at ``key`` if it is a readable snapshot of exactly the data hashed ``digest``."""
        import io

        try:
            data = self.blobs.get(key)
            if content_hash(pd.read_parquet(io.BytesIO(data))) == digest:
                return snapshot_format.file_sha256(data)
        except (OSError, ValueError, pyarrow.ArrowException):
            pass
        return None

    def _advance_latest(self, tx: Transaction, entry: SnapshotEntry) -> None:
        """Point ``latest`` at ``entry`` unless it already points at data as new or newer."""
        current = tx.get(self.latest_pointer)
        if current is not None and current.value.get("hash") == entry.hash:
            return
        if current is None or entry.last_date >= str(current.value.get("last_date", "")):
            tx.put(self.latest_pointer, asdict(entry), expect_version=current.version if current else 0)

    # ---- quarantine -------------------------------------------------------------------------
    def quarantine(self, frame: pd.DataFrame, *, logical_date: str, source: str, result: dict) -> str:
        """Keep data that failed validation, with its result, away from anything published; returns where."""
        digest = content_hash(frame)
        folder = f"{self.prefix}/quarantine/{logical_date}__{digest[:12]}"
        self.blobs.put(f"{folder}/data.csv", frame.to_csv(index=False, date_format="%Y-%m-%d").encode())
        self.blobs.put(f"{folder}/validation.json", (json.dumps({
            "ticker": self.ticker, "logical_date": logical_date, "source": source, "hash": digest,
            "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"), **result,
        }, indent=2, sort_keys=True, default=str) + "\n").encode())
        return str(self.blobs.local_path(folder)) if self.blobs.is_local else f"{self.blobs.url}/{folder}"

    # ---- reading -------------------------------------------------------------------------
    def entries(self) -> list[SnapshotEntry]:
        """Every published snapshot, oldest first."""
        return [SnapshotEntry.from_dict(data) for data in self.state.read(self.manifest_log)]

    def get(self, digest: str) -> SnapshotEntry | None:
        found = self.state.find(self.manifest_log, digest)
        return None if found is None else SnapshotEntry.from_dict(found)

    def latest(self) -> SnapshotEntry | None:
        """The newest published snapshot (None before the first)."""
        pointer = self.state.get(self.latest_pointer)
        return None if pointer is None else SnapshotEntry.from_dict(pointer.value)

    def snapshot_bytes(self, entry: SnapshotEntry) -> bytes:
        """The published file of ``entry`` as it is stored (unchecked: :meth:`load` checks)."""
        try:
            return self.blobs.get(self.snapshot_key(entry.hash))
        except OSError as exc:
            raise self._corrupt_snapshot(entry, f"{type(exc).__name__}: {exc}") from exc

    def load(self, entry: SnapshotEntry | None = None) -> pd.DataFrame:
        """The frame of a snapshot (default: the latest), checked against its hash (its blob's name)."""
        entry = entry or self.latest()
        if entry is None:
            raise FileNotFoundError(f"no published snapshot for {self.ticker} in {self.state!r}")
        data = self.snapshot_bytes(entry)
        try:
            return snapshot_format.read_snapshot_bytes(data, entry.hash, file_sha256=entry.file_sha256)
        except snapshot_format.HashMismatch as exc:
            raise self._corrupt_snapshot(entry, str(exc)) from exc
        except (OSError, ValueError, pyarrow.ArrowException) as exc:
            raise self._corrupt_snapshot(entry, f"{type(exc).__name__}: {exc}") from exc

    def _corrupt_snapshot(self, entry: SnapshotEntry, problem: str) -> CorruptState:
        where = self.snapshot_path(entry.hash) if self.blobs.is_local else Path(self.snapshot_key(entry.hash))
        return CorruptState(
            where, problem,
            f"It is the published snapshot of {self.ticker} up to {entry.last_date}: restore it from a backup, "
            f"or re-ingest {self.ticker} for {entry.logical_date} (stock_ingest with tickers={self.ticker}), which "
            "writes the same data back under the same name")

def _iso(value: object) -> str:
    return pd.Timestamp(value).date().isoformat()

