"""The served-prediction log: one JSON line per request a bento answered, bounded on disk, counted exactly.

The bento writes it (this module travels in its model's ``code/``, so it needs the standard library
only) and the monitor counts it (``traffic_requests``). For a log ``predictions.jsonl``:

* ``predictions.jsonl``: the live file. Every worker process of every bento appends to it (``O_APPEND``,
  created 0600); a writer killed mid-line leaves no newline, and the next append starts a fresh line.
* ``predictions.jsonl.1``: the live file before the last rotation, kept for people to read.
* ``predictions.summary.json`` (0600, replaced atomically): per model version, the requests of every file
  rotated out, and which ``.1`` that includes (its inode and size).
* ``predictions.jsonl.lock``: writers hold it shared while they append, the rotation exclusively, so no
  line is written into a file being counted; a reader holds it shared.

The append that takes the live file to ``max_bytes`` rotates it: ``.1``'s counts go into the summary if
they are not there yet, the live file becomes ``.1``, and its counts go into the summary. A crash between
those steps loses nothing and counts nothing twice: a reader adds ``.1`` while the summary does not name it.
The disk holds at most two files of ``max_bytes`` (plus a line) and the summary.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
EMPTY: dict = {"requests": {}, "absorbed": None}  # the summary before any rotation


def summary_path(path: Path) -> Path:
    """``predictions.jsonl`` -> ``predictions.summary.json``."""
    return path.with_name(path.name.rsplit(".", 1)[0] + ".summary.json")


def rotated_path(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def _locked(path: Path, operation: int, create: bool = True) -> Iterator[bool]:
    """Hold ``flock(operation)`` on the lock file of log ``path``; yields False where a non-blocking try failed, or
    where the lock file is missing and not to be created (no writer of this layout has run: nothing to wait for)."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def append(path: Path, line: str, max_bytes: int) -> None:
    """Append one record (a JSON object on one line); rotate the log when it reaches ``max_bytes``: at once where no
    other process holds the log's lock, else at a later append (the file stays under twice the cap).

    No fsync: one per request would cost milliseconds under load, and a crash loses at most the last lines.
    """
    append_lines(path, [line], max_bytes)


def append_lines(path: Path, lines: list[str], max_bytes: int) -> None:
    """:func:`append` of several records in one write (a server's answers of one event-loop turn)."""
    if not lines:
        return
    with _locked(path, fcntl.LOCK_SH):
        with os.fdopen(os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600), "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # the torn-line check and the write, one writer at a time
            size = handle.seek(0, os.SEEK_END)
            torn = False
            if size:
                handle.seek(size - 1)
                torn = handle.read(1) != b"\n"
            handle.write((("\n" if torn else "") + "\n".join(lines) + "\n").encode())
            handle.flush()
            size = os.fstat(handle.fileno()).st_size
    if size >= max_bytes:  # at twice the cap it waits its turn (the lock's holders each write one line)
        rotate(path, max_bytes, wait=size >= 2 * max_bytes)


def rotate(path: Path, max_bytes: int = 0, wait: bool = True) -> bool:
    """Move the live file to ``.1`` once its requests are in the summary, if it holds ``max_bytes`` or more.

    Without ``wait`` it gives up at once where another process holds the lock (appending or rotating): the
    next append tries again. True if it rotated.
    """
    with _locked(path, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)) as held:
        try:
            if not held or path.stat().st_size < max(max_bytes, 1):
                return False  # another process rotated it meanwhile, or is busy
        except FileNotFoundError:
            return False
        summary = read_summary(path)
        if summary is None:
            target = summary_path(path)
            os.replace(target, target.with_name(target.name + ".corrupt"))
            log.warning("%s set aside as .corrupt: the requests it counted are no longer counted", target)
            summary = EMPTY
        summary = _absorb_rotated(path, summary)  # a .1 a crash mid-rotation left uncounted
        os.replace(path, rotated_path(path))
        _absorb_rotated(path, summary)
        return True


def read_summary(path: Path) -> dict | None:
    """The summary of log ``path``: ``{"requests": {version: n}, "absorbed": [inode, size] | None}``; None (with a
    warning) if it cannot be read (the next rotation sets it aside and counts from the files on)."""
    target = summary_path(path)
    try:
        summary = json.loads(target.read_text())
        if not isinstance(summary, dict) or not isinstance(summary.get("requests"), dict) or not all(
                isinstance(n, int) for n in summary["requests"].values()):
            raise ValueError("not a summary: no {version: count} under 'requests'")
        return summary
    except FileNotFoundError:
        return EMPTY
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): the requests it counted are not counted", target, exc)
        return None


def _identity(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return [stat.st_ino, stat.st_size]


def _absorb_rotated(path: Path, summary: dict) -> dict:
    """Add ``.1``'s requests to the summary unless it holds them already; write it atomically (0600)."""
    rotated = rotated_path(path)
    identity = _identity(rotated)
    if identity is None or summary.get("absorbed") == identity:
        return summary
    requests = Counter({str(k): int(v) for k, v in summary["requests"].items()})
    requests.update(count_versions(rotated))
    summary = {"requests": dict(requests), "absorbed": identity}
    target = summary_path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(summary, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    return summary


VERSION_FIELD = b'"model_version": "'


def count_versions(path: Path) -> Counter:
    """Requests per ``model_version`` (as a string) in one file; a torn line is not a request and is skipped.

    Rotation counts a whole file (10 MB, some 30,000 lines) inside a server's request: parsing every line as JSON
    took about 0.5 s of it. A line as the services write it (one flat object, ``"model_version": "<v>"``) is read
    by position instead; any other line is parsed. A torn line is a prefix of a line (the next append starts on a
    new one), and a prefix of a flat object that ends in ``}`` is the whole object."""
    counts: Counter = Counter()
    try:
        with open(path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)  # a line being written is never taken for a torn one
            data = handle.read()
    except FileNotFoundError:
        return counts
    for raw in data.split(b"\n"):
        line = raw.strip()
        at = line.find(VERSION_FIELD)
        end = line.find(b'"', at + len(VERSION_FIELD)) if at >= 0 else -1
        if at > 0 and end > 0 and line[:1] == b"{" and line[-1:] == b"}" and line.count(b"{") == 1:
            counts[line[at + len(VERSION_FIELD):end].decode("utf-8", "replace")] += 1
            continue
        try:
            entry = json.loads(line) if line else None
        except ValueError:
            continue
        if isinstance(entry, dict):
            counts[str(entry.get("model_version"))] += 1
    return counts


def request_counts(path: Path) -> Counter:
    """Requests per model version ever logged in ``path``: the summary, ``.1`` if the summary does not hold it yet,
    and the live file."""
    with _locked(path, fcntl.LOCK_SH, create=False):  # a reader creates nothing
        summary = read_summary(path) or EMPTY
        counts = Counter({str(k): int(v) for k, v in summary["requests"].items()})
        identity = _identity(rotated_path(path))
        if identity is not None and summary.get("absorbed") != identity:
            counts.update(count_versions(rotated_path(path)))
        counts.update(count_versions(path))
    return counts
