"""The serving state files, and the processes the serving side owns.

Under ``settings.serving_dir``:

* ``current.json`` — what the stable address routes to (``upstream``, ``port``, ``pid``,
  ``bento_tag``, ``version``). The proxy re-reads it; a deploy replaces it atomically.
* ``standby.json`` — the previous bento, kept running after a switch (a rollback to it is a switch).
* ``processes.json`` — every process the serving side started (pid, its start time, role, bento
  tag), written right after the start and before anything waits on it, so a deploy killed at
  any point leaves nothing untracked: the supervisor (or the next start) stops what no state
  file names (:func:`orphans`).
* ``proxy.json``, ``supervisor.json`` — the proxy's and the supervisor's process records.
* ``.deploy.lock`` — held by whoever changes what is served (:func:`deploy_lock`); the kernel
  drops it when the holder dies.

Every file is replaced atomically (temporary file + rename). A file that is unreadable anyway
(a disk fault, a hand edit) raises :class:`CorruptState`, which names the file and the way out;
nothing reading it stops a running server because of it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from stockops.audit import CorruptState
from stockops.config import Settings


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read(path: Path, way_out: str) -> dict:
    """The JSON object in ``path`` ({} if there is none); :class:`CorruptState` if it is unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CorruptState(path, f"not valid JSON: {exc}; {len(text)} bytes", way_out) from None
    if not isinstance(data, dict):
        raise CorruptState(path, f"a JSON {type(data).__name__}, not an object", way_out)
    return data


def write(path: Path, data: dict) -> None:
    from stockops.data.store import atomic_write_json

    atomic_write_json(path, data)


REPAIR = ("the serving supervisor rewrites it from the proxy's last good state and @champion within seconds; by hand: "
          "`python -m stockops.serving reconcile`. The running servers were not touched")


def proxy_record_path(settings: Settings) -> Path:
    return settings.serving_proxy_record


def supervisor_record_path(settings: Settings) -> Path:
    return settings.serving_supervisor_record


def current(settings: Settings) -> dict:
    """What the stable address routes to now (empty if nothing was deployed)."""
    return read(settings.serving_state, REPAIR)


def current_or_empty(settings: Settings) -> dict:
    """:func:`current`, with a corrupt file read as "nothing known" (for the healer, which rewrites it)."""
    try:
        return current(settings)
    except CorruptState:
        return {}


def standby(settings: Settings) -> dict:
    """The warm standby, if its process still runs (a corrupt record counts as none: it only saves time)."""
    try:
        record = read(settings.serving_standby, "")
    except CorruptState:
        return {}
    return record if pid_matches(record) else {}


# ---- owned processes ------------------------------------------------------------------------
def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def pid_matches(record: dict) -> bool:
    """Is the process of ``record`` alive and the same one (not a reused pid)?"""
    from stockops.processes import pid_alive

    pid = record.get("pid")
    if pid is None or not pid_alive(pid):
        return False
    created = record.get("create_time")
    return created is None or abs((_create_time(int(pid)) or 0) - float(created)) < 1.0


@contextmanager
def _processes_lock(settings: Settings) -> Iterator[None]:
    from stockops.data.store import file_lock

    with file_lock(settings.serving_dir / ".processes.lock"):
        yield


def owned(settings: Settings) -> list[dict]:
    """Every process record the serving side wrote and has not yet seen gone."""
    try:
        return list(read(settings.serving_processes, "").get("processes", []))
    except CorruptState:
        return []  # rebuilt from current/standby/proxy records on the next adopt


def running(record: dict, tokens: dict[str, list[int]] | None = None) -> bool:
    """Is anything of ``record`` still running: its process, or a child that outlived it (its token)?"""
    from stockops.processes import tokens_alive

    if pid_matches(record):
        return True
    token = record.get("token")
    return bool(token) and token in (tokens if tokens is not None else tokens_alive())


def own(settings: Settings, pid: int, role: str, **fields: object) -> dict:
    """Record that the serving side started ``pid`` (call right after the start)."""
    from stockops.processes import tokens_alive

    record = {"pid": pid, "create_time": _create_time(pid), "role": role, "started_at": now(), **fields}
    with _processes_lock(settings):
        tokens = tokens_alive()
        kept = [p for p in owned(settings) if p.get("pid") != pid and running(p, tokens)]
        write(settings.serving_processes, {"processes": [*kept, record]})
    return record


def disown(settings: Settings, pids: set[int]) -> None:
    from stockops.processes import tokens_alive

    with _processes_lock(settings):
        tokens = tokens_alive()
        kept = [p for p in owned(settings) if p.get("pid") not in pids and running(p, tokens)]
        write(settings.serving_processes, {"processes": kept})


def orphans(settings: Settings) -> list[dict]:
    """Owned processes (or their children) still running but named by no state file: a deploy that
    died midway, or a bento whose arbiter was killed while its workers went on."""
    from stockops.processes import tokens_alive

    served = current_or_empty(settings)
    named = {served.get("pid"), standby(settings).get("pid"), *(s.get("pid") for s in served.get("spares", []))}
    for path in (proxy_record_path(settings), supervisor_record_path(settings)):
        try:
            named.add(read(path, "").get("pid"))
        except CorruptState:
            pass
    tokens = tokens_alive()
    return [p for p in owned(settings) if p.get("pid") not in named and running(p, tokens)]


# ---- the deploy lock -----------------------------------------------------------------------
def _lock_path(settings: Settings) -> Path:
    settings.serving_dir.mkdir(parents=True, exist_ok=True)
    return settings.serving_dir / ".deploy.lock"


@contextmanager
def deploy_lock(settings: Settings) -> Iterator[None]:
    """Held from a deploy's first look at the state to its last record: changes of what is served,
    of ``@champion`` and of the audit log happen one at a time, in this critical section."""
    with open(_lock_path(settings), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def try_deploy_lock(settings: Settings) -> Iterator[bool]:
    """The deploy lock if it is free now (True), else False at once: a deploy is under way."""
    with open(_lock_path(settings), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def logs_dir(settings: Settings) -> Path:
    settings.serving_logs_dir.mkdir(parents=True, exist_ok=True)
    return settings.serving_logs_dir


def rotate_if_large(path: Path, max_bytes: int, keep: int = 3) -> None:
    """Rotate ``path`` (``.1`` … ``.keep``) when it is over ``max_bytes``: a process's stdout file
    is rotated before each start, its own logging rotates while it runs."""
    if not path.exists() or path.stat().st_size <= max_bytes:
        return
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))
