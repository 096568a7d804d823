"""Continuous training, as the plain steps the ``stock_train`` DAG wires together.

load the latest snapshot of every watchlist ticker -> features (one panel, split by date) ->
train one global LSTM risk forecaster -> evaluate candidate, champion and the classical
baselines (persistence, GARCH-N/t, EWMA, HAR-GK, HARX-GKO) on the same (ticker, day) pairs ->
register (alias ``challenger``) -> gate -> promote (``champion``).

Each step takes and returns a typed contract (:mod:`stockops.contracts`: ``Snapshots`` ->
``Features`` -> ``Trained`` -> ``Evaluated`` -> ``Registered`` -> ``GateDecision``), each later one
holding the earlier, and works without Airflow (the DAG turns them into XComs with
:func:`stockops.orchestration.xcom.xcom_step`). Each step takes ``settings`` (keyword-only) and never reads the
environment: in a DAG run the adapter passes them, elsewhere the caller does (``train_in_process``, tests,
benches). The gate returns its decision; nothing reads it back from a log. One MLflow run spans train, evaluate
and register (later steps resume it by id). Heavy libraries are imported inside the functions: DAG files import
this module.

One job per module, in the order of the chain: :mod:`~stockops.training.features`, :mod:`~stockops.training.fit`,
:mod:`~stockops.training.evaluate`, :mod:`~stockops.training.promote` (:mod:`~stockops.training.common`: what
they share). This package is the chain's one entry: the steps, as ``stock_train`` wires them.
"""

from __future__ import annotations

from stockops.training.common import CANDIDATE, CHAMPION, REFERENCE, SMALL_PROFILE
from stockops.training.evaluate import evaluate_models, format_scores
from stockops.training.features import load_snapshots, prepare_features
from stockops.training.fit import train_candidate
from stockops.training.promote import (
    gate_candidate,
    gate_passed,
    promote_candidate,
    register_baseline,
    register_candidate,
)

__all__ = [
    "CANDIDATE", "CHAMPION", "REFERENCE", "SMALL_PROFILE", "evaluate_models", "format_scores", "gate_candidate",
    "gate_passed", "load_snapshots", "prepare_features", "promote_candidate", "register_baseline",
    "register_candidate", "train_candidate",
]
