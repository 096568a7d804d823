"""Proper scoring rules for risk forecasts of the next day's log return (numpy and scipy only).

A forecast for n days is a :class:`RiskForecast`: the variance of tomorrow's log return, its
quantiles at :data:`LEVELS`, and a point forecast (log return), all in log-return units.
Scores that depend on units (QLIKE, pinball) are computed with returns in percent, as in the
literature and in the numbers the project compares itself with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

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


def _percent(variance: np.ndarray, returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(variance, dtype=np.float64) * 1e4, np.asarray(returns, dtype=np.float64) * 100


def qlike(variance: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """Per-day QLIKE ``log h + r^2 / h`` in percent units: robust to the noise of r^2 as a variance proxy."""
    h, r = _percent(variance, returns)
    return np.log(h) + r ** 2 / h


def pinball(quantiles: np.ndarray, returns: np.ndarray, levels: tuple[float, ...] = LEVELS) -> np.ndarray:
    """Per-day pinball loss averaged over ``levels`` (percent units): a proper score for the whole set of quantiles."""
    q = np.asarray(quantiles, dtype=np.float64) * 100
    r = np.asarray(returns, dtype=np.float64)[:, None] * 100
    a = np.asarray(levels, dtype=np.float64)[None, :]
    return np.mean((a - (r < q)) * (r - q), axis=1)


def coverage(lower: np.ndarray, upper: np.ndarray, returns: np.ndarray) -> float:
    """Share of days inside ``[lower, upper]``: calibration of an interval."""
    r = np.asarray(returns)
    return float(np.mean((r >= lower) & (r <= upper)))


def var_breach_rate(var_quantile: np.ndarray, returns: np.ndarray) -> float:
    """Share of days with a return below the VaR quantile (should equal its level)."""
    return float(np.mean(np.asarray(returns) < var_quantile))


def kupiec(breaches: int, n: int, p: float) -> tuple[float, float]:
    """Kupiec's proportion-of-failures test: (LR statistic, p-value, chi2 with 1 df); 0 or n breaches allowed."""
    def loglik(q: float) -> float:
        # xlogy gives 0 log 0 = 0, so the likelihood at the observed rate stays finite at 0 and n breaches
        return float(special.xlogy(n - breaches, 1 - q) + special.xlogy(breaches, q))

    lr = max(-2 * (loglik(p) - loglik(breaches / n)), 0.0)
    return lr, float(stats.chi2.sf(lr, df=1))


def newey_west_variance(x: np.ndarray, lags: int | None = None) -> float:
    """Variance of the mean of ``x`` with Bartlett-weighted autocovariances (default lags ``floor(4 (T/100)^(2/9))``)."""
    x = np.asarray(x, dtype=np.float64)
    t = len(x)
    lags = int(np.floor(4 * (t / 100) ** (2 / 9))) if lags is None else lags
    e = x - x.mean()
    long_run = e @ e / t
    for j in range(1, min(lags, t - 1) + 1):
        long_run += 2 * (1 - j / (lags + 1)) * (e[j:] @ e[:-j]) / t
    return long_run / t


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, lags: int | None = None) -> tuple[float, float]:
    """Diebold–Mariano test on ``d = loss_b - loss_a``: (t, two-sided p); POSITIVE t means model a is better.

    The HAC (Newey–West) variance allows for the autocorrelation of loss differences of overlapping risk.
    """
    d = np.asarray(loss_b, dtype=np.float64) - np.asarray(loss_a, dtype=np.float64)
    variance = newey_west_variance(d, lags)
    if variance > 0:
        t = float(d.mean() / np.sqrt(variance))
    else:  # identical losses (the same model twice) are no difference at all; anything else is undefined
        t = 0.0 if not np.any(d) else float("nan")
    return t, float(2 * stats.norm.sf(abs(t)))


def date_average(values: np.ndarray, dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique sorted dates, mean per date): a pooled panel's losses are cross-correlated on a day, so DM
    tests use one date-averaged loss difference per day."""
    unique, inverse = np.unique(dates, return_inverse=True)
    return unique, np.bincount(inverse, weights=values) / np.bincount(inverse)


def _rmse_pct(error: np.ndarray) -> float:
    return float(np.sqrt(np.mean(error ** 2)) * 100)


def score(forecast: RiskForecast, returns: np.ndarray) -> dict[str, float]:
    """All scores of one forecast against the realised log returns; persistence (point 0) is the RMSE reference."""
    r = np.asarray(returns, dtype=np.float64)
    n = len(r)
    breaches = {level: int(np.sum(r < forecast.quantile(level))) for level in (0.05, 0.01)}
    rmse = _rmse_pct(forecast.point - r)
    return {
        "qlike": float(qlike(forecast.variance, r).mean()),
        "pinball": float(pinball(forecast.quantiles, r).mean()),
        "coverage_50": coverage(forecast.quantile(0.25), forecast.quantile(0.75), r),
        "coverage_90": coverage(forecast.quantile(0.05), forecast.quantile(0.95), r),
        "var95_breaches": breaches[0.05] / n,
        "var99_breaches": breaches[0.01] / n,
        "kupiec95_p": kupiec(breaches[0.05], n, 0.05)[1],
        "kupiec99_p": kupiec(breaches[0.01], n, 0.01)[1],
        "rmse": rmse,
        "rmse_ratio": rmse / _rmse_pct(r),
        "directional_accuracy": float(np.mean((np.sign(forecast.point) == np.sign(r)) & (forecast.point != 0))),
        "days": n,
    }


def score_panel(forecasts: dict[str, RiskForecast], returns: np.ndarray, tickers: np.ndarray, dates: np.ndarray,
                reference: str) -> dict[str, dict]:
    """Pooled and per-ticker scores of every model, and, against ``reference``, the QLIKE ratio and DM t
    statistics on date-averaged losses (positive t: the model beats the reference)."""
    tickers = np.asarray(tickers)
    daily = {name: {"qlike": date_average(qlike(f.variance, returns), dates)[1],
                    "pinball": date_average(pinball(f.quantiles, returns), dates)[1]} for name, f in forecasts.items()}
    out: dict[str, dict[str, Any]] = {name: {"pooled": score(f, returns),
                  "by_ticker": {t: score(f.take(tickers == t), returns[tickers == t]) for t in np.unique(tickers)}}
           for name, f in forecasts.items()}
    for name, entry in out.items():
        if name != reference:
            entry["qlike_ratio"] = entry["pooled"]["qlike"] / out[reference]["pooled"]["qlike"]
            for loss in ("qlike", "pinball"):
                entry[f"dm_{loss}_vs_{reference}"] = diebold_mariano(daily[name][loss], daily[reference][loss])[0]
    return out
