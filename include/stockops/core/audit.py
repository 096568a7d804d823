"""Append-only logs, and the audit trail (gate, promotions, rollbacks) on them.

Every log of stockops (audit, deploys, incidents, monitor forecasts and decisions, DAG runs, each ticker's
decisions) is written with :func:`append` and read with :func:`read`, named by its path under the home as it
always was. A log under a home is a log of that home's records' database (:mod:`stockops.storage.homes`,
:mod:`stockops.storage.records`): an append is one transaction, whole or not at all, whichever host makes it.

A log under no home (a tool's own file) is a JSON-lines file: a writer killed mid-line leaves a torn last line;
the next append starts on a fresh line (so its record is never glued to the torn one and lost with it), and a
reader skips a torn line with one warning naming the file and the line, wherever it is. Writers hold an exclusive
``flock`` on the log and readers a shared one, so a reader never mistakes a record being written for a torn one.
An older home's files move into the database with ``python -m stockops migrate-home``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)



class CorruptState(RuntimeError, ValueError):
    """A state file that cannot be read; the message names it, what is wrong and the way out.

    Also a ValueError, as the JSON and Parquet errors it replaces were, so callers that caught those
    still do.
    """

    def __init__(self, path: Path, problem: str, way_out: str):
        self.path, self.problem, self.way_out = Path(path), problem, way_out
        super().__init__(f"{path} is unreadable ({problem}). {way_out}; nothing was changed")


def in_database(path: Path):
    """The records' database and the name of the log or pointer at ``path`` when it is under a known home, else
    None (:mod:`stockops.storage.homes`)."""
    from stockops.storage import homes

    located = homes.locate(path)
    if located is None:
        return None
    from stockops.storage.records import StateStore

    return StateStore(located[0]), located[1]


def append(path: Path, entry: dict) -> dict:
    """Append ``entry`` (durable when this returns); returns it. A new log file is created 0600."""
    located = in_database(path)
    if located is not None:
        located[0].append(located[1], entry)
        return entry
    line = json.dumps(entry, sort_keys=True, default=str).encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write((b"\n" if _ends_torn(handle) else b"") + line)
        handle.flush()
        os.fsync(handle.fileno())
    return entry


def _ends_torn(handle) -> bool:
    """Whether the file's last line lacks its newline (its writer died mid-line)."""
    size = handle.seek(0, os.SEEK_END)
    if not size:
        return False
    handle.seek(size - 1)
    return handle.read(1) != b"\n"


def record(path: Path, event: str, **fields: object) -> dict:
    """Append one event with a UTC timestamp; returns the entry written."""
    return append(path, {"at": datetime.now(UTC).isoformat(timespec="seconds"), "event": event, **fields})


def append_many(path: Path, entries: list[dict]) -> list[dict]:
    """Append every one of ``entries``, together (one transaction in a database); returns them."""
    located = in_database(path)
    if located is not None:
        located[0].append_many(located[1], entries)
    else:
        for entry in entries:
            append(path, entry)
    return entries


def stamp(path: Path) -> tuple | None:
    """What changes when ``path``'s log gets a record (caches key on it); None for a log with none."""
    located = in_database(path)
    if located is not None:
        count, last = located[0].stamp(located[1])
        return (count, last) if count else None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_bodies(path: Path) -> bytes:
    """The log as JSON lines (each record's text on a line of its own), for a bulk JSON reader."""
    located = in_database(path)
    if located is not None:
        return b"".join(body.encode() + b"\n" for body in located[0].read_bodies(located[1]))
    try:
        with open(path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            return handle.read()
    except FileNotFoundError:
        return b""


def read(path: Path) -> list[dict]:
    """Every whole entry, oldest first; a torn line is skipped with a warning (the entries around it are kept)."""
    located = in_database(path)
    if located is not None:
        return located[0].read(located[1])
    return read_file(path)


def read_file(path: Path) -> list[dict]:
    """:func:`read` of a JSON-lines file, wherever it is (an older home's logs, for ``migrate-home``)."""
    if not path.exists():
        return []
    with open(path, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        lines = handle.read().split(b"\n")
    entries = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        entry = _parse(raw)
        if entry is None:
            log.warning("%s line %d is not a whole JSON record (its writer died mid-line?): skipped", path, number)
        else:
            entries.append(entry)
    return entries


def _parse(raw: bytes) -> dict | None:
    """The record on one line, or None for a torn one."""
    try:
        entry = json.loads(raw.decode(errors="replace"))
    except json.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None
