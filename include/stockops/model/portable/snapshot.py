"""The published snapshot's format, as every reader needs it: where a ticker's snapshots lie, how their content is
hashed, and how one is read back checked against its hash.

Under a ticker's folder (``<home>/data/<TICKER>/``): ``snapshots/<sha256>.parquet`` (immutable, named by the
SHA-256 of its content) and ``latest.json`` (the pointer to the newest: ``hash``, ``last_date``, ``published_at``,
...). The platform's store (:class:`stockops.data.store.SnapshotStore`) writes them; it and the bento's
``/forecast`` read them with :func:`read_snapshot`. numpy, pandas and pyarrow (for parquet) only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

COLUMNS = ("Date", "Open", "High", "Low", "Close", "Volume")
POINTER = "latest.json"


class HashMismatch(ValueError):
    """A snapshot file's data is not what its name (the hash) says: it was modified."""


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of a canonical text form of the frame: same data, same hash, on any machine."""
    canonical = frame.to_csv(index=False, date_format="%Y-%m-%d", float_format="%.10g", lineterminator="\n")
    return hashlib.sha256(canonical.encode()).hexdigest()


def snapshot_path(ticker_dir: Path, digest: str) -> Path:
    return Path(ticker_dir) / "snapshots" / f"{digest}.parquet"


def pointer_path(ticker_dir: Path) -> Path:
    return Path(ticker_dir) / POINTER


def read_snapshot(path: Path, digest: str) -> pd.DataFrame:
    """The frame in ``path``, checked against ``digest``: :class:`HashMismatch` if it differs; a file that cannot be
    read raises what the parquet reader raises (``OSError``, ``ValueError``, ``pyarrow.ArrowException``)."""
    frame = pd.read_parquet(path)
    if content_hash(frame) != digest:
        raise HashMismatch(f"its data does not match its hash {digest}: it was modified")
    return frame
