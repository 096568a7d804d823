"""Airflow task logs and MLflow artifacts on the S3-compatible object store: the settings, in one place.

Why: on more than one host there is no shared disk. A task's log written on a worker host must still be
readable in the UI, which the api-server on the control host serves; a model logged by a task on a
worker must be loadable by the serving host. Both therefore go to the object store
(:mod:`stockops.launch.objectstore`, ``rclone serve s3``; the compose service ``objectstore``):

* Airflow 3.3 remote task logging (:func:`airflow_remote_logging_env`). The task supervisor on the worker
  uploads each finished attempt's log (``airflow.sdk.log.upload_to_remote`` ->
  ``S3RemoteLogIO.upload``) and the api-server reads it back from the bucket (``FileTaskHandler.read``
  -> ``S3RemoteLogIO.read``): nobody has to reach a worker's log server, and a worker host can be
  replaced without losing logs.
* MLflow's artifact store (:func:`mlflow_server_command`, :func:`mlflow_server_env`). The tracking server
  proxies artifacts (``--serve-artifacts``) to ``--artifacts-destination s3://BUCKET/mlflow``: only the
  server holds S3 credentials; clients (tasks, the serving agent) need nothing but HTTP to MLflow
  (``mlflow-artifacts:/`` URIs), so no AWS secret is handed to every host.

Plain values only (no Airflow or MLflow import): the launchers, the tests
(``tests/system/test_remote_logs.py``) and, as documentation, ``docker-compose.yaml`` use them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stockops.core.process_env import MLFLOW_SERVER_ENV

__all__ = [
    "DEFAULT_LOG_CONN_ID", "DEFAULT_LOG_PREFIX", "DEFAULT_MLFLOW_PREFIX", "S3Endpoint", "airflow_aws_connection",
    "airflow_remote_logging_env", "mlflow_server_command", "mlflow_server_env",
]

DEFAULT_LOG_CONN_ID = "stockops_s3"  # an Airflow connection id: lower case, so AIRFLOW_CONN_STOCKOPS_S3
DEFAULT_LOG_PREFIX = "airflow-logs"
DEFAULT_MLFLOW_PREFIX = "mlflow"


@dataclass(frozen=True)
class S3Endpoint:
    """Where the object store answers and the key that opens it.

    ``path_style``: address buckets as ``http://host:port/BUCKET/key`` (rclone's default,
    ``--force-path-style``), never as ``http://BUCKET.host:port/key``, which a compose service name
    (``objectstore``) does not resolve as.
    """

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    path_style: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Endpoint:
        """From the ``AWS_*`` variables (what :meth:`ObjectStoreServer.env` and compose's ``.env`` give)."""
        return cls(endpoint_url=env["AWS_ENDPOINT_URL"], access_key=env["AWS_ACCESS_KEY_ID"],
                   secret_key=env["AWS_SECRET_ACCESS_KEY"], region=env.get("AWS_DEFAULT_REGION") or "us-east-1")

    def aws_env(self) -> dict[str, str]:
        """The standard variables boto3/s3fs read (``AWS_ENDPOINT_URL`` since botocore 1.31)."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": self.region}


def airflow_aws_connection(store: S3Endpoint) -> dict[str, object]:
    """An Airflow connection of type ``aws`` for ``store``, as the JSON form ``AIRFLOW_CONN_<ID>`` accepts.

    The field names are those the amazon provider 9.x reads from the connection's extra
    (``airflow/providers/amazon/aws/utils/connection_wrapper.py``): ``aws_access_key_id`` /
    ``aws_secret_access_key`` (or login/password), ``region_name``, ``endpoint_url`` (every boto3
    service; a per-service one would go in ``service_config: {"s3": {"endpoint_url": ...}}``) and
    ``config_kwargs`` (a ``botocore.config.Config``: here the path-style addressing).
    """
    extra: dict[str, object] = {"aws_access_key_id": store.access_key, "aws_secret_access_key": store.secret_key,
                                "region_name": store.region, "endpoint_url": store.endpoint_url}
    if store.path_style:
        extra["config_kwargs"] = {"s3": {"addressing_style": "path"}}
    return {"conn_type": "aws", "extra": extra}


def airflow_remote_logging_env(store: S3Endpoint, bucket: str, prefix: str = DEFAULT_LOG_PREFIX,
                               conn_id: str = DEFAULT_LOG_CONN_ID, delete_local_logs: bool = True) -> dict[str, str]:
    """The environment that makes Airflow 3.3 keep task logs in ``s3://bucket/prefix``.

    Every Airflow process needs it: the Celery worker (its task supervisor uploads each attempt's log when
    the attempt ends), the triggerer (trigger logs), the api-server (it reads logs from the bucket for the
    UI and REST API) and the scheduler and dag-processor (same configuration, so the components agree).

    The connection travels as an ``AIRFLOW_CONN_<ID>`` variable, not a row in the metadata DB: the
    supervisor resolves it through the secrets backends (environment first) before asking the API, and
    the secret never lands in PostgreSQL. ``delete_local_logs``: a worker's local copy is removed once
    uploaded (its disk is scratch; the bucket is the record), which also proves that what the UI shows
    came from the bucket.
    """
    return {
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{bucket}/{prefix.strip('/')}",
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": conn_id,
        "AIRFLOW__LOGGING__DELETE_LOCAL_LOGS": str(delete_local_logs),
        f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(airflow_aws_connection(store), separators=(",", ":")),
    }


def mlflow_server_command(backend_store_uri: str, bucket: str, *, host: str = "127.0.0.1", port: int = 5000,
                          prefix: str = DEFAULT_MLFLOW_PREFIX, workers: int = 1,
                          allowed_hosts: Sequence[str] = (), mlflow: str = "mlflow") -> list[str]:
    """``mlflow server`` storing artifacts in ``s3://bucket/prefix``, served to clients through itself.

    ``--serve-artifacts`` with ``--artifacts-destination``: new experiments get the artifact root
    ``mlflow-artifacts:/``, which clients resolve to ``http://<tracking server>/api/2.0/mlflow-artifacts``;
    the server alone talks to S3 (see :func:`mlflow_server_env`). ``allowed_hosts``: the Host headers the
    server answers (MLflow 3's DNS-rebinding guard), e.g. ``mlflow:5000`` in compose.
    """
    command = [mlflow, "server", "--backend-store-uri", backend_store_uri,
               "--artifacts-destination", f"s3://{bucket}/{prefix.strip('/')}", "--serve-artifacts",
               "--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed_hosts:
        command += ["--allowed-hosts", ",".join(allowed_hosts)]
    return command


def mlflow_server_env(store: S3Endpoint) -> dict[str, str]:
    """What the MLflow tracking server (only it) needs to write artifacts to the object store.

    MLflow's S3 artifact repository reads ``MLFLOW_S3_ENDPOINT_URL`` (not ``AWS_ENDPOINT_URL``) for the
    endpoint and boto3's own ``AWS_*`` variables for the key; ``MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE``
    pins path-style buckets (see :class:`S3Endpoint`). The job runners stay off, as for every MLflow
    server the platform starts (``stockops.core.process_env.MLFLOW_SERVER_ENV``).
    """
    env = {**MLFLOW_SERVER_ENV, **store.aws_env(), "MLFLOW_S3_ENDPOINT_URL": store.endpoint_url}
    if store.path_style:
        env["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] = "path"
    return env
