"""A training run whose task died ends FAILED in MLflow, on a real (SQLite) tracking store.

A task that raises ends its run FAILED with the error as ``stockops.failed_reason``. A task killed
outright (SIGKILL: the OOM killer, a lost worker) cannot end its run; the next training run finds it
RUNNING and marks it FAILED (``stock_train`` runs one at a time, so no other run can be live).
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from stockops import registry
from stockops.core.settings import get_settings
from stockops.ingest import ingest_day

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# Starts a training-experiment run as train_candidate does, says its id, then works until killed.
CHILD = r"""
import time
import mlflow
from stockops import registry
from stockops.core.settings import get_settings

run = mlflow.start_run(experiment_id=registry.setup(get_settings()), run_name="train-killed")
print(run.info.run_id, flush=True)
time.sleep(600)
"""


@pytest.fixture
def one_ticker(settings, monkeypatch):
    """The test's settings with one ticker (GOOG, no market reference) and the small profile; the environment
    says the same, for the ingest and the child process that read it."""
    monkeypatch.setenv("STOCKOPS_TICKERS", "GOOG")
    monkeypatch.setenv("STOCKOPS_MARKET", "")
    monkeypatch.setenv("STOCKOPS_TRAIN_PROFILE", "small")
    return get_settings()


@pytest.fixture
def features(one_ticker):
    """Prepared features of one ticker, as the DAG's first two steps leave them."""
    from stockops.training import load_snapshots, prepare_features

    ingest_day("2026-01-02", "GOOG", settings=one_ticker)
    return prepare_features(load_snapshots(settings=one_ticker), settings=one_ticker)


def killed_training_run() -> str:
    """The id of a run whose process was SIGKILLed while it was RUNNING."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = child.stdout.readline().strip()
        assert run_id, child.stderr.read()[-3000:]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    return run_id


def test_the_next_training_run_marks_a_killed_one_failed_and_a_raising_one_fails_itself(features, one_ticker,
                                                                                          monkeypatch):
    import mlflow

    import stockops.model.risk_model
    from stockops.training import train_candidate

    killed = killed_training_run()
    registry.setup(one_ticker)
    assert registry.get_run(killed).info.status == "RUNNING"

    def out_of_memory(*args, **kwargs):
        raise MemoryError("simulated: the LSTM did not fit")

    monkeypatch.setattr(stockops.model.risk_model, "train_risk", out_of_memory)
    with pytest.raises(MemoryError):
        train_candidate(features, reason="fault drill", settings=one_ticker)

    (failing,) = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                  if r.info.run_id != killed]
    swept = registry.get_run(killed)
    assert swept.info.status == "FAILED" and swept.info.end_time is not None
    assert swept.data.tags[registry.FAILED_REASON] == f"its task died (found RUNNING by {failing.info.run_id})"
    assert failing.info.status == "FAILED"
    assert failing.data.tags[registry.FAILED_REASON] == "MemoryError: simulated: the LSTM did not fit"


def test_an_evaluation_that_raises_fails_the_run_it_resumed(features, one_ticker, tmp_path):
    import mlflow

    from stockops.contracts import Trained
    from stockops.training import evaluate_models

    with mlflow.start_run(experiment_id=registry.setup(one_ticker)) as run:
        pass  # what train_candidate leaves: a FINISHED run that later steps resume
    with pytest.raises(FileNotFoundError):
        evaluate_models(Trained(features=features, run_id=run.info.run_id, model_uri="", model_path=str(tmp_path / "no-model"),
                                history_path="", train_seconds=0.0, config={}, reason="fault drill"),
                        settings=one_ticker)
    failed = registry.get_run(run.info.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags[registry.FAILED_REASON].startswith("FileNotFoundError")


def test_the_sweep_keeps_the_current_run_and_finished_ones(settings):
    import mlflow

    experiment = registry.setup(settings)
    with mlflow.start_run(experiment_id=experiment) as finished:
        pass
    killed = killed_training_run()
    with mlflow.start_run(experiment_id=experiment) as current:
        assert registry.fail_stale_runs(settings, keep_run_id=current.info.run_id) == [killed]
        assert registry.get_run(current.info.run_id).info.status == "RUNNING"
    assert registry.get_run(finished.info.run_id).info.status == "FINISHED"
    assert registry.FAILED_REASON not in registry.get_run(finished.info.run_id).data.tags
