"""Task logs and MLflow artifacts on the object store, proven on real processes (no shared disk needed).

A real ``rclone serve s3`` (:class:`ObjectStoreServer`) on loopback, configured with nothing but what
:mod:`stockops.launch.remote` builds:

* Airflow: a one-task DAG runs through the real executor path (``airflow dags test --use-executor``
  with the LocalExecutor: the task runs under the task supervisor, as on a Celery worker, and talks to a
  real ``airflow api-server`` over HTTP). The supervisor uploads the attempt's log to the bucket and
  deletes the local copy; the api-server's REST API then serves the log, read from the bucket.
  ``airflow dags test`` without ``--use-executor`` (and ``airflow tasks test``) runs the task in-process
  (``InProcessTestSupervisor``) and never uploads, so it would prove nothing here.
* MLflow: ``mlflow server`` (SQLite backend) with ``--artifacts-destination s3://.../mlflow
  --serve-artifacts``; a client process with no AWS variable at all, only ``MLFLOW_TRACKING_URI``,
  logs an artifact, and the object is in the bucket.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from stockops.core.airflow_db import use_wal
from stockops.core.process_env import quiet_environment
from stockops.core.processes import free_port, venv_bin
from stockops.launch.components import stop_process_tree
from stockops.launch.local import SQLITE_CONNECT_ARGS
from stockops.launch.objectstore import ObjectStoreServer
from stockops.launch.remote import (
    S3Endpoint,
    airflow_remote_logging_env,
    mlflow_server_command,
    mlflow_server_env,
)

# real servers; about 40 s in all (the Airflow test 22-26 s, the MLflow one 8-12 s), under the 60 s that would make
# them `slow`
pytestmark = [pytest.mark.integration]

BUCKET = "stockops"
DAG_ID = "remote_log_probe"
DAG_FILE = textwrap.dedent('''
    import os

    from airflow.sdk import dag, task


    @dag(dag_id="remote_log_probe", schedule=None, catchup=False)
    def remote_log_probe():
        @task
        def say():
            print(os.environ["STOCKOPS_PROBE_MARKER"])

        say()


    remote_log_probe()
''')


@pytest.fixture(scope="module")
def objectstore(tmp_path_factory):
    root = tmp_path_factory.mktemp("objectstore")
    server = ObjectStoreServer(root / "data", log_path=root / "rclone.log").start(buckets=[BUCKET])
    yield server
    server.stop()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Airflow, AWS or MLflow-S3 setting (the session's conftest sets
    Airflow's), so what the children get is only what the test and :mod:`stockops.launch.remote` give them."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "AWS_", "MLFLOW_S3", "MLFLOW_TRACKING", "MLFLOW_BOTO"))}
    return {**env, **quiet_environment(), **extra}


def s3_client(store: S3Endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=store.endpoint_url, aws_access_key_id=store.access_key,
                        aws_secret_access_key=store.secret_key, region_name=store.region)


def bucket_objects(store: S3Endpoint, prefix: str) -> dict[str, bytes]:
    client = s3_client(store)
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listing}


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:2]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:  # the child keeps its own copy
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def test_task_log_is_uploaded_to_the_object_store_and_read_back_by_the_api_server(objectstore, tmp_path):
    store = S3Endpoint.from_env(objectstore.env())
    home, dags = tmp_path / "airflow", tmp_path / "dags"
    home.mkdir()
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(DAG_FILE)
    port, marker = free_port(), f"stockops-remote-log-{secrets.token_hex(8)}"
    env = clean_env(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        # as make run opens it: a write waits its turn (30 s) instead of failing while the api-server writes
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=SQLITE_CONNECT_ARGS,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(32),
        AIRFLOW__API__SECRET_KEY=secrets.token_urlsafe(32),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",  # a throwaway loopback api-server: no login
        STOCKOPS_PROBE_MARKER=marker,
        **airflow_remote_logging_env(store, BUCKET),
    )
    airflow = venv_bin("airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=180)
    use_wal(home / "airflow.db")  # readers and the one writer do not block each other
    api = spawn([airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "api.log")
    try:
        # Up first: the task's Execution-API client gives up after 5 tries (random waits of 1 s and more), and
        # `dags test` then waits forever on a task instance left queued.
        wait_http(f"http://127.0.0.1:{port}/api/v2/version", api, tmp_path / "api.log")
        test_log = tmp_path / "dags-test.log"
        run = spawn([airflow, "dags", "test", DAG_ID, "--use-executor"], env, test_log)
        try:
            returncode = run.wait(timeout=240)
        finally:
            stop_process_tree(run)
        assert returncode == 0, test_log.read_text()[-4000:]

        logs = bucket_objects(store, f"airflow-logs/dag_id={DAG_ID}/")
        assert len(logs) == 1, logs.keys()
        key, body = next(iter(logs.items()))
        assert key.endswith("/task_id=say/attempt=1.log"), key
        printed = [json.loads(line) for line in body.decode().splitlines() if marker in line]
        assert [(r["event"], r["logger"]) for r in printed] == [(marker, "task.stdout")], body.decode()[-2000:]
        # uploaded, then the worker's copy deleted: whatever the api-server shows can only come from the bucket
        assert not list((home / "logs").glob(f"dag_id={DAG_ID}/**/*.log"))

        run_id = key.split("/run_id=", 1)[1].split("/", 1)[0]
        url = (f"http://127.0.0.1:{port}/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
               f"/taskInstances/say/logs/1?full_content=true")
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            events = [e.get("event") for e in json.load(resp)["content"]]
        assert f"s3://{BUCKET}/{key}" in events, events[:5]  # the log source the reader names
        assert marker in events
    finally:
        stop_process_tree(api)


MLFLOW_CLIENT = textwrap.dedent('''
    import json, sys
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_text(sys.argv[1], "probe/hello.txt")
    back = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/probe/hello.txt")
    print(json.dumps({"run_id": run.info.run_id, "artifact_uri": run.info.artifact_uri, "back": back}))
''')


def test_mlflow_artifacts_go_to_the_object_store_through_the_tracking_server(objectstore, tmp_path):
    store = S3Endpoint.from_env(objectstore.env())
    port, marker = free_port(), f"stockops-mlflow-artifact-{secrets.token_hex(8)}"
    command = mlflow_server_command(f"sqlite:///{tmp_path / 'mlflow.db'}", BUCKET, port=port,
                                    allowed_hosts=[f"127.0.0.1:{port}"], mlflow=venv_bin("mlflow"))
    server = spawn(command, clean_env(**mlflow_server_env(store)), tmp_path / "mlflow.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/health", server, tmp_path / "mlflow.log")
        client_env = {k: v for k, v in clean_env().items() if not k.startswith("MLFLOW_S3")}
        client_env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
        assert not [k for k in client_env if k.startswith("AWS")]
        out = subprocess.run([sys.executable, "-c", MLFLOW_CLIENT, marker], env=client_env, capture_output=True,
                             text=True, timeout=180, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["artifact_uri"].startswith("mlflow-artifacts:/"), result
        assert result["back"] == marker

        objects = bucket_objects(store, "mlflow/")
        wanted = [k for k in objects if k.endswith(f"/{result['run_id']}/artifacts/probe/hello.txt")]
        assert len(wanted) == 1, objects.keys()
        assert objects[wanted[0]].decode() == marker
    finally:
        stop_process_tree(server)
