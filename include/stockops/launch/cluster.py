"""The multi-machine layout, run as separate processes on one machine against real PostgreSQL and Redis.

``docker-compose.yaml`` runs each Airflow component, the MLflow tracking server and the serving
agent in its own container, with PostgreSQL as Airflow's metadata DB and MLflow's backend store,
Redis as the Celery broker, and one shared volume for the stockops home. Where no Docker engine
is available (this development machine), :class:`CeleryPlatform` starts the same components as
separate processes, with the same settings, against the PostgreSQL and Redis servers the machine
runs: ``airflow api-server``, ``scheduler``, ``dag-processor``, ``triggerer``, ``celery worker``,
``mlflow server`` (PostgreSQL backend, artifacts served by the server) and
``python -m stockops.serving agent``. Each run gets its own databases and Celery queue, and
:meth:`CeleryPlatform.stop` stops what it started, by process id, and drops the databases.

Used by ``tests/system/test_celery_platform.py`` and ``bench/lead_time.py``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from stockops.core.processes import venv_bin
from stockops.core.settings import MLFLOW_SERVER_ENV
from stockops.launch.components import private_dir, private_log, stop_process_tree, write_secret
from stockops.launch.local import LocalPlatform

POSTGRES_ADMIN_DSN = os.environ.get("STOCKOPS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("STOCKOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
COMPONENTS = ("scheduler", "dag_processor", "triggerer", "metadatabase")


def unreachable_services(postgres_dsn: str = POSTGRES_ADMIN_DSN, redis_url: str = REDIS_URL) -> list[str]:
    """Which of PostgreSQL and Redis cannot be reached (with why); empty when both answer."""
    import psycopg2
    import redis

    problems = []
    try:
        psycopg2.connect(postgres_dsn, connect_timeout=3).close()
    except psycopg2.Error as exc:
        problems.append(f"PostgreSQL at {postgres_dsn}: {str(exc).strip()}")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        problems.append(f"Redis at {redis_url}: {exc}")
    return problems


def _admin(sql: str, dsn: str = POSTGRES_ADMIN_DSN) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn, connect_timeout=5)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def database_dsn(name: str, driver: str = "postgresql", dsn: str = POSTGRES_ADMIN_DSN) -> str:
    """The admin DSN pointed at database ``name`` (``driver`` e.g. ``postgresql+psycopg2``)."""
    base, _, _ = dsn.rpartition("/")
    return f"{driver}{base.removeprefix('postgresql')}/{name}"


CELERY_CONFIG_OPTIONS = "stockops.orchestration.celery_config.CELERY_CONFIG"


@dataclass
class CeleryPlatform(LocalPlatform):
    """Airflow (CeleryExecutor, PostgreSQL), MLflow server (PostgreSQL) and the serving agent, as processes."""

    run_name: str = field(default_factory=lambda: f"stockops_{secrets.token_hex(4)}")
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    worker_concurrency: int = 2

    @property
    def airflow_db(self) -> str:
        return f"{self.run_name}_airflow"

    @property
    def mlflow_db(self) -> str:
        return f"{self.run_name}_mlflow"

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", None)  # SQLite's busy timeout: not for PostgreSQL
        airflow_db = database_dsn(self.airflow_db, "postgresql+psycopg2")
        env.update({
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_dsn(self.airflow_db, "postgresql+psycopg2"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            # the worker imports GX & co. once, before its pool forks (stockops.orchestration.celery_config)
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": CELERY_CONFIG_OPTIONS,
            # one queue per run: other runs sharing this Redis never take our tasks
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.run_name,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt"),
            "AIRFLOW__API__SECRET_KEY": self._secret("api"),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "STOCKOPS_MLFLOW_TRACKING_URI": self.mlflow_url,
            "STOCKOPS_MLFLOW_URL": self.mlflow_url,
            "STOCKOPS_SERVING_MODE": "agent",
        })
        return env

    def _secret(self, name: str) -> str:
        """A secret kept in the (owner-only) Airflow home, created 0600 on first use, so restarts agree."""
        path = self.settings.airflow_home / f".{name}_secret"
        if not path.exists():
            write_secret(path, secrets.token_urlsafe(32))
        return path.read_text()

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        private_dir(self.settings.logs_dir)
        with private_log(self.settings.logs_dir / f"{name}.log") as log:  # the child keeps its own copy
            proc = subprocess.Popen(args, env={**self.env(), **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.processes[name] = proc
        return proc

    def start(self) -> subprocess.Popen:
        """Create the databases, migrate, start every component; returns the api-server process.

        The worker and the triggerer run without their log servers, which Airflow binds to every
        interface (see ``stockops.launch.components.COMPONENTS``): all processes share this machine's logs
        folder. Compose, where they do not, keeps them (reachable inside the compose network only).
        """
        self.prepare_home()
        for db in (self.airflow_db, self.mlflow_db):
            _admin(f'CREATE DATABASE "{db}"')
        self.airflow("db", "migrate", timeout=600)
        self.settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
        self._spawn("mlflow-server", [
            venv_bin("mlflow"), "server", "--backend-store-uri", database_dsn(self.mlflow_db, "postgresql+psycopg2"),
            "--artifacts-destination", str(self.settings.mlflow_artifacts_dir), "--serve-artifacts",
            "--host", self.host, "--port", str(self.mlflow_port), "--workers", "1",
            "--allowed-hosts", f"{self.host}:{self.mlflow_port},localhost:{self.mlflow_port}"], env=MLFLOW_SERVER_ENV)
        api = self._spawn("airflow-apiserver", [venv_bin("airflow"), "api-server", "--host", self.host,
                                                 "--port", str(self.port)])
        for component in ("scheduler", "dag-processor", "triggerer"):
            self._spawn(f"airflow-{component}", [venv_bin("airflow"), component,
                                                  *(["--skip-serve-logs"] if component == "triggerer" else [])])
        self._spawn("airflow-worker", [venv_bin("airflow"), "celery", "worker", "--queues", self.run_name,
                                        "--concurrency", str(self.worker_concurrency), "--skip-serve-logs"])
        self._spawn("serving-agent", [venv_bin("python"), "-m", "stockops.serving", "agent"])
        return api

    def wait_healthy(self, proc: subprocess.Popen, timeout: float = 300) -> None:
        """Every component healthy in ``/api/v2/monitor/health``, the MLflow server up, no process exited."""
        deadline, health = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            exited = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
            if exited:
                raise RuntimeError(f"exited: {exited}; logs in {self.settings.logs_dir}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as resp:
                    health = json.load(resp)
                with urllib.request.urlopen(f"{self.mlflow_url}/health", timeout=5):
                    pass
                if all(health.get(c, {}).get("status") == "healthy" for c in COMPONENTS):
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(2)
        raise TimeoutError(f"not healthy within {timeout:.0f} s: {health}; logs in {self.settings.logs_dir}")

    def stop(self) -> None:
        """Stop every process this platform started (by process id), then drop its databases."""
        for name in ("airflow-worker", "airflow-scheduler", "airflow-triggerer", "airflow-dag-processor",
                     "airflow-apiserver", "serving-agent", "mlflow-server"):
            if name in self.processes:
                stop_process_tree(self.processes[name])
        for db in (self.airflow_db, self.mlflow_db):
            try:
                _admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except Exception:  # noqa: BLE001 - a leftover test database is not worth failing over
                pass


# ---- compose: the one-time set-up that airflow-init runs -----------------------------------------
def init_compose() -> None:
    """Create MLflow's database, the stockops records' database (``STOCKOPS_STATE_DB``), the admin password file and
    this container's home (idempotent).

    Runs in the compose ``airflow-init`` container, after ``airflow db migrate``, as root.
    """
    import psycopg2
    from sqlalchemy.engine import make_url

    from stockops.core.settings import get_settings

    url = make_url(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    conn = psycopg2.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                            dbname=url.database)
    conn.autocommit = True
    records = make_url(os.environ["STOCKOPS_STATE_DB"]).database or "stockops"
    with conn.cursor() as cur:
        for name in ("mlflow", records):
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    password = os.environ.get("AIRFLOW_ADMIN_PASSWORD", "")
    if not password:
        raise SystemExit("AIRFLOW_ADMIN_PASSWORD is empty: set it in .env")
    passwords = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    write_secret(Path(passwords), json.dumps({"admin": password}))  # 0600 in a 0700 folder from the start
    home = get_settings().home
    home.mkdir(parents=True, exist_ok=True)
    uid = int(os.environ.get("AIRFLOW_UID", "50000"))
    for path in (home, os.path.dirname(passwords), passwords):
        os.chown(path, uid, 0)
    os.chmod(passwords, 0o600)
    print(f"compose init: databases mlflow and {records} ready, admin password file {passwords}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["init-compose"]:
        raise SystemExit("usage: python -m stockops.launch.cluster init-compose")
    init_compose()
