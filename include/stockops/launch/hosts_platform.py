"""The platform on several hosts with nothing shared but the network: Linux network namespaces as machines.

Topology (one :class:`~stockops.launch.netns.Network`, each host its own hostname, address, loopback and an
empty working folder ``<base>/<host>``; no process is given a path of another host):

* ``control``: PostgreSQL (Airflow's metadata DB and Celery's result backend, MLflow's backend store, the
  platform's records database), Redis (the Celery broker), the S3 object store (``rclone serve s3``, bucket
  ``stockops``: the platform's blobs under ``s3://stockops/home``, MLflow's artifacts under
  ``s3://stockops/mlflow``, Airflow's task logs under ``s3://stockops/airflow-logs``), Airflow's api-server,
  scheduler, dag-processor and triggerer, and the MLflow tracking server (``--serve-artifacts``: only it holds
  the S3 key for artifacts; its clients talk HTTP);
* ``worker-a``, ``worker-b``: one ``airflow celery worker`` each;
* ``serving`` (or several serving hosts, ``serving_hosts``): the serving agent (``python -m stockops.serving
  agent``), which runs the endpoint there: its own proxy and bentos, the champion's bento packed there from the
  registry; the agents beat into the records' database, and the **front proxy** on control
  (``python -m stockops.serving.proxy --fleet-db``) routes to every serving host that serves the champion. The
  stable address every other host calls (``STOCKOPS_SERVE_HOST``) is the front proxy's.

Every stockops process gets its own ``STOCKOPS_HOME`` (``<host folder>/home``; ``AIRFLOW_HOME`` under it) and
the shared services by address only: ``STOCKOPS_STATE_DB`` (PostgreSQL on control), ``STOCKOPS_BLOB_URL``
(``s3://stockops/home``) with the ``AWS_*`` variables, ``STOCKOPS_MLFLOW_TRACKING_URI`` (the MLflow server),
Airflow's remote task logging (:func:`stockops.launch.remote.airflow_remote_logging_env`) and the execution API
(``http://<control>:<port>/execution/``). What one process may only find on its own disk is therefore a
platform bug this harness exposes (a task on one host reading a file another host wrote).

Why Celery: the project already runs the CeleryExecutor under compose and on one machine
(:class:`~stockops.launch.cluster.CeleryPlatform`, whose per-component settings this reuses: the queue per run,
the Celery config that preloads GX, the execution API URL, the JWT secret every component shares). A Celery
worker needs the broker (Redis) and the result backend (PostgreSQL) on the network, and the api-server for the
task SDK; no shared disk. Not the Edge worker (the ``edge3`` provider, workers that talk HTTP only): it is not
installed (``airflow/providers/`` holds amazon, celery, common, http, smtp, standard) and not in
``requirements.txt``.

The test process stays in the root namespace, which has no address on the LAN: REST calls go through a small
Python run inside the control host (:meth:`HostsPlatform.http`); PostgreSQL is reached through its Unix socket
(:meth:`HostsPlatform.records_url`).

:meth:`HostsPlatform.stop` stops every process (by process id, through :meth:`Network.close`) and deletes the
namespaces; a failure while starting stops what had started.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockops.core.airflow_env import airflow_environment
from stockops.core.environment import Environment
from stockops.core.processes import venv_bin
from stockops.core.settings import Settings, settings_from
from stockops.launch import netns
from stockops.launch.cluster import COMPONENTS, CeleryPlatform
from stockops.launch.components import ensure_admin_password, private_dir
from stockops.launch.objectstore import ObjectStoreServer
from stockops.launch.remote import S3Endpoint, airflow_remote_logging_env, mlflow_server_command, mlflow_server_env

log = logging.getLogger(__name__)

BUCKET = "stockops"
BLOB_PREFIX = "home"
WORKERS = ("worker-a", "worker-b")
# Variables of the test process that must not leak into a host: each host gets its own or the shared ones.
_HOST_OWN = ("AIRFLOW", "AWS_", "MLFLOW", "STOCKOPS_", "BENTOML")

_HTTP = r"""
import json, sys, urllib.error, urllib.request
url, method, body, headers, timeout = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), float(sys.argv[5])
req = urllib.request.Request(url, method=method, data=body.encode() if body else None, headers=headers)
try:
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        print(json.dumps({"status": resp.status, "body": resp.read().decode(errors="replace")}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "body": exc.read().decode(errors="replace")}))
except Exception as exc:
    print(json.dumps({"status": 0, "body": repr(exc)}))
"""


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str, url: str):
        super().__init__(f"HTTP {status} from {url}: {body[:2000]}")
        self.status = status
        self.body = body


@dataclass
class _HostCelery(CeleryPlatform):
    """CeleryPlatform's environment for one component on one host: its own home, the cluster's services."""

    shared: dict[str, str] = field(default_factory=dict)
    shared_secrets: dict[str, str] = field(default_factory=dict)

    def _secret(self, name: str) -> str:
        return self.shared_secrets[name]  # the same on every host (JWTs signed on control, checked everywhere)

    def env(self) -> dict[str, str]:
        env = super().env()
        own = set(airflow_environment(self.settings))
        for key, value in os.environ.items():  # the test process's settings are not this host's
            if key.startswith(_HOST_OWN) and key not in own and env.get(key) == value:
                env.pop(key, None)
        env.update(self.shared)
        return env


@dataclass
class HostsPlatform:
    """The platform on ``control``, ``worker-a``, ``worker-b`` and ``serving``; see the module docstring.

    ``env``: settings every stockops process gets (the watchlist, the training profile, the gate, ...).
    ``worker_concurrency``: task processes per worker (1 spreads mapped tasks over both workers).
    ``heartbeat_timeout_s``: the scheduler fails a running task instance whose heartbeats stopped this long ago,
    and its retry is queued for any worker; None keeps Airflow's defaults. What Airflow 3.3 reads for that, set on
    every host (the task supervisor on a worker reads the scheduler's option too, to pace its heartbeats):

    * ``[scheduler] task_instance_heartbeat_timeout`` (default 300 s): the timeout itself;
    * ``[scheduler] task_instance_heartbeat_timeout_detection_interval`` (default 10 s): how often the scheduler
      looks for such task instances (here 2 s);
    * ``[workers] min_heartbeat_interval`` (default 5 s): the supervisor's heartbeat period (here a quarter of
      the timeout); after ``[workers] max_failed_heartbeats`` (3) failures a cut-off supervisor kills its task.

    The retry itself comes from the task's own ``retries``/``retry_delay`` (the DAGs': stock_ingest's chunk 2
    retries, 30 s apart), so a partitioned worker's task is redone elsewhere about timeout + delay later.
    """

    base_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    workers: Sequence[str] = WORKERS
    serving_hosts: Sequence[str] = ("serving",)
    worker_concurrency: int = 1
    heartbeat_timeout_s: int | None = None
    api_port: int = 8080
    mlflow_port: int = 5000
    serve_port: int = 3000
    run_name: str = field(default_factory=lambda: f"stockops_{secrets.token_hex(4)}")
    network: netns.Network | None = None
    hosts: dict[str, netns.Host] = field(default_factory=dict)
    processes: dict[str, tuple[netns.Host, subprocess.Popen[Any]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    pg: netns.PostgresServer = field(init=False, repr=False)
    redis: netns.RedisServer = field(init=False, repr=False)
    store: ObjectStoreServer = field(init=False, repr=False)
    _secrets: dict[str, str] = field(init=False, repr=False)
    _token: str | None = field(default=None, init=False, repr=False)

    # ---- addresses -----------------------------------------------------------------------------------
    @property
    def control(self) -> netns.Host:
        return self.hosts["control"]

    @property
    def serving(self) -> netns.Host:
        """The first serving host."""
        return self.hosts[self.serving_hosts[0]]

    @property
    def url(self) -> str:
        return f"http://{self.control.ip}:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.control.ip}:{self.mlflow_port}"

    @property
    def serve_url(self) -> str:
        """The stable address: the front proxy on control."""
        return f"http://{self.control.ip}:{self.serve_port}"

    def host_serve_url(self, host: str) -> str:
        """One serving host's own stable address (its proxy)."""
        return f"http://{self.hosts[host].ip}:{self.serve_port}"

    def home(self, host: str) -> Path:
        return self.hosts[host].workdir / "home"

    def records_url(self) -> str:
        """The records database as the test process reaches it: through PostgreSQL's Unix socket."""
        return f"postgresql+psycopg2://postgres@/stockops?host={self.pg.socket_dir}&port={self.pg.port}"

    # ---- environments --------------------------------------------------------------------------------
    def _shared_env(self) -> dict[str, str]:
        control = self.control.ip
        serving = [self.hosts[h].ip for h in self.serving_hosts]
        store = S3Endpoint.from_env(self.store.env())
        env = {
            **self.env,
            **store.aws_env(),
            **airflow_remote_logging_env(store, BUCKET),
            "STOCKOPS_STATE_DB": f"postgresql+psycopg2://postgres@{control}:{self.pg.port}/stockops",
            "STOCKOPS_BLOB_URL": f"s3://{BUCKET}/{BLOB_PREFIX}",
            "STOCKOPS_MLFLOW_TRACKING_URI": self.mlflow_url,
            "STOCKOPS_MLFLOW_URL": self.mlflow_url,
            "STOCKOPS_SERVING_MODE": "agent",
            "STOCKOPS_SERVE_HOST": control,  # the front proxy
            "STOCKOPS_SERVE_PORT": str(self.serve_port),
            "STOCKOPS_ALLOWED_HOSTS": ",".join([control, *serving, *self.serving_hosts, "127.0.0.1", "localhost"]),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@{control}:{self.pg.port}/airflow",
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://postgres@{control}:{self.pg.port}/airflow",
        }
        if self.heartbeat_timeout_s is not None:
            env.update({
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout_s),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": str(max(1, self.heartbeat_timeout_s // 4)),
            })
        return env

    def platform_for(self, host: str) -> _HostCelery:
        """CeleryPlatform's view of ``host``: its settings (own home) and the environment its components get (a
        serving host's stable address is its own proxy, advertised to the front proxy)."""
        home = self.home(host)
        env = {**self._shared_env(), "STOCKOPS_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow")}
        if host in self.serving_hosts:
            env.update({"STOCKOPS_SERVE_HOST": self.hosts[host].ip, "STOCKOPS_SERVING_NAME": host,
                        "STOCKOPS_SERVING_ADVERTISE_URL": self.host_serve_url(host)})
        settings: Settings = settings_from(Environment.from_environ(env))
        return _HostCelery(settings, host=self.control.ip, port=self.api_port, mlflow_port=self.mlflow_port,
                           run_name=self.run_name, worker_concurrency=self.worker_concurrency, shared=env,
                           shared_secrets=self._secrets)

    def host_env(self, host: str) -> dict[str, str]:
        return self.platform_for(host).env()

    # ---- start ---------------------------------------------------------------------------------------
    def _spawn(self, host: str, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        node = self.hosts[host]
        full_env = {**self.host_env(host), **(env or {})}
        proc = node.popen(list(argv), env=full_env, log_path=node.workdir / "logs" / f"{name}.log")
        self.processes[name] = (node, proc)

    def _lap(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.timings[name] = round(now - since, 2)
        return now

    def start(self) -> HostsPlatform:
        """Build the hosts, start the services and every component on its host. Stops all on a failure."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        t = time.monotonic()
        self.network = netns.Network(base_dir=self.base_dir)
        for name in ("control", *self.workers, *self.serving_hosts):
            self.hosts[name] = self.network.add_host(name)
        self._secrets = {"jwt": secrets.token_urlsafe(32), "api": secrets.token_urlsafe(32)}
        t = self._lap("network", t)
        control = self.control
        self.pg = netns.PostgresServer(control, control.workdir / "pg" / "data").start()
        for db in ("airflow", "mlflow", "stockops"):
            self.pg.create_database(db)
        self.redis = netns.RedisServer(control).start()
        self.store = netns.object_store_on(control, control.workdir / "s3").start(buckets=[BUCKET])
        t = self._lap("services", t)
        from stockops.storage.records import StateStore

        StateStore(self.records_url())  # the records' tables, created once here (not raced by every host)
        cp = self.platform_for("control")
        cp.prepare_home()  # control's home and Airflow home owner-only, the admin password file
        ensure_admin_password(cp.settings.airflow_passwords_file)
        mlflow_db = f"postgresql+psycopg2://postgres@{control.ip}:{self.pg.port}/mlflow"
        self._spawn("control", "mlflow-server", mlflow_server_command(
            mlflow_db, BUCKET, host=control.ip, port=self.mlflow_port, mlflow=venv_bin("mlflow"),
            allowed_hosts=[f"{control.ip}:{self.mlflow_port}", f"control:{self.mlflow_port}"]),
            env=mlflow_server_env(S3Endpoint.from_env(self.store.env())))
        migrated = control.run([venv_bin("airflow"), "db", "migrate"], env=self.host_env("control"),
                               capture_output=True, text=True, timeout=600)
        if migrated.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed on control: {migrated.stderr[-3000:]}")
        t = self._lap("migrate", t)
        for host in self.serving_hosts:
            self._spawn(host, f"serving-agent-{host}", [venv_bin("python"), "-m", "stockops.serving", "agent"])
        self._spawn("control", "front-proxy", [
            venv_bin("python"), "-m", "stockops.serving.proxy", "--fleet-db", self._shared_env()["STOCKOPS_STATE_DB"],
            "--host", control.ip, "--port", str(self.serve_port)])
        self._spawn("control", "airflow-apiserver", [venv_bin("airflow"), "api-server", "--host", control.ip,
                                                     "--port", str(self.api_port)])
        for component in ("scheduler", "dag-processor", "triggerer"):
            self._spawn("control", f"airflow-{component}",
                        [venv_bin("airflow"), component, *(["--skip-serve-logs"] if component == "triggerer" else [])])
        for worker in self.workers:
            private_dir(self.home(worker))
            self._spawn(worker, f"celery-{worker}", [
                venv_bin("airflow"), "celery", "worker", "--queues", self.run_name, "--concurrency", str(self.worker_concurrency), "--skip-serve-logs"])

    def wait_healthy(self, timeout: float = 300) -> None:
        """Every Airflow component healthy, MLflow up, each Celery worker answering, no process exited."""
        t = time.monotonic()
        deadline, health = t + timeout, dict[str, Any]()
        while time.monotonic() < deadline:
            self.check_alive()
            resp = self.http(f"{self.url}/api/v2/monitor/health", timeout=5)
            health = json.loads(resp["body"]) if resp["status"] == 200 else {"status": resp}
            up = self.http(f"{self.mlflow_url}/health", timeout=5)["status"] == 200
            if up and all(health.get(c, {}).get("status") == "healthy" for c in COMPONENTS):
                break
            time.sleep(1)
        else:
            raise TimeoutError(f"not healthy within {timeout:.0f} s: {health}; logs in {self.network_dir}/*/logs")
        self._lap("healthy", t)

    @property
    def network_dir(self) -> Path:
        return self.network.base_dir if self.network else Path("?")

    def check_alive(self) -> None:
        exited = {n: p.returncode for n, (_, p) in self.processes.items() if p.poll() is not None}
        if exited:
            raise RuntimeError(f"exited: {exited}; logs in {self.network_dir}/<host>/logs")

    # ---- REST, through the control host ---------------------------------------------------------------
    def http(self, url: str, method: str = "GET", body: object = None, headers: Mapping[str, str] | None = None,
             timeout: float = 60, host: str = "control") -> dict[str, Any]:
        """One HTTP request made from inside ``host``: ``{"status": ..., "body": ...}`` (status 0: no answer)."""
        data = "" if body is None else json.dumps(body)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        done = self.hosts[host].run([sys.executable, "-c", _HTTP, url, method, data, json.dumps(hdrs), str(timeout)],
                                    env=_plain_env(), capture_output=True, text=True, timeout=timeout + 30)
        if done.returncode != 0:
            raise RuntimeError(f"request from {host} failed: {done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def token(self) -> str:
        if self._token is None:
            passwords = json.loads(self.platform_for("control").settings.airflow_passwords_file.read_text())
            resp = self.http(f"{self.url}/auth/token", "POST", {"username": "admin", "password": passwords["admin"]})
            if resp["status"] not in (200, 201):
                raise ApiError(resp["status"], resp["body"], "/auth/token")
            self._token = json.loads(resp["body"])["access_token"]
        return self._token

    def api(self, path: str, method: str | None = None, body: object = None) -> Any:
        """Airflow's REST API (``/api/v2/<path>``) as admin: the decoded answer; a non-2xx status raises."""
        url = f"{self.url}/api/v2/{path.lstrip('/')}"
        resp = self.http(url, method or ("POST" if body is not None else "GET"), body,
                         {"Authorization": f"Bearer {self.token()}"})
        if not 200 <= resp["status"] < 300:
            raise ApiError(resp["status"], resp["body"], url)
        return json.loads(resp["body"]) if resp["body"] else None

    def ensure_dags_ready(self, dag_ids: Sequence[str], timeout: float = 180) -> None:
        """Wait until the dag-processor has parsed each DAG, then unpause it."""
        t = time.monotonic()
        deadline, pending = t + timeout, list(dag_ids)
        while pending and time.monotonic() < deadline:
            for dag_id in list(pending):
                try:
                    self.api(f"dags/{dag_id}", "PATCH", {"is_paused": False})
                    pending.remove(dag_id)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
            if pending:
                time.sleep(1)
        if pending:
            raise RuntimeError(f"DAGs not parsed after {timeout:.0f} s: {pending}")
        self._lap("dags_ready", t)

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: str | None = None) -> str:
        return str(self.api(f"dags/{dag_id}/dagRuns", body={"logical_date": logical_date, "conf": conf or {}})
                   ["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict]:
        return list(self.api(f"dags/{dag_id}/dagRuns?order_by=run_after")["dag_runs"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline, state = time.monotonic() + timeout, "unknown"
        while time.monotonic() < deadline:
            state = self.api(f"dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return str(state)
            self.check_alive()
            time.sleep(1)
        raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of the run (mapped ones each), with ``hostname``, ``state``, ``try_number``."""
        out: list[dict] = []
        while True:
            page = self.api(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100&offset={len(out)}")
            out += page["task_instances"]
            if len(out) >= page["total_entries"] or not page["task_instances"]:
                return out

    def tries(self, dag_id: str, run_id: str) -> list[dict]:
        """Every attempt of every task instance of the run (the current ones and the earlier tries)."""
        out: list[dict] = []
        for ti in self.task_instances(dag_id, run_id):
            index = ti.get("map_index", -1)
            path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
            path += f"/{index}/tries" if index is not None and index >= 0 else "/tries"
            out += self.api(path)["task_instances"]
        return out

    def running_tasks(self, host: str) -> list[str]:
        """Ids of the task instances whose task process runs on ``host`` now (Airflow's task runner names
        itself ``airflow worker -- <ti id>``); read from ``/proc``, no request to any server."""
        ids = []
        for pid in self.hosts[host].pids():
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("airflow worker -- "):
                ids.append(title.split("--", 1)[1].strip())
        return ids

    # ---- stop ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process on every host (by process id) and delete the hosts. Safe to call again."""
        if self.network is None:
            return
        try:  # every component at once (SIGTERM, SIGKILL after the grace), by process id
            netns.stop_pids([proc.pid for _, proc in self.processes.values() if proc.poll() is None], grace=10)
        except Exception:  # noqa: BLE001 - the namespace sweep below still stops them
            log.exception("stopping the components")
        self.network.close(grace=5)


def _plain_env() -> dict[str, str]:
    """The environment of a helper process inside a host: this one's, without any platform setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_HOST_OWN)}
