"""The audit trail: an append-only JSON-lines log of decisions (gate, promotions, rollbacks)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path


def record(path: Path, event: str, **fields: object) -> dict:
    """Append one event with a UTC timestamp; returns the entry written."""
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "event": event, **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        # A writer killed mid-line leaves no newline at the end: start on a fresh line, or this
        # entry would be glued to the torn one and skipped with it on read.
        log.seek(0, os.SEEK_END)
        torn = False
        if log.tell():
            log.seek(-1, os.SEEK_END)
            torn = log.read(1) != b"\n"
        log.write((("\n" if torn else "") + json.dumps(entry, sort_keys=True, default=str) + "\n").encode())
        log.flush()
        os.fsync(log.fileno())
        fcntl.flock(log, fcntl.LOCK_UN)
    return entry


def read(path: Path) -> list[dict]:
    """Every entry; a line cut short by a crash mid-write is skipped (the entries around it are good)."""
    if not path.exists():
        return []
    entries = []
    with open(path) as log:
        for number, line in enumerate(log, 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                logging.getLogger(__name__).warning("%s line %d is not JSON (cut short?): skipped", path, number)
    return entries
