"""The audit trail: an append-only JSON-lines log of decisions (gate, promotions, rollbacks)."""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path


def record(path: Path, event: str, **fields: object) -> dict:
    """Append one event with a UTC timestamp; returns the entry written."""
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "event": event, **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        log.flush()
        os.fsync(log.fileno())
        fcntl.flock(log, fcntl.LOCK_UN)
    return entry


def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as log:
        return [json.loads(line) for line in log if line.strip()]
