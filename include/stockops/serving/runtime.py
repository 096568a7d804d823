"""The serving processes: the proxy at the stable address, the bentos behind it, the supervisor.

Each is started in a session of its own (so it outlives the Airflow task that started it), on
loopback unless configured, with telemetry off, its pid recorded in ``processes.json`` at once
(:func:`stockops.serving.state.own`), and stopped by process id (its whole session) — never by name.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime

from stockops.core.processes import PROCESS_TOKEN, http_json, port_in_use, stop_pid_tree, venv_bin, wait_until
from stockops.core.settings import Settings
from stockops.serving import state

log = logging.getLogger(__name__)

# True in a process that supervises the endpoint itself (the supervisor, the serving agent):
# it must not start a second supervisor.
SUPERVISED_HERE = False


class ServingError(RuntimeError):
    """The serving side could not be started or changed; the message says what is still serving."""


def environment(settings: Settings) -> dict[str, str]:
    """Environment for every serving process: stores and logs under the home, telemetry off."""
    from stockops.core.settings import quiet_environment

    return {**os.environ, **quiet_environment(),
            "BENTOML_HOME": str(settings.bentoml_home), "STOCKOPS_HOME": str(settings.home),
            "STOCKOPS_PREDICTION_LOG": str(settings.prediction_log),
            "STOCKOPS_ALLOWED_HOSTS": ",".join(settings.allowed_hosts),
            "STOCKOPS_LOG_MAX_BYTES": str(settings.log_max_bytes)}


def _spawn(settings: Settings, argv: list[str], log_name: str, role: str, env: dict[str, str] | None = None,
           **fields: object) -> tuple[subprocess.Popen, dict]:
    """Start ``argv`` detached, its stdout in ``logs/<log_name>`` (rotated before the start), and own it:
    the process and its ownership record."""
    out = state.logs_dir(settings) / log_name
    state.rotate_if_large(out, settings.log_max_bytes)
    token = uuid.uuid4().hex  # inherited by every process it starts: found even once re-parented
    state.intend(settings, token, role)  # a starter killed before it owns the process leaves this to find it by
    # the child keeps its own copy of the descriptor; it and what it writes are the owner's alone (umask)
    with os.fdopen(os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as handle:
        proc = subprocess.Popen(argv, cwd=settings.serving_dir,
                                env={**environment(settings), **(env or {}), PROCESS_TOKEN: token},
                                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, umask=0o077)
    checkpoint("spawned")  # the fault test's kill between a start and its record
    return proc, state.own(settings, proc.pid, role, token=token, **fields)


def checkpoint(step: str) -> None:
    """A fault-injection point: the process kills itself here when ``STOCKOPS_FAULT_KILL_AT`` names
    ``step`` (the fault tests kill a deploy this way, deterministically, at each step whose recovery differs)."""
    if os.environ.get("STOCKOPS_FAULT_KILL_AT") == step:
        log.warning("STOCKOPS_FAULT_KILL_AT=%s: killing this process (pid %d) now", step, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)


def stop_owned(settings: Settings, pids: set[int], grace: float = 10) -> None:
    """Stop these owned processes and everything they started (by pid while it is theirs, and by the
    token their children inherited), then forget them."""
    records = {r["pid"]: r for r in state.owned(settings)}
    for pid in pids:
        record = records.get(pid, {"pid": pid})
        stop_pid_tree(pid if state.pid_matches(record) else None, grace=grace, token=record.get("token"))
    state.disown(settings, set(pids))


# ---- bentos ---------------------------------------------------------------------------------------
# A bento built now runs the LSTM in numpy and never imports TensorFlow. One built before (the network's compiled
# SavedModel signature) does, and ``import tensorflow`` imports Keras eagerly (``keras.src.optimizers``, and
# scikit-learn with it): 4-5 s of a 6-7 s import. With ``TF_USE_LEGACY_KERAS=1`` TensorFlow looks for ``tf_keras``
# instead, which this project does not install, and skips the eager import (it catches the ImportError); the
# signature's answers are bit-identical. Training processes never see this variable.
BENTO_ENV = {"TF_USE_LEGACY_KERAS": "1"}

def start_bento(settings: Settings, bento_tag: str, port: int) -> subprocess.Popen:
    """``bentoml serve <bento_tag>`` on 127.0.0.1:``port``; its logging rotates in its own log file."""
    name = f"{bento_tag.replace(':', '-')}-{port}"
    log.info("starting %s on 127.0.0.1:%d (log %s)", bento_tag, port, state.logs_dir(settings) / f"{name}.log")
    proc, _ = _spawn(settings, [venv_bin("bentoml"), "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)],
                     f"{name}.out", "bento", env={"STOCKOPS_BENTO_LOG": str(state.logs_dir(settings) / f"{name}.log"),
                                                  **BENTO_ENV}, bento_tag=bento_tag, port=port)
    return proc


def bento_ready(url: str, timeout: float = 2) -> bool:
    try:
        return http_json(f"{url}/readyz", timeout=timeout)[0] == 200
    except OSError:
        return False


# ---- the proxy --------------------------------------------------------------------------------------
def proxy_answers(url: str, timeout: float = 2) -> bool:
    """Does the stockops proxy answer at ``url``? (False, not an error, when nothing listens.)"""
    try:
        status, body = http_json(f"{url}/-/stockops/upstream", timeout=timeout)
    except OSError:
        return False
    return status == 200 and isinstance(body, dict)


def proxy_record(settings: Settings) -> dict:
    """The proxy's record ({} if none, unreadable, or another home's)."""
    return state.read_ours(settings, state.proxy_record_path(settings))


def listener_on(host: str, port: int) -> int | None:
    """The pid listening on ``host:port`` (None if nothing, or not visible to this user)."""
    import psutil

    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        address = conn.laddr
        if conn.status == psutil.CONN_LISTEN and conn.pid and isinstance(address, tuple) and len(address) == 2 \
                and address[1] == port and address[0] in (host, "0.0.0.0", "::"):
            return conn.pid
    return None


def proxy_on_port(settings: Settings) -> dict:
    """The record of the stockops proxy of this home found listening on its port ({} if there is none):
    what rebuilds an unreadable ``proxy.json``."""
    import psutil

    pid = listener_on(settings.serve_host, settings.serve_port)
    if pid is None:
        return {}
    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
    except psutil.Error:
        return {}
    if "stockops.serving.proxy" not in cmdline or str(settings.serving_state) not in cmdline:
        return {}  # another program, or the proxy of another home
    return {"pid": pid, "create_time": proc.create_time(), "url": settings.serve_url, "port": settings.serve_port,
            "started_at": state.now(), "rebuilt": True, **state.home_fields(settings)}


def ensure_proxy(settings: Settings) -> dict:
    """Start the stable-address proxy unless it already runs; return its record."""
    record = proxy_record(settings)
    url = settings.serve_url
    if state.pid_matches(record) and proxy_answers(url):
        return record
    if record.get("pid"):  # dead, or alive but not answering (hung): whatever is left of it goes
        stop_owned(settings, {int(record["pid"])}, grace=2)
    found = proxy_on_port(settings)
    if found and proxy_answers(url):  # its record was lost or unreadable: the running proxy is kept
        state.write(state.proxy_record_path(settings), found)
        log.warning("adopted the running proxy (pid %d) at %s: its record was missing or unreadable", found["pid"], url)
        return found
    if port_in_use(settings.serve_host, settings.serve_port):
        raise ServingError(f"{url} is taken by a process that is not the stockops proxy: free the port or set "
                           "STOCKOPS_SERVE_PORT")
    settings.serving_dir.mkdir(parents=True, exist_ok=True)
    proc, owned = _spawn(settings, [sys.executable, "-m", "stockops.serving.proxy", "--state", str(settings.serving_state),
                                    "--host", settings.serve_host, "--port", str(settings.serve_port),
                                    "--log", str(state.logs_dir(settings) / "proxy.log"),
                                    "--max-log-bytes", str(settings.log_max_bytes)], "proxy.out", "proxy")
    wait_until(lambda: proxy_answers(url), timeout=30, interval=0.1, what=f"proxy at {url}", proc=proc)
    record = {"pid": proc.pid, "create_time": owned["create_time"], "url": url, "port": settings.serve_port,
              "started_at": owned["started_at"], **state.home_fields(settings)}
    state.write(state.proxy_record_path(settings), record)
    log.info("serving proxy started at %s (pid %d)", url, proc.pid)
    return record


# ---- the supervisor ------------------------------------------------------------------------------
SUPERVISOR_START_S = 60.0  # a new supervisor's first heartbeat may take this long (imports on a loaded machine)


def supervisor_state(settings: Settings) -> tuple[dict, str | None]:
    """The supervisor's record and what is wrong with it: None (alive, beating), "gone", "hung" (alive, its
    heartbeat older than ``settings.supervisor_stale_s`` outside a declared busy spell) or "unreadable"."""
    import time

    path = state.supervisor_record_path(settings)
    try:
        record = state.read(path, "")
    except state.CorruptState:
        return {}, "unreadable"
    if not state.ours(settings, record):
        return {}, "gone"
    if not state.pid_matches(record):
        return record, "gone"
    now = time.time()
    beat = float(record.get("heartbeat_at") or 0)
    if now - beat > settings.supervisor_stale_s and now > float(record.get("busy_until") or 0):
        return record, "hung"
    return record, None


def ensure_supervisor(settings: Settings) -> dict | None:
    """Start ``python -m stockops.serving supervise`` unless it runs (local mode; the agent supervises itself).

    A supervisor that runs but stopped beating (hung, SIGSTOPped) is stopped and replaced; a dead one is
    replaced. Each such outage is an incident (component ``supervisor``). One that runs while its record is
    lost or unreadable (it holds the supervisor lock) is named again, not doubled."""
    import time

    if settings.serving_mode != "local" or SUPERVISED_HERE:
        return None
    path = state.supervisor_record_path(settings)
    record, problem = supervisor_state(settings)
    if problem is None:
        return record
    if problem == "unreadable":  # kept for evidence; rebuilt below from the lock's holder, or a new start
        state.set_aside(path)
        record, problem = {}, "gone"
    holder = state.supervisor_lock_holder(settings)
    if holder and holder.get("pid") != record.get("pid"):
        named = {**holder, "heartbeat_at": time.time(), "busy_until": 0.0, **state.home_fields(settings)}
        state.write(path, named)  # it rewrites this every second; if it is hung, the next look finds it so
        return named
    cause = None
    if record:
        cause = (f"the supervisor (pid {record.get('pid')}) is gone" if problem == "gone" else
                 f"the supervisor (pid {record['pid']}) stopped beating: its last heartbeat is "
                 f"{_age(record):.0f} s old")
    if problem == "hung":  # SIGKILL (a stopped process dies of nothing else), to it alone: the bentos it started
        _kill_alone(record)  # are its children, and they keep serving
    return _start_supervisor(settings, cause, record)


def _kill_alone(record: dict) -> None:
    """SIGKILL the process of ``record`` (if it is still that process), none of its children; wait for it."""
    import signal
    import time

    if not state.pid_matches(record) or int(record["pid"]) <= 1:
        return
    os.kill(int(record["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while state.pid_matches(record) and time.monotonic() < deadline:
        time.sleep(0.05)


def _age(record: dict) -> float:
    import time

    return time.time() - float(record.get("heartbeat_at") or 0)


def _start_supervisor(settings: Settings, cause: str | None, old: dict) -> dict:
    import time

    from stockops.core import audit

    detected = state.now()
    proc, owned = _spawn(settings, [sys.executable, "-m", "stockops.serving", "supervise"], "supervisor.out",
                         "supervisor", env=_supervisor_env())
    record = {"pid": proc.pid, "create_time": owned["create_time"], "started_at": owned["started_at"],
              "heartbeat_at": time.time(), "busy_until": time.time() + SUPERVISOR_START_S,
              **state.home_fields(settings)}
    state.write(state.supervisor_record_path(settings), record)
    if cause:
        log.error("serving incident: %s; started a new supervisor (pid %d)", cause, proc.pid)
        last = float(old.get("heartbeat_at") or time.time())
        audit.record(settings.incident_log, "incident", component="supervisor", cause=cause, status="recovered",
                     detected_at=detected, recovered_at=state.now(), action=f"started a new supervisor (pid {proc.pid})",
                     downtime_s=round(time.time() - last, 2), attempts=1,
                     started_at=datetime.fromtimestamp(last, UTC).isoformat(timespec="milliseconds"))
    else:
        log.info("serving supervisor started (pid %d)", proc.pid)
    return record


def _supervisor_env() -> dict[str, str]:
    """MLflow calls from the supervisor fail fast (a hung tracking server delays nothing for long)."""
    return {"MLFLOW_HTTP_REQUEST_TIMEOUT": os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")}


def watch_supervisor(settings: Settings) -> dict | None:
    """The supervisor's watcher (``make run``'s launcher, every second; ``stock_monitor``'s health step):
    restart it if it is dead or hung, where this home serves something (a proxy or a deploy record)."""
    if not (state.supervisor_record_path(settings).exists() or settings.serving_state.exists()
            or state.proxy_record_path(settings).exists()):
        return None  # nothing served yet, or stopped on purpose (stop_serving removes every record)
    return ensure_supervisor(settings)


def ensure_running(settings: Settings) -> None:
    """The proxy and the supervisor, each started if it does not run."""
    ensure_proxy(settings)
    ensure_supervisor(settings)


def stop_orphans(settings: Settings, starting: frozenset[int] = frozenset()) -> list[dict]:
    """Stop every owned process no state file names (call with the deploy lock held); ``starting``:
    pids the caller is starting itself (named once they are ready)."""
    found = [r for r in state.orphans(settings) if r["pid"] not in starting]
    for record in found:
        log.warning("stopping orphan %s %s (%s), started %s and named by no serving state", record["role"],
                    f"pid {record['pid']}" if record["pid"] else f"with token {record['token']} (its starter died "
                    "before it recorded the pid)", record.get("bento_tag", ""), record["started_at"])
    intents = [r for r in found if r["pid"] is None]
    for record in intents:
        stop_pid_tree(None, grace=5, token=record["token"])
    if intents:
        state.disown(settings, set())  # their tokens gone, their records go
    if len(found) > len(intents):
        stop_owned(settings, {r["pid"] for r in found if r["pid"] is not None}, grace=5)
    return found


def stop_serving(settings: Settings) -> None:
    """Stop the supervisor, the bentos, the proxy and every other process the serving side owns
    (children that outlived their parent included)."""
    supervisor = state.supervisor_record_path(settings)
    records = {r["pid"]: r for r in state.owned(settings)}
    for path in (supervisor, state.proxy_record_path(settings)):
        record = state.read_ours(settings, path)
        # the serving agent is its own supervisor: stopping, it stops what it runs, not itself
        if state.pid_matches(record) and int(record["pid"]) != os.getpid():
            stop_pid_tree(int(record["pid"]), grace=5, token=records.get(record["pid"], {}).get("token"))
        if path == supervisor:  # first, so that it heals nothing while the rest stops
            path.unlink(missing_ok=True)
    # read again: a spare the supervisor started (and recorded) while this was reading is stopped too
    records = {r["pid"]: r for r in state.owned(settings)}
    for record in (state.current_or_empty(settings), state.standby(settings)):
        if record.get("pid") not in records and state.pid_matches(record):  # written before ownership records
            stop_pid_tree(int(record["pid"]), grace=15)
    stop_owned(settings, set(records), grace=15)
    for path in (settings.serving_state, settings.serving_standby, state.proxy_record_path(settings),
                 settings.serving_processes):
        path.unlink(missing_ok=True)
