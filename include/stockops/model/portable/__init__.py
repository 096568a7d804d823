"""The portable model core: the ONE code set that travels with every model (numpy and pandas only).

Daily inputs from raw OHLCV and the market reference aligned to a ticker's days (``risk_inputs``), the
forecasters and their saved form (``forecaster``), the published snapshot's format (``snapshot``), the
served-prediction log (``prediction_log``) and MLflow's pyfunc face (``pyfunc_model``). Training, the monitor,
the bento and ``mlflow.pyfunc.load_model`` all import these modules, so a forecast's inputs are computed by one
code everywhere. :func:`copy_to` packs them into a model: the MLflow model's ``code_paths`` and the bento's
``code/`` (a model served outside this project imports them from there). Nothing here imports the rest of
stockops.
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent


def copy_to(code: Path) -> Path:
    """``code/stockops/model/portable/``: these modules under empty parent packages; returns ``code``."""
    target = code / "stockops" / "model" / "portable"
    target.mkdir(parents=True)
    for package in (code / "stockops", code / "stockops" / "model"):
        (package / "__init__.py").write_text("")
    for source in sorted(HERE.glob("*.py")):
        shutil.copy2(source, target / source.name)
    return code
