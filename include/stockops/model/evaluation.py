"""Point metrics of price forecasts (the monitor's live error); risk forecasts are scored in ``stockops.model.scoring``."""

from __future__ import annotations

import numpy as np


def forecast_metrics(actual: np.ndarray, forecast: np.ndarray, last: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, MAPE (%), RMSPE (RMSE in % of the price) and directional accuracy of price forecasts.

    ``last`` is the close on the day each forecast was made; directional accuracy is the share
    of days where the forecast moved from it in the same direction as the price really did
    (a forecast of "no change" never counts as a hit). Moves smaller than a millionth of the
    price are "no change": float32 inference rounds a no-change forecast by about that much.
    """
    actual, forecast, last = (np.asarray(a, dtype=np.float64) for a in (actual, forecast, last))
    error = forecast - actual
    predicted_move = forecast - last
    predicted_move[np.abs(predicted_move) <= 1e-6 * np.abs(last)] = 0.0
    return {
        "rmse": float(np.sqrt(np.mean(error ** 2))),
        "mae": float(np.mean(np.abs(error))),
        "mape": float(np.mean(np.abs(error) / np.abs(actual)) * 100),
        "rmspe": float(np.sqrt(np.mean((error / actual) ** 2)) * 100),
        "directional_accuracy": float(np.mean(np.sign(predicted_move) * np.sign(actual - last) > 0)),
    }
