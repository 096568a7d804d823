"""Test-session setup: an isolated stockops home and Airflow home, set before Airflow is imported.

Airflow reads its configuration when first imported, so the environment is fixed here at
conftest import time. Each test that writes data gets its own ``STOCKOPS_HOME`` through the
``settings`` fixture; the Airflow metadata DB is shared by the session (migrated once).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

SESSION_ROOT = Path(tempfile.mkdtemp(prefix="stockops-tests-"))
os.environ["STOCKOPS_HOME"] = str(SESSION_ROOT / "home")
os.environ["AIRFLOW_HOME"] = str(SESSION_ROOT / "airflow")
os.environ.setdefault("STOCKOPS_SOURCE", "replay")

from stockops.core.airflow_env import airflow_environment  # noqa: E402
from stockops.core.settings import get_settings  # noqa: E402

os.environ.update(airflow_environment(get_settings()))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Fresh stockops home for one test, serving on a free port; returns the settings read from it.

    Whatever the test deployed (the serving proxy and bento) is stopped afterwards, by process id.
    """
    from stockops.core.processes import free_port
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


# ---- trained once per session, copied per module ----------------------------------------------------
TEMPLATE_DAY = "2026-06-01"


@dataclass(frozen=True)
class ModelHome:
    """A stockops home with real small models, made once per session: GOOG and QQQ (the market reference)
    ingested for :data:`TEMPLATE_DAY`; v1 trained, forced through the gate, its bento built and ``@champion``;
    v2 trained, registered (``@challenger``) and its bento built. Nothing runs from it: a module copies it
    (:meth:`copy_to`) and serves the copy.

    The copy shares the template's MLflow artifacts (the tracking DB names them by absolute path); a test
    that logs new runs adds files there under new run ids and changes nothing a copy reads.
    """

    home: Path
    built_v2: dict  # v2's ``Built`` contract as XCom JSON: ``Built.from_xcom(...)`` in a copy
    bentos: dict[str, dict]  # version -> {"bento_tag", "window"}

    def copy_to(self, monkeypatch: pytest.MonkeyPatch, dest: Path):
        """Copy the home to ``dest`` and point this process at it (small profile, replay, a free port);
        returns the copy's settings. The caller serves it (``serve_champion``) and stops it."""
        from stockops.core.processes import free_port

        shutil.copytree(self.home, dest, symlinks=True)
        for name, value in template_environment(dest).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("STOCKOPS_SERVE_PORT", str(free_port()))
        return get_settings()


def template_environment(home: Path) -> dict[str, str]:
    return {"STOCKOPS_HOME": str(home), "STOCKOPS_SOURCE": "replay", "STOCKOPS_TRAIN_PROFILE": "small"}


@pytest.fixture(scope="session")
def model_home(tmp_path_factory, worker_id) -> ModelHome:
    """Two small models trained once for the whole run (about 40 s); see :class:`ModelHome`.

    Under pytest-xdist the workers share one: the first to get here builds it in the run's common temp
    folder while holding a lock, the others wait for it and read what it left.
    """
    if worker_id == "master":
        return _build_model_home(tmp_path_factory.mktemp("model-home") / "home")
    shared = tmp_path_factory.getbasetemp().parent / "model-home"
    shared.mkdir(exist_ok=True)
    from stockops.storage.files import file_lock

    with file_lock(shared / ".lock"):
        record = shared / "model-home.json"
        if not record.exists():
            built = _build_model_home(shared / "home")
            record.write_text(json.dumps({"built_v2": built.built_v2, "bentos": built.bentos}))
        data = json.loads(record.read_text())
    return ModelHome(shared / "home", data["built_v2"], data["bentos"])


def _build_model_home(home: Path) -> ModelHome:
    from stockops.ingest import ingest_day
    from stockops.serving import build_candidate_bento
    from stockops.training import (
        evaluate_models,
        gate_candidate,
        load_snapshots,
        prepare_features,
        promote_candidate,
        register_candidate,
        train_candidate,
    )

    with pytest.MonkeyPatch.context() as mp:
        for name, value in template_environment(home).items():
            mp.setenv(name, value)
        settings = get_settings()
        for ticker in dict.fromkeys(t for t in (settings.ticker, settings.market) if t):
            ingest_day(TEMPLATE_DAY, ticker, settings=settings)

        def candidate(reason: str):
            features = prepare_features(load_snapshots(settings=settings), settings=settings)
            trained = train_candidate(features, reason=reason, settings=settings)
            return register_candidate(evaluate_models(trained, settings=settings), settings=settings)

        first = candidate("tests: v1")
        decision = gate_candidate(first, force_promote=True, reason="tests: v1, forced", settings=settings)
        built_v1 = build_candidate_bento(first, decision, settings=settings)
        promote_candidate(first, decision, reason="tests: v1, forced", settings=settings)
        built_v2 = build_candidate_bento(candidate("tests: v2"), settings=settings)
    bentos = {b.version: {"bento_tag": b.bento.bento_tag, "window": b.bento.window} for b in (built_v1, built_v2)}
    assert set(bentos) == {"1", "2"}, bentos
    return ModelHome(home, built_v2.to_xcom(), bentos)


# The longest modules first: `make test` hands whole files to two xdist workers in collection order
# (--no-loadscope-reorder), so the long ones start early and the short ones fill the gaps at the end.
LONGEST_FIRST = ("test_celery_platform", "test_local_platform", "test_serving_faults", "test_train_dag",
                 "test_serving", "test_monitor_dag", "test_ingest_dag", "test_price_suite", "test_risk_model")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: file order otherwise
