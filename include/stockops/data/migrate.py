"""``python -m stockops migrate-home``: move what an older home keeps in files into the stores.

Homes written before the stores (issue 28's code and earlier) keep each ticker's snapshot manifest as
``data/<T>/manifest.jsonl`` and its pointer as ``data/<T>/latest.json``. For every ticker this

1. puts each listed snapshot's file into the blob store (nothing to copy when the blob store is the home itself),
   checked against the SHA-256 its manifest line recorded (or its content hash);
2. appends each manifest line to the log ``data/<T>/manifest`` (keyed by its hash: a second run adds nothing);
3. sets the pointer ``data/<T>/latest`` to what ``latest.json`` named, or, when it cannot be read, the newest
   listed snapshot in market time, unless the store already points at data as new;
4. renames the two files ``*.migrated``, so nothing reads them again (they stay as evidence);
5. copies the quarantine's evidence into a remote blob store;
6. appends every other JSON-lines log under the home (audit, DAG runs, deploys, incidents, each ticker's
   decisions, the monitor's forecasts and decisions) to the log of the same name (``audit/audit.jsonl`` ->
   ``audit/audit``), keyed by its line number (a second run adds nothing), and renames it ``*.migrated``. The
   bento's served-prediction log stays a file: traffic, kept where it is served.

A torn manifest line is skipped with a warning (as the file store read it). A listed snapshot whose file is missing
or damaged is not migrated and is named in the summary (its day can be re-ingested). Interrupted, it is run again:
every step is idempotent.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stockops.core.settings import Settings

log = logging.getLogger(__name__)
MIGRATED = ".migrated"


@dataclass
class Migration:
    tickers: list[str] = field(default_factory=list)
    snapshots: int = 0
    logs: int = 0
    records: int = 0
    pointers: int = 0
    evidence: int = 0
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"migrated {len(self.tickers)} ticker(s): {self.snapshots} snapshot record(s), {self.pointers} "
                f"pointer(s), {self.evidence} evidence file(s) copied; {self.logs} log(s): {self.records} record(s)")
        return text + "".join(f"\n  not migrated: {s}" for s in self.skipped)


def has_files_to_migrate(settings: Settings) -> bool:
    """Whether the home holds a file manifest, pointer or JSON-lines log that is not migrated yet."""
    data = settings.home / "data"
    if data.is_dir() and any(data.glob("*/manifest.jsonl")) or any(data.glob("*/latest.json")):
        return True
    return any(not p.relative_to(settings.home).as_posix().startswith(NOT_RECORDS)
               for p in settings.home.rglob("*.jsonl")) if settings.home.is_dir() else False


def migrate_home(settings: Settings) -> Migration:
    """Move every ticker's file manifest and pointer under ``settings.home`` into ``settings``' stores."""
    from stockops.core import audit
    from stockops.data import store_for
    from stockops.model.portable import snapshot as snapshot_format

    done = Migration()
    data_dir = settings.home / "data"
    for folder in sorted(p for p in data_dir.glob("*") if p.is_dir()) if data_dir.is_dir() else []:
        manifest, pointer = folder / "manifest.jsonl", folder / snapshot_format.POINTER
        if not manifest.exists() and not pointer.exists():
            continue
        ticker = folder.name
        store = store_for(settings, ticker)
        listed = {}
        for line in audit.read_file(manifest):  # a torn line: skipped, with a warning naming it
            entry = _entry(line)
            if entry is None:
                done.skipped.append(f"{manifest}: a line that is not a snapshot record")
                continue
            problem = _put_snapshot(store, folder, entry)
            if problem:
                done.skipped.append(f"{ticker} {entry.hash[:12]} (up to {entry.last_date}): {problem}")
                continue
            record = asdict(entry) | {"path": store.snapshot_key(entry.hash)}
            if store.state.append(store.manifest_log, record, key=entry.hash):
                done.snapshots += 1
            listed[entry.hash] = entry
        newest = _named_by(pointer, listed) or max(listed.values(), key=lambda e: e.last_date, default=None)
        if newest is not None:
            with store.state.transaction() as tx:
                current = tx.get(store.latest_pointer)
                if current is None or newest.last_date > str(current.value.get("last_date", "")):
                    tx.put(store.latest_pointer, asdict(newest) | {"path": store.snapshot_key(newest.hash)},
                           expect_version=current.version if current else 0)
                    done.pointers += 1
        done.evidence += _copy_evidence(store, folder)
        for path in (manifest, pointer):
            if path.exists():
                os.replace(path, path.with_name(path.name + MIGRATED))
        done.tickers.append(ticker)
    _migrate_logs(settings, done)
    return done


NOT_RECORDS = ("airflow/", "logs/", "serving/logs/", "serving/predictions")  # Airflow's, and traffic


def _migrate_logs(settings: Settings, done: Migration) -> None:
    from stockops.core import audit
    from stockops.storage import state_store

    state = state_store(settings)
    for path in sorted(settings.home.rglob("*.jsonl")):
        name = path.relative_to(settings.home).as_posix()
        if name.startswith(NOT_RECORDS) or name.endswith("/manifest.jsonl"):
            continue
        log_name = name.removesuffix(".jsonl")
        lines = audit.read_file(path)  # a torn line: skipped, with a warning naming it (as the file store read it)
        with state.transaction() as tx:
            done.records += sum(tx.append(log_name, entry, key=f"migrated:{number}")
                                for number, entry in enumerate(lines, 1))
        os.replace(path, path.with_name(path.name + MIGRATED))
        done.logs += 1


def _entry(line: dict):
    from stockops.contracts import SnapshotEntry

    try:
        return SnapshotEntry.from_dict(line)
    except (KeyError, TypeError, ValueError):
        return None


def _named_by(pointer: Path, listed: dict):
    """The listed entry ``latest.json`` names; None when it is missing, unreadable or names none of them."""
    try:
        return listed.get(json.loads(pointer.read_text())["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _put_snapshot(store, folder: Path, entry) -> str:
    """Put ``entry``'s file into the blob store, checked; returns why not ("" when it is there)."""
    import io

    import pandas as pd

    from stockops.model.portable import snapshot as snapshot_format

    path = snapshot_format.snapshot_path(folder, entry.hash)
    try:
        data = path.read_bytes()
        if entry.file_sha256 is None or snapshot_format.file_sha256(data) != entry.file_sha256:
            if snapshot_format.content_hash(pd.read_parquet(io.BytesIO(data))) != entry.hash:
                return f"{path} does not hold the data its hash names"
    except Exception as exc:  # noqa: BLE001 - any unreadable file is named, and the others go on
        return f"{path} cannot be read: {type(exc).__name__}: {exc}"
    key = store.snapshot_key(entry.hash)
    if store.blobs.is_local and store.blobs.local_path(key).resolve() == path.resolve():
        return ""
    store.blobs.put_verified(key, data)
    return ""


def _copy_evidence(store, folder: Path) -> int:
    """The quarantine's files, into a remote blob store (a local one is the home: they are there)."""
    if store.blobs.is_local:
        return 0
    copied = 0
    for path in sorted((folder / "quarantine").rglob("*")):
        if path.is_file():
            store.blobs.put(f"{store.prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())
            copied += 1
    return copied
