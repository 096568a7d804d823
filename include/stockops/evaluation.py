"""Scoring forecasts on the holdout: the model, the champion and two baselines, on the same days."""

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


def persistence_forecast(closes: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Tomorrow = today."""
    return np.asarray(closes, dtype=np.float64)[ends]


def moving_average_forecast(closes: np.ndarray, ends: np.ndarray, window: int = 5) -> np.ndarray:
    """Tomorrow = the mean of the last ``window`` closes."""
    closes = np.asarray(closes, dtype=np.float64)
    idx = np.asarray(ends)[:, None] + np.arange(-window + 1, 1)[None, :]
    return closes[idx].mean(axis=1)


def score_all(closes: np.ndarray, ends: np.ndarray, forecasts: dict[str, np.ndarray],
              ma_window: int = 5) -> dict[str, dict[str, float]]:
    """Metrics for each named forecast plus the two baselines, with each RMSE's ratio to persistence."""
    closes = np.asarray(closes, dtype=np.float64)
    actual, last = closes[ends + 1], closes[ends]
    every = {**forecasts, "persistence": persistence_forecast(closes, ends),
             "moving_average": moving_average_forecast(closes, ends, ma_window)}
    scores = {name: forecast_metrics(actual, f, last) for name, f in every.items()}
    base = scores["persistence"]["rmse"]
    for s in scores.values():
        s["rmse_ratio"] = s["rmse"] / base
    return scores
