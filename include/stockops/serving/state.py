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
  drops it when the holder dies. Its holder writes who it is into it; a waiter gives up after a
  timeout with a message naming the holder.

Every record names its **home** (and every process record its port, where it has one): a copy
of a home (a backup, a restore test) reads the original's records as foreign and stops,
adopts or sweeps nothing of the original (:func:`ours`).

Every file is replaced atomically (temporary file + rename). A file that is unreadable anyway
(a disk fault, a hand edit) raises :class:`CorruptState`, which names the file and the way out;
nothing reading it stops a running server because of it: while any record is unreadable the
orphan sweep stops nothing (:func:`orphans`), and the supervisor sets the file aside for evidence
(:func:`set_aside`, ``<name>.corrupt-<time>``) and rebuilds it from what runs (``repair`` in
:mod:`stockops.serving.supervisor`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from stockops.core.audit import CorruptState
from stockops.core.settings import Settings
from stockops.storage.files import flock_within


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


def write(path: Path, data: dict, durable: bool = True) -> None:
    """Replace ``path`` atomically (0600); ``durable=False`` skips the fsyncs (a heartbeat, rewritten every second)."""
    from stockops.storage.files import atomic_write_json

    if durable:
        atomic_write_json(path, data)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, sort_keys=True, default=str)
    os.replace(tmp, path)


def set_aside(path: Path) -> Path | None:
    """Move an unreadable record out of the way, kept for evidence as ``<name>.corrupt-<UTC time>``."""
    target = path.with_name(f"{path.name}.corrupt-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%f')}")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    return target


def ours(settings: Settings, record: dict) -> bool:
    """Was ``record`` written by this home? (Records name their home; older ones, without it, count as ours.)"""
    home = record.get("home")
    return home is None or home == str(settings.home)


def home_fields(settings: Settings) -> dict:
    return {"home": str(settings.home)}


def read_ours(settings: Settings, path: Path) -> dict:
    """A process record of this home: {} if there is none, it is unreadable, or it names another home."""
    try:
        record = read(path, "")
    except CorruptState:
        return {}
    return record if ours(settings, record) else {}


def unreadable(settings: Settings) -> list[Path]:
    """The serving record files that exist but cannot be read now."""
    found = []
    for path in (settings.serving_state, settings.serving_standby, settings.serving_processes,
                 proxy_record_path(settings), supervisor_record_path(settings)):
        try:
            read(path, "")
        except CorruptState:
            found.append(path)
    return found


REPAIR = ("the serving supervisor rewrites it from the proxy's last good state and @champion within seconds; by hand: "
          "`python -m stockops.serving reconcile`. The running servers were not touched")


def proxy_record_path(settings: Settings) -> Path:
    return settings.serving_proxy_record


def supervisor_record_path(settings: Settings) -> Path:
    return settings.serving_supervisor_record


def current(settings: Settings) -> dict:
    """What the stable address routes to now (empty if nothing was deployed, or if it is another home's)."""
    record = read(settings.serving_state, REPAIR)
    return record if ours(settings, record) else {}


def current_or_empty(settings: Settings) -> dict:
    """:func:`current`, with a corrupt file read as "nothing known" (for the healer, which rewrites it)."""
    try:
        return current(settings)
    except CorruptState:
        return {}


def standby(settings: Settings) -> dict:
    """The warm standby, if its process still runs (a corrupt record counts as none: it only saves time)."""
    record = read_ours(settings, settings.serving_standby)
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
    from stockops.core.processes import pid_alive

    pid = record.get("pid")
    if pid is None or not pid_alive(pid):
        return False
    created = record.get("create_time")
    return created is None or abs((_create_time(int(pid)) or 0) - float(created)) < 1.0


@contextmanager
def _processes_lock(settings: Settings) -> Iterator[None]:
    from stockops.storage.files import file_lock

    with file_lock(settings.serving_dir / ".processes.lock"):
        yield


def owned(settings: Settings) -> list[dict]:
    """Every process record of this home the serving side wrote and has not yet seen gone."""
    try:
        records = read(settings.serving_processes, "").get("processes", [])
    except CorruptState:
        return []  # set aside and rebuilt from the named records by the supervisor
    return [r for r in records if ours(settings, r)]


def running(record: dict, tokens: dict[str, list[int]] | None = None) -> bool:
    """Is anything of ``record`` still running: its process, or a child that outlived it (its token)?"""
    from stockops.core.processes import tokens_alive

    if pid_matches(record):
        return True
    token = record.get("token")
    return bool(token) and token in (tokens if tokens is not None else tokens_alive())


def _starter_fields() -> dict:
    return {"started_at": now(), "started_ts": time.time(), "starter": os.getpid(),
            "starter_create_time": _create_time(os.getpid())}


def intend(settings: Settings, token: str, role: str) -> None:
    """Record a start about to happen (call right before it): no pid yet, only the token the process will carry.
    A starter killed between the start and :func:`own` leaves this record, so what it started is found by its
    token and stopped as an orphan rather than running unnamed."""
    record = {"pid": None, "token": token, "role": role, "intent": True, **_starter_fields(), **home_fields(settings)}
    with _processes_lock(settings):
        write(settings.serving_processes, {"processes": [*_kept(settings), record]})


def own(settings: Settings, pid: int, role: str, **fields: object) -> dict:
    """Record that the serving side started ``pid`` (call right after the start; it replaces the start's
    :func:`intend` record). The record names this home and the process that started it (``starter``): while the
    starter runs and the start is young, the process is being started, not orphaned (:func:`orphans`)."""
    record = {"pid": pid, "create_time": _create_time(pid), "role": role, **_starter_fields(),
              **home_fields(settings), **fields}
    with _processes_lock(settings):
        token = fields.get("token")
        kept = [p for p in _kept(settings) if p.get("pid") != pid and (token is None or p.get("token") != token)]
        write(settings.serving_processes, {"processes": [*kept, record]})
    return record


def _kept(settings: Settings, drop: Collection[int] = ()) -> list[dict]:
    """The owned records still worth keeping (call under the processes lock): what still runs, and intents whose
    starter is still starting them."""
    from stockops.core.processes import tokens_alive

    tokens = tokens_alive()
    return [p for p in owned(settings) if p.get("pid") not in drop and (running(p, tokens) or _intending(settings, p))]


def _intending(settings: Settings, record: dict) -> bool:
    """An intent whose starter is alive and young: the process may not exist yet."""
    return bool(record.get("intent")) and _starter_busy(settings, record)


def disown(settings: Settings, pids: set[int]) -> None:
    with _processes_lock(settings):
        write(settings.serving_processes, {"processes": _kept(settings, drop=set(pids))})


def orphans(settings: Settings) -> list[dict]:
    """Owned processes (or their children) still running but named by no state file: a deploy that
    died midway, or a bento whose arbiter was killed while its workers went on.

    None while any record is unreadable (a process it names would look orphaned: never stop a healthy
    server for a corrupt file), and none still being started by a live starter (a spare the supervisor's
    own thread started a moment ago, a deploy's new bento before its switch)."""
    from stockops.core.processes import tokens_alive

    if unreadable(settings):
        return []
    served = current_or_empty(settings)
    named = {served.get("pid"), standby(settings).get("pid"), *(s.get("pid") for s in served.get("spares", []))}
    for path in (proxy_record_path(settings), supervisor_record_path(settings)):
        named.add(read_ours(settings, path).get("pid"))
    tokens = tokens_alive()
    return [p for p in owned(settings) if running(p, tokens) and (
        not _intending(settings, p) if p.get("intent") else p.get("pid") not in named and not starting(settings, p))]


def starting(settings: Settings, record: dict) -> bool:
    """Is ``record``'s process still being started: itself and its starter alive, the start younger than a
    bento's ready timeout (plus a minute for its checks)? (Leftovers of a dead one are orphans at once.)"""
    return _starter_busy(settings, record) and pid_matches(record)


def _starter_busy(settings: Settings, record: dict) -> bool:
    """Is the process that started ``record`` alive, and the start younger than a bento's ready timeout (plus a
    minute for its checks)?"""
    starter = {"pid": record.get("starter"), "create_time": record.get("starter_create_time")}
    young = time.time() - float(record.get("started_ts") or 0) < settings.serve_ready_timeout_s + 60
    return young and starter["pid"] is not None and pid_matches(starter)


# ---- the deploy lock -----------------------------------------------------------------------
def _lock_path(settings: Settings) -> Path:
    settings.serving_dir.mkdir(parents=True, exist_ok=True)
    return settings.serving_dir / ".deploy.lock"


def _open_lock(settings: Settings):
    return os.fdopen(os.open(_lock_path(settings), os.O_RDWR | os.O_CREAT, 0o600), "r+")


class LockTimeout(TimeoutError):
    """The deploy lock stayed held past the wait's timeout; the message names the holder."""


def lock_holder(settings: Settings) -> dict:
    """Who holds (or last held) the deploy lock: its pid, what it does, since when."""
    try:
        return json.loads(_lock_path(settings).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe_holder(holder: dict) -> str:
    if not holder:
        return "a process that wrote no name"
    alive = "" if pid_matches(holder) else ", no longer running"
    return f"pid {holder.get('pid')} ({holder.get('what', '?')}, since {holder.get('since', '?')}{alive})"


def _hold(handle, what: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "create_time": _create_time(os.getpid()), "what": what,
                             "since": now()}))
    handle.flush()


FLEET_LOCK = "serving/deploy"  # the records' database lock of every serving host's changes of champion
FLEET_HOLDER = "serving/deploy_holder"  # who took it last (a pointer: the lock itself names nobody)


@contextmanager
def _fleet_lock(settings: Settings, what: str, timeout: float) -> Iterator[bool]:
    """The records' database lock ``serving/deploy`` (True), or False when it stays taken past ``timeout`` (0: a
    try). Several serving hosts share ``@champion``, the audit log and the deploy log: their changes of champion
    and their reconciles take this before their own host's lock (always in that order)."""
    from stockops.storage import state_store
    from stockops.storage.records import LockTimeout as Taken

    store = state_store(settings)
    with ExitStack() as held:
        try:
            held.enter_context(store.lock(FLEET_LOCK, timeout_s=timeout))
        except Taken:
            yield False
            return
        if timeout:
            store.put(FLEET_HOLDER, {"host": settings.serving_host, "pid": os.getpid(), "what": what, "since": now()})
        yield True


@contextmanager
def deploy_lock(settings: Settings, what: str = "a deploy", timeout: float | None = None,
                shared: bool = False) -> Iterator[None]:
    """Held from a deploy's first look at the state to its last record: changes of what is served,
    of ``@champion`` and of the audit log happen one at a time, in this critical section.

    ``shared``: a change that touches what every serving host shares (``@champion``, the audit and deploy logs)
    takes the records' database lock first (:func:`_fleet_lock`); healing this host's own bento does not.

    A waiter logs who holds it every 10 s and gives up after ``timeout`` (default
    ``settings.deploy_lock_timeout_s``) with :class:`LockTimeout` naming the holder; nothing was changed."""
    timeout = settings.deploy_lock_timeout_s if timeout is None else timeout
    if not shared:
        with _host_lock(settings, what, timeout):
            yield
        return
    started = time.monotonic()
    with _fleet_lock(settings, what, timeout) as taken:
        if not taken:
            from stockops.storage import state_store

            holder = state_store(settings).get(FLEET_HOLDER)
            raise LockTimeout(f"{what} waited {timeout:.0f} s for the serving hosts' deploy lock ({FLEET_LOCK} in "
                              f"the records' database), last taken by {holder.value if holder else 'nobody known'}; "
                              "nothing was changed") from None
        with _host_lock(settings, what, max(1.0, timeout - (time.monotonic() - started))):
            yield


@contextmanager
def _host_lock(settings: Settings, what: str, timeout: float) -> Iterator[None]:
    """This host's deploy lock (``.deploy.lock`` beside its ``current.json``)."""
    import logging

    started = time.monotonic()
    next_note = started + 10
    with _open_lock(settings) as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= timeout:
                    raise LockTimeout(
                        f"{what} waited {waited:.0f} s for the deploy lock {_lock_path(settings)}, held by "
                        f"{_describe_holder(lock_holder(settings))}; nothing was changed. A supervisor that "
                        "holds it hung is restarted by its watcher; try again, or stop that pid") from None
                if time.monotonic() >= next_note:
                    next_note += 10
                    logging.getLogger(__name__).warning("%s is waiting for the deploy lock, held by %s (%.0f s so far)",
                                                        what, _describe_holder(lock_holder(settings)), waited)
                time.sleep(0.05)
        try:
            _hold(handle, what)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def try_deploy_lock(settings: Settings, what: str = "the supervisor", shared: bool = False) -> Iterator[bool]:
    """The deploy lock if it is free now (True), else False at once: a deploy is under way (``shared``: see
    :func:`deploy_lock`)."""
    if shared:
        with _fleet_lock(settings, what, 0) as taken:
            if not taken:
                yield False
                return
            with try_deploy_lock(settings, what) as free:
                yield free
        return
    with _open_lock(settings) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            _hold(handle, what)
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- the supervisor's lock: one supervisor per home --------------------------------------------------
def supervisor_lock(settings: Settings, wait_s: float = 2.0):
    """The open, exclusively locked ``.supervisor.lock`` (its holder's pid written in it), or None if another
    process holds it after ``wait_s``. Held by the supervisor for its life; the kernel drops it when it dies."""
    settings.serving_dir.mkdir(parents=True, exist_ok=True)
    handle = os.fdopen(os.open(settings.serving_dir / ".supervisor.lock", os.O_RDWR | os.O_CREAT, 0o600), "r+")
    if not flock_within(handle, wait_s, poll_s=0.1):
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "create_time": _create_time(os.getpid())}))
    handle.flush()
    return handle


def supervisor_lock_holder(settings: Settings) -> dict:
    """The supervisor holding the lock now ({pid, create_time}), or {} if none does."""
    path = settings.serving_dir / ".supervisor.lock"
    if not path.exists():
        return {}
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(path.read_text() or "{}")
            except ValueError:
                holder = {}
            return holder if pid_matches(holder) else {}
        fcntl.flock(handle, fcntl.LOCK_UN)
    return {}


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
