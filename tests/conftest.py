"""Test-session setup: an isolated stockops home and Airflow home, set before Airflow is imported.

Airflow reads its configuration when first imported, so the environment is fixed here at
conftest import time. Each test that writes data gets its own ``STOCKOPS_HOME`` through the
``settings`` fixture; the Airflow metadata DB is shared by the session (migrated once).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SESSION_ROOT = Path(tempfile.mkdtemp(prefix="stockops-tests-"))
os.environ["STOCKOPS_HOME"] = str(SESSION_ROOT / "home")
os.environ["AIRFLOW_HOME"] = str(SESSION_ROOT / "airflow")
os.environ.setdefault("STOCKOPS_SOURCE", "replay")

from stockops.config import airflow_environment, get_settings  # noqa: E402

os.environ.update(airflow_environment(get_settings()))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Fresh stockops home for one test, serving on a free port; returns the settings read from it.

    Whatever the test deployed (the serving proxy and bento) is stopped afterwards, by process id.
    """
    from stockops.processes import free_port
    from stockops.serving import stop_serving

    monkeypatch.setenv("STOCKOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STOCKOPS_SOURCE", "replay")
    monkeypatch.setenv("STOCKOPS_SERVE_PORT", str(free_port()))
    current = get_settings()
    yield current
    stop_serving(current)


@pytest.fixture(scope="session")
def goog():
    """The real GOOG series shipped with the project (2004-08-19 .. 2020-12-11) in stockops' column layout."""
    from stockops.data.sources import shipped_series

    return shipped_series("GOOG")


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated Airflow metadata DB (SQLite under the session root), once per session."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy(),
                   timeout=300)
    return os.environ["AIRFLOW_HOME"]
