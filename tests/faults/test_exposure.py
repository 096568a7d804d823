"""An MLflow tracking server that is down: a step fails within 30 s with a message that names the URI
and the fix, instead of hanging in MLflow's retries (measured before: 266 s).

The URI points at a port nobody listens on (a closed port answers "connection refused" at once,
so what is measured is the retrying, not a network timeout).
"""

from __future__ import annotations

import time

import pytest

from stockops import registry
from stockops.core.processes import free_port
from stockops.core.settings import get_settings

pytestmark = pytest.mark.faults


@pytest.fixture
def dead_uri(settings, monkeypatch) -> str:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("STOCKOPS_MLFLOW_TRACKING_URI", uri)
    return uri


def test_setup_against_a_dead_tracking_server_fails_fast_naming_the_uri(dead_uri):
    started = time.monotonic()
    with pytest.raises(RuntimeError) as failure:
        registry.setup(get_settings())
    assert time.monotonic() - started < 30
    message = str(failure.value)
    assert dead_uri in message and "STOCKOPS_MLFLOW_TRACKING_URI" in message and "make run" in message


def test_mlflow_own_retries_are_bounded_past_the_probe(dead_uri):
    """A server that dies after the probe: MLflow's client gives up within 30 s, not ~4 minutes
    (the bounds come from ``quiet_environment()``, set in this process by importing stockops.core.settings)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    started = time.monotonic()
    with pytest.raises(MlflowException) as failure:
        MlflowClient(tracking_uri=dead_uri).search_experiments()
    assert time.monotonic() - started < 30
    assert "127.0.0.1" in str(failure.value)
