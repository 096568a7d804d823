"""The code the bento runs besides BentoML: the packed model's tag, and the portable model core and the served
settings, imported from the project or else from the copy the packed model carries (``code/``)."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

import bentoml

ARGS = bentoml.use_arguments()
MODEL_TAG: str = getattr(ARGS, "model_tag", None) or os.environ.get("STOCKOPS_BENTO_MODEL", "stockops_risk:latest")
log = logging.getLogger("bentoml.stock_forecast")  # under "bentoml": BentoML's level and format apply


def _model_path() -> Path | None:
    try:
        return Path(bentoml.models.get(MODEL_TAG).path)
    except Exception:  # noqa: BLE001 - no model store at hand (e.g. an import to read the OpenAPI spec)
        return None


def _import_served(name: str, package: str = "stockops.model.portable"):
    """``<package>.<name>``: the project's, or else the copy the packed model carries (``code/``)."""
    module = f"{package}.{name}"
    try:
        return importlib.import_module(module)
    except ImportError:
        path = _model_path()
        if path is None or not (path / "code" / (module.replace(".", "/") + ".py")).exists():
            raise
        if str(path / "code") not in sys.path:
            sys.path.insert(0, str(path / "code"))
        return importlib.import_module(module)


fc = _import_served("forecaster")
risk_inputs = _import_served("risk_inputs")  # align_market: the one alignment rule of training and serving
snapshot = _import_served("snapshot")  # the published snapshot's layout, hash and checked read, as the store's
prediction_log = _import_served("prediction_log")  # the served-prediction log's layout: bounded, counted exactly
state_view = _import_served("state_view")  # the records' pointers and the blobs, as the bento reads them
online_calibration = _import_served("online_calibration")  # the monitor's daily correction of the served forecast
# The STOCKOPS_* variables read here (ServedSettings.read), declared once with the platform's settings.
served_settings = _import_served("served_settings", "stockops.core")
MAX_STALENESS_SESSIONS: int = served_settings.ServedSettings.model_fields["max_staleness_sessions"].default
TICKER_PATTERN = served_settings.TICKER_PATTERN
