"""The ``mlflow.pyfunc`` face of the risk forecaster: what ``mlflow.pyfunc.load_model`` unpickles.

Kept apart from :mod:`stockops.model.portable.forecaster` so that serving and training import the forecaster
without MLflow (about 4 s of import at bento start-up).
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd

from stockops.model.portable.forecaster import load_forecaster


class RiskForecasterModel(mlflow.pyfunc.PythonModel):
    """Artifact ``forecaster``: what ``Forecaster.save`` or ``HarxForecaster.save`` wrote (either kind)."""

    def load_context(self, context) -> None:
        self.forecaster = load_forecaster(context.artifacts["forecaster"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.forecaster.predict_frame(pd.DataFrame(model_input))
