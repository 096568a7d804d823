"""What the platform exposes, checked without starting it: telemetry off in the libraries' own terms,
listeners placed on loopback, secrets and logs created owner-only, no Airflow log server started.

The running platform is checked in ``tests/system/test_local_platform.py``
(``test_local_platform_exposes_nothing``); an unreachable MLflow in ``tests/faults/test_exposure.py``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from stockops.core.airflow_env import airflow_environment
from stockops.core.settings import quiet_environment
from stockops.launch import cluster
from stockops.launch.cluster import CeleryPlatform
from stockops.launch.components import COMPONENTS, ensure_admin_password, private_dir, private_log, write_secret
from stockops.launch.local import LocalPlatform

TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "BENTOML_DO_NOT_TRACK": "true",
                 "GX_ANALYTICS_ENABLED": "False"}


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_quiet_environment_turns_telemetry_off_and_bounds_mlflow_retries():
    env = quiet_environment()
    assert TELEMETRY_OFF.items() <= env.items()
    assert int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 3
    assert int(env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]) <= 1


def test_importing_config_turns_telemetry_off_in_process_as_mlflow_and_bentoml_read_it(tmp_path):
    """A clean interpreter (no opt-outs in its env, not under pytest) that imports stockops.core.settings first:
    MLflow creates no telemetry client, BentoML's own switch reads 'do not track'."""
    env = {k: v for k, v in os.environ.items()
           if k not in TELEMETRY_OFF and not k.startswith(("MLFLOW_", "PYTEST", "BENTOML_"))}
    env["HOME"] = str(tmp_path)
    code = ("import stockops.core.settings, mlflow\n"
            "from mlflow.telemetry import get_telemetry_client\n"
            "from bentoml._internal.utils.analytics.usage_stats import do_not_track\n"
            "print(get_telemetry_client() is None, do_not_track())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True"]


def test_airflow_environment_carries_the_opt_outs_loopback_hosts_and_the_password_file(settings):
    env = airflow_environment(settings)
    assert TELEMETRY_OFF.items() <= env.items()
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(settings.airflow_passwords_file)
    platform_env = LocalPlatform(settings).env()
    assert TELEMETRY_OFF.items() <= platform_env.items() and platform_env["AIRFLOW__API__HOST"] == "127.0.0.1"


def test_no_airflow_log_server_is_started_locally():
    """Airflow 3.3 binds the log servers to every interface with no setting for it: they are skipped."""
    by_name = {c[0]: c for c in COMPONENTS}
    assert {"api-server", "scheduler", "dag-processor", "triggerer"} == set(by_name)
    assert "--skip-serve-logs" in by_name["scheduler"] and "--skip-serve-logs" in by_name["triggerer"]


def test_the_celery_layout_starts_no_log_server_and_keeps_its_secrets_private(settings, monkeypatch):
    spawned: dict[str, list[str]] = {}
    extra_env: dict[str, dict] = {}
    monkeypatch.setattr(cluster, "_admin", lambda sql, dsn=None: None)
    monkeypatch.setattr(CeleryPlatform, "airflow", lambda self, *a, **k: None)

    def spawn(self, name, args, env=None):
        extra_env[name] = env or {}
        return spawned.setdefault(name, args)

    monkeypatch.setattr(CeleryPlatform, "_spawn", spawn)
    platform = CeleryPlatform(settings)
    platform.start()
    assert "--skip-serve-logs" in spawned["airflow-worker"] and "--skip-serve-logs" in spawned["airflow-triggerer"]
    # the MLflow server starts without its job runners (huey consumer processes stockops does not use)
    assert extra_env["mlflow-server"] == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    platform.env()  # creates the JWT and API secrets
    secrets = list(settings.airflow_home.glob(".*_secret"))
    assert len(secrets) == 2 and all(mode(p) == 0o600 for p in secrets)
    assert mode(settings.airflow_home) == 0o700 and mode(settings.airflow_passwords_file) == 0o600
    assert mode(settings.home) == 0o700, "the home holds the databases, records and logs: owner-only"


def test_secrets_and_logs_are_owner_only_even_where_they_existed_wider(tmp_path):
    folder = tmp_path / "airflow"
    folder.mkdir(mode=0o755)
    assert mode(private_dir(folder)) == 0o700
    log = folder / "x.log"
    log.write_text("old\n")
    log.chmod(0o644)
    with private_log(log) as out:
        out.write(b"new\n")
    assert mode(log) == 0o600 and log.read_text() == "old\nnew\n"
    write_secret(tmp_path / "fresh" / "key", "s3cret")
    assert mode(tmp_path / "fresh" / "key") == 0o600 and mode(tmp_path / "fresh") == 0o700


def test_the_admin_password_is_created_private_and_never_replaced(tmp_path):
    path = tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated"
    ensure_admin_password(path)
    password = json.loads(path.read_text())["admin"]
    assert len(password) >= 16 and mode(path) == 0o600 and mode(path.parent) == 0o700
    path.chmod(0o644)
    ensure_admin_password(path)
    assert json.loads(path.read_text())["admin"] == password and mode(path) == 0o600
