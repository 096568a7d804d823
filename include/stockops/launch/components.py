"""The processes under the platform facade (:class:`stockops.launch.local.LocalPlatform`) and what they are given.

Airflow's components (api-server, scheduler, dag-processor, triggerer: what ``airflow standalone``
runs, without the log servers, see :data:`COMPONENTS`) run as children of one runner,
``python -m stockops.launch.components`` (:func:`run_components`); the launcher watches the serving
supervisor while they run (:func:`watch`) and stops every tree it started by process id
(:func:`stop_process_tree`). The folders, logs and secrets the processes are started with are created
owner-only here (:func:`private_dir`, :func:`private_log`, :func:`write_secret`,
:func:`ensure_admin_password`); the multi-machine layout (:mod:`stockops.launch.cluster`) uses the same.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from stockops.core.processes import stop_pid_tree, venv_bin
from stockops.core.settings import Settings

log = logging.getLogger(__name__)

# What `airflow standalone` runs, minus the log servers. Airflow 3.3 binds the scheduler's (8793)
# and the triggerer's (8794) log servers to every interface and has no setting for the address
# (airflow/utils/serve_logs/core.py passes host=""). On one machine they serve nothing the
# api-server cannot read from the shared logs folder itself, so they are not started at all.
COMPONENTS = (("api-server",), ("scheduler", "--skip-serve-logs"), ("dag-processor",),
              ("triggerer", "--skip-serve-logs"))


# ---- files that hold secrets --------------------------------------------------------------------
def private_dir(path: Path) -> Path:
    """Create ``path`` owner-only (0700), or make it so: it holds secrets, or logs that might."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def private_log(path: Path) -> BinaryIO:
    """``path`` opened for appending, owner-only (0600) even where an older copy was world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` created 0600: never readable by others, not even for a moment."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def ensure_admin_password(path: Path) -> None:
    """Create the simple auth manager's password file with a random admin password, unless it exists.

    Left to Airflow, the api-server generates the password and prints it to stdout, which is
    the platform's log; a file that is already there is only read (and kept at 0600).
    """
    if path.exists():
        path.chmod(0o600)
        return
    write_secret(path, json.dumps({"admin": secrets.token_urlsafe(16)}) + "\n")


# ---- the processes ------------------------------------------------------------------------------
def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """``kill PID`` of this process stops it as cleanly as Ctrl-C does (SIGTERM raises KeyboardInterrupt)."""
    signal.signal(signal.SIGTERM, _interrupt)


def ignore_interrupts() -> None:
    """From now on SIGINT and SIGTERM are ignored: the process is already stopping everything it started."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def stop_process_tree(proc: subprocess.Popen, grace: float = 20) -> None:
    """Stop ``proc`` and every process it started, by process id."""
    stop_pid_tree(proc.pid, grace)
    proc.poll()


def watch(settings: Settings, proc: subprocess.Popen, poll_s: float = 1.0) -> int:
    """Until Airflow exits: every ``poll_s``, the serving supervisor's watcher (a dead or hung supervisor is
    replaced, its outage an incident: :func:`stockops.serving.runtime.watch_supervisor`). The launcher is
    the foreground process of ``make run``; Airflow's components are its children and stop with it."""
    from stockops.serving.runtime import watch_supervisor

    while proc.poll() is None:
        try:
            watch_supervisor(settings)
        except Exception as exc:  # noqa: BLE001 - the watcher must outlive any one failed look
            log.error("watching the serving supervisor failed: %s", exc)
        time.sleep(poll_s)
    return proc.returncode


def run_components(components: Sequence[Sequence[str]] = COMPONENTS, poll_s: float = 1.0) -> int:
    """Run Airflow's components as children until one exits or this process is told to stop.

    What ``airflow standalone`` does for ``make run``, with the arguments standalone cannot
    pass (``--skip-serve-logs``). One component that dies takes the others down with it, so the
    launcher sees the platform exit (with that component's code) instead of half a platform.
    """
    stop_on_sigterm()
    procs = {component[0]: subprocess.Popen([venv_bin("airflow"), *component]) for component in components}
    try:
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"airflow {name} exited with {proc.returncode}: stopping the other components", flush=True)
                    return proc.returncode or 1
            time.sleep(poll_s)
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in procs.values():  # all at once: components shut down in parallel
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            stop_process_tree(proc)


if __name__ == "__main__":
    sys.exit(run_components())
