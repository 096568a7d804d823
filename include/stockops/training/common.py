"""What every training step shares: the profiles, the names of the scored models, the MLflow run wrapper."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from stockops import registry
from stockops.core.settings import Settings

log = logging.getLogger(__name__)


SMALL_PROFILE = {"window": 20, "units": 8, "dense": 8, "epochs": 8, "patience": 2}
CANDIDATE = "candidate"
CHAMPION = "champion"
REFERENCE = "harx_gko"  # the strongest classical baseline: the gate's floor and the DM reference
HOLDOUT_FILE = "holdout-{model}.parquet"  # beside the features: each scored model's holdout forecasts
ONLINE_FILE = "online-{model}.json"  # beside them: the online calibration state the holdout walk ended with
RAW = "candidate_raw"  # the candidate's own forecasts, before the online calibration (reported, not gated)


def model_config(settings: Settings, epochs: int | None = None, window: int | None = None):
    from stockops.model.risk_model import RiskModelConfig

    base = RiskModelConfig(window=int(window or settings.train_window), epochs=int(epochs or settings.train_epochs),
                           samples_per_epoch=int(settings.train_samples_per_epoch))
    if settings.train_profile == "small":
        overrides = {**SMALL_PROFILE, "epochs": min(base.epochs, SMALL_PROFILE["epochs"])}
        if window:
            overrides["window"] = int(window)
        return RiskModelConfig(**{**asdict(base), **overrides})
    return base


@contextmanager
def mlflow_run(**start: Any) -> Iterator[Any]:
    """``mlflow.start_run(**start)``, ended FAILED with the error as ``stockops.failed_reason`` if the step raises.

    (A task killed outright cannot end its run: the next training run marks it, see
    :func:`stockops.registry.fail_stale_runs`.)
    """
    import mlflow

    with mlflow.start_run(**start) as run:
        try:
            yield run
        except BaseException as exc:
            mlflow.set_tag(registry.FAILED_REASON, f"{type(exc).__name__}: {exc}"[:5000])
            raise
