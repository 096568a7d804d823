"""The published snapshot's format, as every reader needs it: where a ticker's snapshots lie, how their content is
hashed, and how one is read back checked against its hash.

Under a ticker's folder (``<home>/data/<TICKER>/``): ``snapshots/<sha256>.parquet`` (immutable, named by the
SHA-256 of its content; a blob of the blob store, :func:`snapshot_key`) and ``latest`` (the pointer to the newest, in the records' database, :func:`pointer_name`; ``latest.json`` in homes older than the stores: ``hash``, ``last_date``, ``published_at``,
...). The platform's store (:class:`stockops.data.store.SnapshotStore`) writes them; it and the bento's
``/forecast`` read them with :func:`read_snapshot`. numpy, pandas and pyarrow (for parquet) only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

COLUMNS = ("Date", "Open", "High", "Low", "Close", "Volume")
POINTER = "latest.json"


def file_stamp(path: str | Path) -> tuple[int, int, int] | None:
    """The identity of a file that is only ever replaced whole (a pointer, a calibration state): inode, mtime and
    size; None without one. An unchanged stamp means an unchanged file, for the price of one ``stat``."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class HashMismatch(ValueError):
    """A snapshot file's data is not what its name (the hash) says: it was modified."""


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of a canonical text form of the frame: same data, same hash, on any machine.

    The form is pandas' ``to_csv`` (dates ``%Y-%m-%d``, floats ``%.10g``, ``\\n`` lines); a frame of plain dates,
    floats and integers (every published snapshot) is written the same way without pandas' formatter, ~3 x faster.
    """
    canonical = _canonical_fast(frame)
    if canonical is None:
        canonical = frame.to_csv(index=False, date_format="%Y-%m-%d", float_format="%.10g", lineterminator="\n")
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical_fast(frame: pd.DataFrame) -> str | None:
    """``to_csv``'s canonical text of ``frame`` for date, float and integer columns; None for anything else."""
    import numpy as np

    columns = []
    for name in frame.columns:
        if not isinstance(name, str) or any(c in name for c in ',"\n\r'):
            return None
        column = frame[name]
        values = column.to_numpy()
        if pd.api.types.is_datetime64_dtype(column.dtype) and not column.isna().any():
            columns.append(values.astype("datetime64[D]").astype(str).tolist())
        elif pd.api.types.is_float_dtype(column.dtype) and column.dtype.itemsize == 8:
            text = ["%.10g" % v for v in values.tolist()]  # noqa: UP031 (to_csv's float_format, exactly)
            if np.isnan(values).any():
                text = ["" if v != v else t for v, t in zip(values.tolist(), text, strict=True)]
            columns.append(text)
        elif pd.api.types.is_integer_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
            columns.append(values.astype(str).tolist())
        else:
            return None
    header = ",".join(frame.columns) + "\n"
    return header + "".join(line + "\n" for line in map(",".join, zip(*columns, strict=True))) if columns else None


def snapshot_path(ticker_dir: Path, digest: str) -> Path:
    return Path(ticker_dir) / "snapshots" / f"{digest}.parquet"


def pointer_path(ticker_dir: Path) -> Path:
    return Path(ticker_dir) / POINTER


def pointer_name(ticker: str) -> str:
    """The name of ``ticker``'s latest pointer in the records' database (``stockops.storage.records``)."""
    return f"data/{ticker}/latest"


def snapshot_key(ticker: str, digest: str) -> str:
    """The blob key of a published snapshot (its path under the home in the embedded blob store)."""
    return f"data/{ticker}/snapshots/{digest}.parquet"


def file_sha256(data: bytes) -> str:
    """SHA-256 of a snapshot file's bytes: recorded at publish, it checks a read in microseconds."""
    return hashlib.sha256(data).hexdigest()


def read_snapshot(path: Path, digest: str, file_sha256: str | None = None) -> pd.DataFrame:
    """The frame in ``path``, checked against ``digest``: :class:`HashMismatch` if it differs; a file that cannot be
    read raises what the parquet reader raises (``OSError``, ``ValueError``, ``pyarrow.ArrowException``).

    With the file's own ``file_sha256`` (recorded when it was published), bytes that match it are the published
    bytes and need no content hash (~20 ms for 4,000 rows); bytes that do not (a file rewritten by a re-publish)
    are checked by content, as without it.
    """
    return read_snapshot_bytes(Path(path).read_bytes(), digest, file_sha256)


def read_snapshot_bytes(data: bytes, digest: str, file_sha256: str | None = None) -> pd.DataFrame:
    """:func:`read_snapshot` of a snapshot file's bytes (fetched from the blob store)."""
    import io

    frame = pd.read_parquet(io.BytesIO(data))
    if file_sha256 is not None and hashlib.sha256(data).hexdigest() == file_sha256:
        return frame
    if content_hash(frame) != digest:
        raise HashMismatch(f"its data does not match its hash {digest}: it was modified")
    return frame
