"""Starting and stopping the platform's own processes, always by process id (never by name)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def venv_bin(name: str) -> str:
    """The ``name`` console script of this interpreter's environment (falls back to PATH)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


PROCESS_TOKEN = "STOCKOPS_PROCESS_TOKEN"  # set in the environment of a process the platform starts


def stop_pid_tree(pid: int | None, grace: float = 20, token: str | None = None) -> None:
    """Stop process ``pid`` and every process it started: SIGTERM, then SIGKILL after ``grace``.

    Servers such as ``airflow standalone`` and ``bentoml serve`` put children in sessions of
    their own, so a process-group signal does not reach them: walk the tree instead. A
    ``token`` (the ``PROCESS_TOKEN`` the process was started with, which its children inherit)
    also finds the children left behind when the parent was killed outright — BentoML's
    workers start sessions of their own and outlive a killed arbiter. ``pid`` None: only those.
    """
    import psutil

    if pid is not None and (pid <= 1 or pid in (os.getpid(), os.getppid())):
        raise ValueError(f"refusing to stop pid {pid}: init or this process itself (a stale record?)")
    found = {p.pid: p for p in (_tree_and_session(pid) if pid is not None else [])}
    if token:
        found.update({p.pid: p for p in carrying(token)})
    tree = [p for p in found.values() if p.pid not in (os.getpid(), os.getppid())]
    if not tree:
        return
    for p in tree:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def tokens_alive() -> dict[str, list[int]]:
    """Every ``PROCESS_TOKEN`` carried by a live process now, with the pids carrying it."""
    import psutil

    alive: dict[str, list[int]] = {}
    for proc in psutil.process_iter():
        try:
            token = proc.environ().get(PROCESS_TOKEN)
        except (psutil.Error, OSError):
            continue
        if token and _running(proc):
            alive.setdefault(token, []).append(proc.pid)
    return alive


def carrying(token: str) -> list:
    """The live processes started with ``token`` (or by one that was)."""
    import psutil

    return [psutil.Process(pid) for pid in tokens_alive().get(token, []) if pid_alive(pid)]


def _tree_and_session(pid: int) -> list:
    """``pid``, its descendants, and every process left in the session ``pid`` led.

    The platform starts servers with ``start_new_session=True``, so their session id is their
    pid: when the leader was killed outright, its workers (re-parented to init) are still found.
    """
    import psutil

    found: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        found = {p.pid: p for p in (root, *root.children(recursive=True))}
    except psutil.NoSuchProcess:
        pass
    for proc in psutil.process_iter():
        try:
            if proc.pid not in found and os.getsid(proc.pid) == pid:
                found[proc.pid] = proc
                found.update({c.pid: c for c in proc.children(recursive=True)})
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return [p for p in found.values() if _running(p)]


def _running(proc) -> bool:
    """Alive and not a zombie (a dead child nobody reaped: nothing to stop, and waiting on it never ends)."""
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pid_alive(pid: int | None) -> bool:
    import psutil

    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_json(url: str, payload: object | None = None, timeout: float = 10,
              headers: dict[str, str] | None = None) -> tuple[int, object]:
    """GET (or POST JSON) and return ``(status, parsed body or text)``; HTTP errors are returned, not raised."""
    data = json.dumps(payload).encode() if payload is not None else None
    all_headers = {**({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})}
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def wait_until(check, timeout: float, interval: float = 0.5, what: str = "condition", proc=None) -> None:
    """Poll ``check()`` until it is truthy; fail early if ``proc`` (a Popen) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode} before it was ready")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what}: not ready within {timeout:.0f} s")
