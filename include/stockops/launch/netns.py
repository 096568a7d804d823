"""Hosts as Linux network namespaces: a small, disposable LAN for multi-host system tests and benchmarks.

Why: the platform's claim that Celery workers may run on separate machines with no shared disk is only
proven when the processes really cannot reach each other through ``127.0.0.1`` or one working folder.
Containers would prove it too, but need an engine and images; network namespaces need only root,
``ip`` (iproute2) and ``unshare`` (util-linux), and a whole LAN of hosts starts in well under a second.

Design (one :class:`Network`):

* **Names.** A random prefix ``so`` + 4 hex digits (``so3fa9``) names every namespace it makes:
  ``<prefix>-switch`` and ``<prefix>-<host>``, so concurrent Networks never meet and anything left behind
  is recognisable. Nothing is created in the root namespace: no interface, no route, no address.
* **Switch.** The ``switch`` namespace holds one Linux bridge (``br0``, STP off, no forwarding delay).
* **Cables.** Each host gets a veth pair made inside the switch namespace: one end is attached to the bridge
  there (``p<N>``), its peer is created directly in the host's namespace as ``eth0`` with the host's address
  in a random ``10.<100-250>.<0-255>.0/24`` (clear of the root namespace's routes). Each host also has
  ``lo`` up, so a process may bind ``127.0.0.1`` inside a host as it would on a machine. No gateway: a host
  reaches its LAN and nothing else (no internet, nothing on the machine running the test).
* **Names on the LAN.** ``/etc/netns/<namespace>/hosts`` lists every host of the Network (``ip netns exec``
  bind-mounts it over ``/etc/hosts``), so ``worker-a`` resolves ``control`` — Airflow's log server URLs and
  ``socket.getfqdn()`` work without a DNS server and without a lookup timeout. Removed by :meth:`Network.close`.
* **Own hostname.** :meth:`Host.prefix` runs a command through ``ip netns exec NS unshare --uts`` and sets the
  host's name in that fresh UTS namespace before ``exec`` — ``socket.gethostname()`` (Celery node names,
  Airflow's ``hostname_callable``) returns ``worker-a``. The prefix ends in ``exec``: the process id a
  ``Popen`` holds is the program's own, so stopping it by process id reaches the program.
* **Own disk.** Each host gets a fresh, empty working directory ``<base_dir>/<name>`` and runs there by
  default. The folders are on one file system (mount namespaces are not separated); "no shared disk" is kept
  by the programs, each given only its own host's folder — which is what the tests check.
* **Pulled cable.** :meth:`Network.link_down` sets the host's port on the switch down. The host keeps its
  address and route; its ``eth0`` loses carrier, nothing more: open TCP connections hang and new ones time
  out (no reset, no refusal) — a partition, as a cut cable or a dead switch port makes one.
* **Cleanup.** :meth:`Network.close` (also the context manager's exit) stops every process in each host's
  namespace found by ``ip netns pids`` — not only those started here — with SIGTERM, then SIGKILL after a
  grace, by process id; then deletes the namespaces (which removes the cables and the bridge) and the base
  folder if the Network made it. It is idempotent and carries on past a failing step; a failure while a
  Network or a host is being built closes what was made before the error is raised.

Services in hosts: :class:`PostgresServer` (a private cluster, ``initdb`` per test, run as the ``postgres``
user), :class:`RedisServer` and :func:`object_store_on` (the project's ``rclone serve s3`` on a host). The
harness controls PostgreSQL and Redis through Unix sockets in their folders, which reach across network
namespaces, so starting them needs no probe process inside the host.

:func:`available` tells whether this machine can do any of this (root, ``ip``, ``unshare``, a namespace
and a bridge can actually be made); tests skip with its reason otherwise.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from stockops.launch.objectstore import ObjectStoreServer

log = logging.getLogger(__name__)

IP = shutil.which("ip") or "/usr/sbin/ip"
NETNS_ETC = Path("/etc/netns")
BRIDGE = "br0"
HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
RESERVED = frozenset({"switch"})


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; a failure raises with ip's own message."""
    done = subprocess.run([IP, *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def namespaces() -> set[str]:
    """The names of the network namespaces that exist now (``ip netns list``)."""
    out = _ip("netns", "list", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def namespace_pids(namespace: str) -> list[int]:
    """Process ids of the live processes in ``namespace`` (never 1 or this process)."""
    out = _ip("netns", "pids", namespace, check=False).stdout
    return [pid for pid in (int(tok) for tok in out.split() if tok.isdigit()) if pid > 1 and pid != os.getpid()]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie — exited, not yet reaped — counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def stop_pids(pids: Iterable[int], grace: float = 5.0) -> list[int]:
    """SIGTERM each of ``pids``, SIGKILL what still runs after ``grace`` seconds; returns the killed ones."""
    pids = [pid for pid in dict.fromkeys(pids) if pid > 1 and pid != os.getpid()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    killed = [pid for pid in pids if _alive(pid)]
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed


@functools.cache
def available() -> str | None:
    """None where network namespaces (with a bridge) can be made here, else why not."""
    if os.geteuid() != 0:
        return f"network namespaces need root (this runs as uid {os.geteuid()})"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2 / util-linux)"
    probe = f"soprobe{secrets.token_hex(3)}"
    try:
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"cannot create a network namespace: {made.stderr.strip()}"
        bridge = _ip("-n", probe, "link", "add", BRIDGE, "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"cannot create a bridge in a namespace: {bridge.stderr.strip()}"
        return None
    finally:
        _ip("netns", "del", probe, check=False)


def _hostname_prefix(name: str) -> list[str]:
    """``unshare --uts`` plus what sets the hostname ``name`` in it, then ``exec``s the command."""
    unshare = shutil.which("unshare") or "unshare"
    if shutil.which("hostname"):
        return [unshare, "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', name]
    code = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execvp(sys.argv[2], sys.argv[2:])"
    return [unshare, "--uts", "--", sys.executable, "-c", code, name]


class Host:
    """One host of a :class:`Network`: a network namespace with its own address, hostname and folder.

    Made by :meth:`Network.add_host`. :meth:`popen` and :meth:`run` start commands inside it (in
    :attr:`workdir` unless told otherwise); :attr:`processes` holds what :meth:`popen` started.
    """

    def __init__(self, network: Network, name: str, ip: str, namespace: str, port: str, workdir: Path):
        self.network = network
        self.name = name
        self.ip = ip
        self.namespace = namespace
        self.port = port  # the cable's end on the switch (an interface in the switch namespace)
        self.workdir = workdir
        self.processes: list[subprocess.Popen[Any]] = []

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ip={self.ip!r}, namespace={self.namespace!r})"

    def prefix(self) -> list[str]:
        """The argv prefix that runs a command inside this host, with the host's own hostname."""
        return [IP, "netns", "exec", self.namespace, *_hostname_prefix(self.name)]

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        merged = dict(os.environ if env is None else env)
        merged["HOSTNAME"] = self.name  # what shells and some tools read instead of gethostname()
        return merged

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
              log_path: str | Path | None = None, **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the host, in a new session; ``env`` replaces the environment as for ``Popen``
        (default: this process's), with ``HOSTNAME`` set to the host's name. ``log_path``: stdout and stderr
        are appended there (unless ``stdout``/``stderr`` are given)."""
        log_file: IO[bytes] | None = None
        if log_path is not None:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            log_file = open(log_path, "ab")  # noqa: SIM115 - the child holds it; closed here after the start
            kw.setdefault("stdout", log_file)
            kw.setdefault("stderr", subprocess.STDOUT)
        kw.setdefault("start_new_session", True)
        try:
            proc = subprocess.Popen([*self.prefix(), *argv], env=self._env(env),
                                    cwd=str(cwd if cwd is not None else self.workdir), **kw)
        finally:
            if log_file is not None:
                log_file.close()
        self.processes.append(proc)
        return proc

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
            **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside the host to its end (``subprocess.run``'s keywords: ``check``, ``timeout``,
        ``capture_output``, ``text`` ...)."""
        return subprocess.run([*self.prefix(), *argv], env=self._env(env),
                              cwd=str(cwd if cwd is not None else self.workdir), **kw)

    def connects(self, ip: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from this host to ``ip:port`` is accepted within ``timeout`` seconds."""
        code = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3]))"
        probe = [IP, "netns", "exec", self.namespace, sys.executable, "-c", code, ip, str(port), str(timeout)]
        return subprocess.run(probe, capture_output=True, timeout=timeout + 10).returncode == 0

    def pids(self) -> list[int]:
        """Every live process in the host's namespace (started here or not)."""
        return namespace_pids(self.namespace)

    def stop(self, proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
        """Stop one process by its id: SIGTERM, SIGKILL after ``grace``; then reap it."""
        if proc.poll() is None:
            stop_pids([proc.pid], grace)
        try:
            proc.wait(1)
        except subprocess.TimeoutExpired:
            log.warning("process %d on %s did not exit after SIGKILL", proc.pid, self.name)


class Network:
    """A LAN of namespace hosts on one bridge; see the module's docstring. Use it as a context manager.

    ``base_dir``: where the hosts' working folders go (default: a new temporary folder, removed by
    :meth:`close`; one given is kept). ``subnet``: a /24 (default: random, clear of the root's routes).
    """

    def __init__(self, base_dir: str | Path | None = None, subnet: str | None = None, prefix: str | None = None):
        self.closed = False
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []  # every namespace this Network made (or began to make)
        self._etc_dirs: list[Path] = []
        self._made_base = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="stockops-netns-")) if base_dir is None else Path(base_dir)
        try:
            if self._made_base:
                self.base_dir.chmod(0o711)  # services running as other users (postgres) must reach their folders
            self.base_dir.mkdir(parents=True, exist_ok=True)
            self.subnet = ipaddress.IPv4Network(subnet) if subnet else _free_subnet()
            self._addresses = iter(self.subnet.hosts())
            existing = namespaces()
            self.prefix = prefix or next(p for p in (f"so{secrets.token_hex(2)}" for _ in range(100))
                                         if not any(ns.startswith(p + "-") for ns in existing))
            self.switch = f"{self.prefix}-switch"
            _ip("netns", "add", self.switch)
            self._namespaces.append(self.switch)  # only once made: one of the same name is someone else's
            _ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            _ip("-n", self.switch, "link", "set", BRIDGE, "up")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Network:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Network({self.prefix!r}, {self.subnet}, hosts={list(self.hosts)})"

    def add_host(self, name: str) -> Host:
        """A new host ``name`` (lowercase letters, digits, ``-``): its namespace, cable, address and folder."""
        if self.closed:
            raise RuntimeError("the network is closed")
        if not HOST_NAME.match(name) or name in RESERVED:
            raise ValueError(f"bad host name {name!r}: lowercase letters, digits and '-', not {sorted(RESERVED)}")
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists already")
        try:
            ip = str(next(self._addresses))
        except StopIteration:
            raise RuntimeError(f"no address left in {self.subnet}") from None
        namespace = f"{self.prefix}-{name}"
        port = f"p{len(self.hosts) + 1}"
        workdir = self.base_dir / name
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)  # only once made: one of the same name is someone else's
        try:
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            _ip("-n", self.switch, "link", "set", port, "master", BRIDGE, "up")
            _ip("-n", namespace, "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            workdir.mkdir()  # fails where it exists: a host starts with an empty folder
            workdir.chmod(0o755)
        except BaseException:
            self._remove_namespace(namespace)
            raise
        host = Host(self, name, ip, namespace, port, workdir)
        self.hosts[name] = host
        self._write_hosts_files()
        return host

    def host(self, host: Host | str) -> Host:
        return self.hosts[host] if isinstance(host, str) else host

    def link_down(self, host: Host | str) -> None:
        """Pull ``host``'s cable at the switch: its traffic is dropped until :meth:`link_up`."""
        _ip("-n", self.switch, "link", "set", self.host(host).port, "down")

    def link_up(self, host: Host | str) -> None:
        """Plug ``host``'s cable back in (the bridge forwards at once: STP is off)."""
        _ip("-n", self.switch, "link", "set", self.host(host).port, "up")

    def _write_hosts_files(self) -> None:
        """``/etc/netns/<ns>/hosts`` for every host: localhost and each host's name. Written in place, so the
        file already bind-mounted over ``/etc/hosts`` in a running process sees new hosts too."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{h.ip}\t{h.name}" for h in self.hosts.values()]
        text = "\n".join(lines) + "\n"
        for host in self.hosts.values():
            folder = NETNS_ETC / host.namespace
            try:
                folder.mkdir(parents=True, exist_ok=True)
                if folder not in self._etc_dirs:
                    self._etc_dirs.append(folder)
                with open(folder / "hosts", "w") as f:
                    f.write(text)
            except OSError as err:  # a read-only /etc: hosts still work by address
                log.warning("cannot write %s/hosts (%s): host names will not resolve", folder, err)
                return

    def _remove_namespace(self, namespace: str) -> None:
        try:
            stop_pids(namespace_pids(namespace), grace=1)
        finally:
            if namespace in namespaces():
                _ip("netns", "del", namespace, check=False)
            self._namespaces.remove(namespace)

    def close(self, grace: float = 5.0) -> None:
        """Stop every process in the hosts (SIGTERM, SIGKILL after ``grace``), delete the namespaces and the
        ``/etc/netns`` files, and remove the base folder if this Network made it. Safe to call again."""
        if self.closed:
            return
        self.closed = True
        errors: list[BaseException] = []
        try:
            hosts = [ns for ns in self._namespaces if ns != getattr(self, "switch", None)]
            pids = [pid for ns in hosts for pid in namespace_pids(ns)]
            killed = stop_pids(pids, grace)
            if killed:
                log.warning("killed %d process(es) that ignored SIGTERM for %.0f s: %s", len(killed), grace, killed)
        except Exception as err:  # carry on: the namespaces and folders must still go
            errors.append(err)
        for host in self.hosts.values():
            for proc in host.processes:
                try:
                    proc.wait(0.5)  # reap: they are dead, or about to be
                except Exception as err:
                    errors.append(err)
        for ns in reversed(self._namespaces):  # the switch last
            try:
                if ns in namespaces():
                    stop_pids(namespace_pids(ns), grace=1)  # anything started after the sweep above
                    _ip("netns", "del", ns)
            except Exception as err:
                errors.append(err)
        for folder in self._etc_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        try:
            NETNS_ETC.rmdir()  # only when empty: other Networks may be using it
        except OSError:
            pass
        if self._made_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        if errors:
            log.warning("closing %s: %d step(s) failed: %s", getattr(self, "prefix", "network"), len(errors), errors)


def _root_networks() -> list[ipaddress.IPv4Network]:
    done = subprocess.run([IP, "-j", "-4", "route", "show", "table", "all"], capture_output=True, text=True)
    nets = []
    try:
        for route in json.loads(done.stdout or "[]"):
            dst = route.get("dst", "")
            if dst and dst != "default" and ":" not in dst:
                try:
                    nets.append(ipaddress.IPv4Network(dst, strict=False))
                except ValueError:
                    continue
    except json.JSONDecodeError:
        pass
    return nets


def _free_subnet() -> ipaddress.IPv4Network:
    """A random 10.<100-250>.<0-255>.0/24 that overlaps no route of the root namespace."""
    taken = _root_networks()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(other) for other in taken if other.prefixlen > 0):
            return net
    raise RuntimeError("no free 10.x.y.0/24 subnet found")


# ---- services inside a host -------------------------------------------------------------------------


def _as_user(user: str) -> list[str]:
    """An argv prefix that runs a command as ``user``, ``exec``ing it (the process id stays the program's).

    ``setpriv`` where installed; ``runuser`` forks (its pid is not the program's, and it turns a SIGTERM into
    a SIGKILL after 2 s), so it is only the fallback."""
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
    return ["runuser", "-u", user, "--"]


def _grant_traverse(path: Path) -> None:
    """Let other users pass through ``path``'s folders (``o+x``, never read) so a service user reaches it."""
    for folder in [path, *path.parents]:
        try:
            mode = folder.stat().st_mode
            if not mode & 0o001:
                folder.chmod(mode | 0o001)
        except OSError:
            continue


def postgres_bin() -> Path:
    """``/usr/lib/postgresql/<version>/bin`` of the newest installed PostgreSQL."""
    versions = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not versions:
        raise FileNotFoundError("no PostgreSQL server under /usr/lib/postgresql/*/bin")
    return versions[-1]


class PostgresServer:
    """A private PostgreSQL cluster in ``data_dir``, running inside ``host`` as the ``postgres`` user.

    It listens on the host's address and its ``127.0.0.1`` at ``port`` (each host has its own ports, so 5432
    is free), trusts every client on the Network's subnet and local ones, and keeps its Unix socket in
    ``<data_dir>-socket`` next to the data folder — the harness's way in from outside the namespace.
    Durability is off (``initdb --no-sync``, ``fsync=off``): this is for tests.
    """

    def __init__(self, host: Host, data_dir: str | Path, port: int = 5432, user: str = "postgres"):
        self.host = host
        self.data_dir = Path(data_dir)
        self.port = port
        self.user = user
        self.bin = postgres_bin()
        self.socket_dir = self.data_dir.with_name(self.data_dir.name + "-socket")
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self.proc: subprocess.Popen[Any] | None = None

    def dsn(self, db: str = "postgres") -> str:
        """A libpq URL to database ``db``, as a client on the Network reaches it."""
        return f"postgresql://{self.user}@{self.host.ip}:{self.port}/{db}"

    def _initdb(self) -> None:
        account = pwd.getpwnam(self.user)
        for folder in (self.data_dir, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, account.pw_uid, account.pw_gid)
        self.data_dir.chmod(0o700)
        self.log_path.touch()
        os.chown(self.log_path, account.pw_uid, account.pw_gid)
        _grant_traverse(self.data_dir.parent)
        subprocess.run([*_as_user(self.user), str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                        "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"],
                       check=True, capture_output=True, cwd=self.data_dir)
        settings = {"listen_addresses": f"'{self.host.ip},127.0.0.1'", "port": str(self.port),
                    "unix_socket_directories": f"'{self.socket_dir}'", "fsync": "off", "synchronous_commit": "off",
                    "full_page_writes": "off", "max_connections": "200", "logging_collector": "off"}
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# stockops.launch.netns\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        with open(self.data_dir / "pg_hba.conf", "a") as f:
            f.write(f"\nhost all all {self.host.network.subnet} trust\n")

    def start(self, timeout_s: float = 30) -> PostgresServer:
        """Create the cluster where ``data_dir`` has none, start it and wait until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        if len(str(self.socket_dir / f".s.PGSQL.{self.port}")) > 107:
            raise ValueError(f"socket path too long for a Unix socket: {self.socket_dir}")
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self.proc = self.host.popen([*_as_user(self.user), str(self.bin / "postgres"), "-D", str(self.data_dir)],
                                    log_path=self.log_path, cwd=self.data_dir)
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"postgres on {self.host.name} not ready within {timeout_s} s: {self._log_tail()}")
            time.sleep(0.02)
        return self

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def ready(self) -> bool:
        """Whether the server accepts connections (probed through its Unix socket)."""
        if not (self.socket_dir / f".s.PGSQL.{self.port}").exists():
            return False
        done = subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", str(self.socket_dir), "-p", str(self.port),
                               "-U", self.user, "-t", "1"], capture_output=True)
        return done.returncode == 0

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run ``sql`` with ``psql`` through the Unix socket; returns its unaligned output."""
        done = subprocess.run([str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.user, "-d", db,
                               "-c", sql], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    def create_database(self, name: str) -> str:
        """Create database ``name`` (where it does not exist); returns its DSN."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"bad database name {name!r}")
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip():
            self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self, grace: float = 10) -> None:
        """Stop the server by its process id: SIGINT (fast shutdown: clients are disconnected), SIGKILL of
        the postmaster after ``grace`` (its backends go with the namespace sweep of :meth:`Network.close`)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class RedisServer:
    """``redis-server`` inside ``host`` on its address and ``127.0.0.1``, nothing persisted.

    Also listens on a Unix socket in ``<host workdir>/redis-<port>/`` (the harness's readiness probe)."""

    def __init__(self, host: Host, port: int = 6379):
        self.host = host
        self.port = port
        self.dir = host.workdir / f"redis-{port}"
        self.socket_path = self.dir / "redis.sock"
        self.log_path = self.dir / "redis.log"
        self.proc: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host.ip}:{self.port}/0"

    def start(self, timeout_s: float = 20) -> RedisServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        server = shutil.which("redis-server") or "redis-server"
        self.proc = self.host.popen(
            [server, "--bind", self.host.ip, "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly",
             "no", "--daemonize", "no", "--protected-mode", "no", "--dir", str(self.dir),
             "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"],
            log_path=self.log_path)
        deadline = time.monotonic() + timeout_s
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} (log: {self.log_path})")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis on {self.host.name} did not answer PING within {timeout_s} s")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        """Whether the server answers PING (through its Unix socket)."""
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, grace: float = 5) -> None:
        """Stop the server by its process id (SIGTERM, SIGKILL after ``grace``)."""
        if self.proc is not None:
            self.host.stop(self.proc, grace)


def object_store_on(host: Host, root: str | Path, port: int = 9000, **kw: Any) -> ObjectStoreServer:
    """An :class:`ObjectStoreServer` (not started) that runs inside ``host`` and serves ``root`` at
    ``http://<host ip>:<port>``. The port is fixed: the server's own ``free_port`` would probe the root
    namespace, where the host's address does not exist."""
    root = Path(root)
    kw.setdefault("log_path", root.with_name(root.name + "-rclone.log"))
    return ObjectStoreServer(root=root, host=host.ip, port=port, prefix=host.prefix(), **kw)
