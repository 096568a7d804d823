"""The snapshot store: versioned, immutable, content-addressed price data (DVC's job, in-house).

Layout under ``<home>/data/<TICKER>/``::

    raw/<logical_date>.parquet              what a run fetched, before judgement (.csv when parquet cannot hold it)
    snapshots/<sha256>.parquet              published snapshots (a damaged one is only written back as it was)
    manifest.jsonl                          one line per published snapshot
    latest.json                             pointer to the newest snapshot (moved atomically)
    quarantine/<logical_date>__<hash12>/    data that failed validation + its result
    validations/                            validation results of everything judged

Every write goes to a temporary file in the same folder and is renamed into place, so a
reader sees the old file or the new one, never half of one. The manifest and the pointer
change under a file lock, so two runs of the same day cannot write duplicate entries.

A publish goes snapshot file, then manifest line, then pointer, so a crash at any point leaves
a consistent store: a manifest line never names a missing file, ``latest`` never names a snapshot
the manifest lacks, and running the publish again finishes it. State that cannot be read raises
:class:`CorruptState`, which names the file and the way out.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow

from stockops.contracts import SnapshotEntry
from stockops.core import audit
from stockops.core.audit import CorruptState
from stockops.model.portable import snapshot as snapshot_format
from stockops.model.portable.snapshot import content_hash

log = logging.getLogger(__name__)




@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created with its folder), held for the ``with`` block.

    The kernel drops it when the holder dies, so a killed process never leaves it stuck.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (it survives a power cut, not only a killed process)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: object) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode())


class SnapshotStore:
    """Raw landing, validated snapshots, quarantine and the manifest for one ticker."""

    def __init__(self, root: Path, ticker: str):
        self.root = Path(root)
        self.ticker = ticker

    # ---- locations -------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.jsonl"

    @property
    def latest_path(self) -> Path:
        return snapshot_format.pointer_path(self.root)

    @property
    def validations_dir(self) -> Path:
        return self.root / "validations"

    def raw_path(self, logical_date: str) -> Path:
        return self.root / "raw" / f"{logical_date}.parquet"

    def snapshot_path(self, digest: str) -> Path:
        return snapshot_format.snapshot_path(self.root, digest)

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
    def _locked(self):
        return file_lock(self.root / ".lock")

    def publish(self, frame: pd.DataFrame, *, logical_date: str, source: str,
                validation_path: str | Path = "", digest: str | None = None) -> tuple[SnapshotEntry, bool]:
        """Publish validated data as an immutable snapshot; idempotent.

        Returns the manifest entry and whether it is new. Publishing data whose hash is
        already in the manifest adds no line. ``latest`` moves only forward in market
        time, so a backfill of an old day never hides newer data. A run killed at any
        step is finished by the next publish of the same data: the snapshot file is
        (re)written unless it already holds exactly this data, the manifest line is
        appended unless it is there, and the pointer moves if it should.

        ``digest``: the frame's :func:`content_hash` when the caller just computed it (validation did).
        """
        digest = digest or content_hash(frame)
        with self._locked():
            self._remove_temporary_files()
            path = self.snapshot_path(digest)
            data = frame.to_parquet(None, index=False)
            if not self._holds(path, digest):
                atomic_write_bytes(path, data)
            existing = self.get(digest)
            if existing is not None:
                self._advance_latest(existing)
                return existing, False
            entry = SnapshotEntry(
                hash=digest, ticker=self.ticker, rows=len(frame),
                first_date=_iso(frame["Date"].iloc[0]), last_date=_iso(frame["Date"].iloc[-1]),
                source=source, logical_date=logical_date, path=str(path),
                validation_path=str(validation_path),
                published_at=datetime.now(UTC).isoformat(timespec="seconds"),
                file_sha256=snapshot_format.file_sha256(path.read_bytes()),
            )
            audit.append(self.manifest_path, asdict(entry))
            self._advance_latest(entry)
            return entry, True

    def _remove_temporary_files(self) -> None:
        """Drop what a killed publish left half-written (only a publish, under the lock, writes these)."""
        for leftover in [*self.root.glob(f".{self.latest_path.name}.*.tmp"),
                         *(self.root / "snapshots").glob(".*.tmp")]:
            leftover.unlink(missing_ok=True)

    @staticmethod
    def _holds(path: Path, digest: str) -> bool:
        """Whether ``path`` is a readable snapshot of exactly the data hashed ``digest``."""
        try:
            return content_hash(pd.read_parquet(path)) == digest
        except (OSError, ValueError, pyarrow.ArrowException):
            return False

    def _advance_latest(self, entry: SnapshotEntry) -> None:
        """Point ``latest`` at ``entry`` unless it already points at data as new or newer."""
        current = self.latest()
        if current is not None and current.hash == entry.hash:
            return
        if current is None or entry.last_date >= current.last_date:
            atomic_write_json(self.latest_path, asdict(entry))

    # ---- quarantine -------------------------------------------------------------------------
    def quarantine(self, frame: pd.DataFrame, *, logical_date: str, source: str, result: dict) -> Path:
        """Keep data that failed validation, with its result, away from anything published."""
        digest = content_hash(frame)
        folder = self.root / "quarantine" / f"{logical_date}__{digest[:12]}"
        atomic_write_bytes(folder / "data.csv", frame.to_csv(index=False, date_format="%Y-%m-%d").encode())
        atomic_write_json(folder / "validation.json", {
            "ticker": self.ticker, "logical_date": logical_date, "source": source, "hash": digest,
            "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"), **result,
        })
        return folder

    # ---- reading -------------------------------------------------------------------------
    def entries(self) -> list[SnapshotEntry]:
        """Every published snapshot, oldest first (a manifest line torn by a crash is skipped)."""
        return [SnapshotEntry.from_dict(data) for data in audit.read(self.manifest_path)]

    def get(self, digest: str) -> SnapshotEntry | None:
        return next((e for e in self.entries() if e.hash == digest), None)

    def latest(self) -> SnapshotEntry | None:
        """The newest published snapshot (None before the first).

        An unreadable pointer is set aside for evidence (``latest.json.corrupt-<time>``) and rebuilt from
        the manifest it only repeats (its newest entry in market time); :class:`CorruptState` only if the
        manifest names nothing to point at."""
        try:
            return SnapshotEntry.from_dict(json.loads(self.latest_path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            problem = f"not a snapshot pointer: {type(exc).__name__}: {exc}"
        entries = self.entries()
        if not entries:
            raise CorruptState(
                self.latest_path, problem,
                f"It only points at the newest snapshot of {self.ticker} in {self.manifest_path}, which names none: "
                f"delete it and re-ingest {self.ticker} (stock_ingest with tickers={self.ticker})")
        newest = max(enumerate(entries), key=lambda pair: (pair[1].last_date, pair[0]))[1]
        kept = self.latest_path.with_name(
            f"{self.latest_path.name}.corrupt-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%f')}")
        try:
            os.replace(self.latest_path, kept)
        except FileNotFoundError:  # another reader rebuilt it a moment ago
            return self.latest()
        atomic_write_json(self.latest_path, asdict(newest))
        log.error("%s was unreadable (%s): set aside as %s and rebuilt from %s: it points at %s (up to %s)",
                  self.latest_path, problem, kept.name, self.manifest_path.name, newest.hash[:12], newest.last_date)
        return newest

    def load(self, entry: SnapshotEntry | None = None) -> pd.DataFrame:
        """The frame of a snapshot (default: the latest), checked against its hash (its file's name)."""
        entry = entry or self.latest()
        if entry is None:
            raise FileNotFoundError(f"no published snapshot for {self.ticker} under {self.root}")
        # Read from this store, by hash (the file's name), not from the path recorded at publish time: a home
        # restored or copied to another folder reads its own snapshots.
        path = self.snapshot_path(entry.hash)
        try:
            return snapshot_format.read_snapshot(path, entry.hash, file_sha256=entry.file_sha256)
        except snapshot_format.HashMismatch as exc:
            raise self._corrupt_snapshot(entry, str(exc)) from exc
        except (OSError, ValueError, pyarrow.ArrowException) as exc:
            raise self._corrupt_snapshot(entry, f"{type(exc).__name__}: {exc}") from exc

    def _corrupt_snapshot(self, entry: SnapshotEntry, problem: str) -> CorruptState:
        return CorruptState(
            self.snapshot_path(entry.hash), problem,
            f"It is the published snapshot of {self.ticker} up to {entry.last_date}: restore it from a backup, "
            f"or re-ingest {self.ticker} for {entry.logical_date} (stock_ingest with tickers={self.ticker}; delete "
            f"{self.latest_path} first if it points at this snapshot), which writes the same data back under the "
            "same name")

def _iso(value: object) -> str:
    return pd.Timestamp(value).date().isoformat()

