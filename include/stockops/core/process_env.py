"""What every process stockops starts runs with: telemetry off and MLflow's retries bounded
(:func:`quiet_environment`); Airflow's own part is :func:`stockops.core.airflow_env.airflow_environment`."""

from __future__ import annotations

import os

from stockops.core.environment import _env

# MLflow's HTTP client retries a failed request 7 times with a backoff factor of 2 by default
# (about 4 minutes, sized for rate-limited hosted servers): against our own server that is down,
# a task hung for 266 s before it failed. 3 retries with factor 1 give up after about 10 s.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


# What every ``mlflow server`` the platform starts runs with: MLflow 3's job runners (huey consumer processes for
# GenAI evaluation jobs, about four Python processes importing MLflow) are not used by stockops.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def quiet_environment() -> dict[str, str]:
    """Telemetry off and MLflow's HTTP retries bounded: merge into the env of every process stockops starts.

    Nothing the platform runs may phone home: MLflow 3 sends usage telemetry unless
    ``MLFLOW_DISABLE_TELEMETRY`` is true (it also honours ``DO_NOT_TRACK``, but only the value
    ``true``, not ``1``), BentoML unless ``BENTOML_DO_NOT_TRACK=true``, Evidently unless
    ``DO_NOT_TRACK`` is set at all, Great Expectations unless ``GX_ANALYTICS_ENABLED=False``.
    The opt-outs are fixed; the MLflow retry bounds keep a value the environment already has.
    """
    return {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "BENTOML_DO_NOT_TRACK": "true",
        "GX_ANALYTICS_ENABLED": "False",
        **{name: _env(name, default) for name, default in MLFLOW_HTTP_DEFAULTS.items()},
    }


def _quiet_this_process() -> None:
    """Apply :func:`quiet_environment` to this process where the environment says nothing yet."""
    for name, value in quiet_environment().items():
        os.environ.setdefault(name, value)
