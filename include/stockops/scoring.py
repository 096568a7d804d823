"""Proper scoring rules for risk forecasts of the next day's log return (numpy and scipy only).

A forecast for n days is a :class:`RiskForecast`: the variance of tomorrow's log return, its
quantiles at :data:`LEVELS`, and a point forecast (log return), all in log-return units.
Scores that depend on units (QLIKE, pinball) are computed with returns in percent, as in the
literature and in the numbers the project compares itself with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# quantile levels every risk forecast gives: 1/99 % for the 99 % VaR, 5/95 % for the 90 % interval
LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass(frozen=True)
class RiskForecast:
    """Forecasts for n days: ``variance`` (n,), ``quantiles`` (n, len(LEVELS)), ``point`` (n,); log-return units."""

    variance: np.ndarray
    quantiles: np.ndarray
    point: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.variance)
        if self.quantiles.shape != (n, len(LEVELS)) or len(self.point) != n:
            raise ValueError(f"RiskForecast shapes disagree: variance {self.variance.shape}, "
                             f"quantiles {self.quantiles.shape} (want ({n}, {len(LEVELS)})), point {self.point.shape}")

    def quantile(self, level: float) -> np.ndarray:
        return self.quantiles[:, LEVELS.index(level)]

    def take(self, index: np.ndarray) -> RiskForecast:
        return RiskForecast(self.variance[index], self.quantiles[index], self.point[index])

    @staticmethod
    def concat(parts: list[RiskForecast]) -> RiskForecast:
        return RiskForecast(np.concatenate([p.variance for p in parts]), np.concatenate([p.quantiles for p in parts]),
                            np.concatenate([p.point for p in parts]))
