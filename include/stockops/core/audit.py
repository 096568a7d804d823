"""Append-only JSON-lines logs that survive crashes, and the audit trail (gate, promotions, rollbacks) on them.

Every JSON-lines log of stockops (audit, deploys, monitor decisions, DAG runs, each ticker's snapshot
manifest and decisions) is written with :func:`append` and read with :func:`read`. A writer killed
mid-line leaves a torn last line: the next append starts on a fresh line (so its record is never
glued to the torn one and lost with it), and a reader skips a torn line with one warning naming the
file and the line, wherever it is. Writers hold an exclusive ``flock`` on the log and readers a shared
one, so a reader never mistakes a record being written for a torn one.
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


def append(path: Path, entry: dict) -> dict:
    """Append ``entry`` as one line (durable when this returns); returns it. A new log is created 0600."""
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


def read(path: Path) -> list[dict]:
    """Every whole entry, oldest first; a torn line is skipped with a warning (the entries around it are kept)."""
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
