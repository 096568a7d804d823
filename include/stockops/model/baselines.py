"""Classical risk baselines for the next day's log return, walked forward year by year.

Every model has the signature ``model(inputs, train_end) -> RiskForecast``: ``inputs`` are the
rows of :func:`stockops.model.portable.risk_inputs.daily_inputs` (first row, which has no return, dropped) up to
the last day that may be used, parameters are fitted on targets before row ``train_end``, and the
forecast covers target rows ``train_end .. len(inputs) - 1``, each made with the rows before it.
Truncating ``inputs`` at the end of the test part is what keeps the future out.
Point forecasts are 0 (a zero log return): the median of standardised residuals is a noisy
estimate of the mean return that does not beat zero, and these are risk models.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from arch import arch_model
from scipy import stats

from stockops.model.portable.forecaster import HarxCalibration, HarxForecaster, HarxParams
from stockops.model.portable.risk_inputs import VARIANCE_FLOOR, daily_inputs, har_terms, negative_return_term
from stockops.model.scoring import LEVELS, RiskForecast

MIN_TRAIN_DAYS = 300  # the 22-day HAR average plus about a year to fit on
Model = Callable[[pd.DataFrame, int], RiskForecast]
NORMAL_QUANTILES = stats.norm.ppf(LEVELS)


def scaled(variance: np.ndarray, standard_quantiles: np.ndarray) -> RiskForecast:
    """A zero-mean forecast whose quantiles are those of a unit-variance distribution times ``sqrt(h)``."""
    variance = np.asarray(variance, dtype=np.float64)
    return RiskForecast(variance, np.sqrt(variance)[:, None] * np.asarray(standard_quantiles)[None, :],
                        np.zeros_like(variance))


def garch(inputs: pd.DataFrame, train_end: int, dist: str = "normal", mean: str = "Zero") -> RiskForecast:
    """GARCH(1,1) on percent returns, fitted on the returns before ``train_end``, then run with fixed
    parameters: 1-step variances for targets ``train_end ..``; quantiles from the fitted (standardised)
    distribution, shifted by the fitted mean when ``mean="Constant"`` (the point stays 0)."""
    returns = inputs["ret"].to_numpy(dtype=np.float64) * 100
    model = arch_model(returns, mean=mean, vol="GARCH", p=1, q=1, dist=dist)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; a failed fit still has usable parameters
        result = model.fit(last_obs=train_end, disp="off")
    # row t of the forecast is the variance of day t + 1; the last row forecasts past the data
    variance = result.forecast(horizon=1, start=train_end - 1, reindex=False).variance.to_numpy()[:-1, 0] / 1e4
    shape = result.params[model.distribution.parameter_names()].to_numpy()
    forecast = scaled(variance, model.distribution.ppf(np.array(LEVELS), shape if len(shape) else None))
    mu = float(result.params.get("mu", 0.0)) / 100
    return RiskForecast(forecast.variance, forecast.quantiles + mu, forecast.point)


def ewma_variance(returns: np.ndarray, lam: float = 0.94, h0: float | None = None) -> np.ndarray:
    """RiskMetrics ``h_{t+1} = lam h_t + (1 - lam) r_t^2``: element t is the variance of day t + 1 (``h0``: before
    day 0, default the mean square return)."""
    r2 = np.asarray(returns, dtype=np.float64) ** 2
    h = np.empty_like(r2)
    previous = r2.mean() if h0 is None else h0
    for t, square in enumerate(r2):
        previous = h[t] = lam * previous + (1 - lam) * square
    return h


def ewma(inputs: pd.DataFrame, train_end: int, lam: float = 0.94) -> RiskForecast:
    """EWMA variance with normal quantiles; started from the mean square training return."""
    r = inputs["ret"].to_numpy(dtype=np.float64)
    return scaled(ewma_variance(r, lam, h0=float(np.mean(r[:train_end] ** 2)))[train_end - 1:-1], NORMAL_QUANTILES)


def _log_har_design(inputs: pd.DataFrame, variance: str = "gko", leverage: bool = True):
    """Regressors (row t: known at day t, used for day t + 1), log targets and next-day returns of a log-HAR."""
    v = inputs[variance].to_numpy(dtype=np.float64)
    r = inputs["ret"].to_numpy(dtype=np.float64)
    columns = [np.ones_like(v), *har_terms(v).T]
    if leverage:
        columns += [negative_return_term(r, v), inputs["volume_ratio"].to_numpy(dtype=np.float64)]
    x = np.column_stack(columns)[:-1]
    return x, np.log(np.maximum(v[1:], VARIANCE_FLOOR)), r[1:]


def fit_log_har(x: np.ndarray, target: np.ndarray, r_next: np.ndarray, train: np.ndarray) -> HarxParams:
    """OLS of the log target on ``x`` over the ``train`` rows; the QLIKE-optimal scale ``c = mean(r^2 / exp(fit))``
    and the standardised residuals' quantiles at :data:`LEVELS`."""
    beta = np.linalg.lstsq(x[train], target[train], rcond=None)[0]
    level = np.exp(x[train] @ beta)
    c = np.mean(r_next[train] ** 2 / level)
    z = r_next[train] / np.sqrt(c * level)
    return HarxParams(beta=beta.tolist(), scale=float(c), z=np.quantile(z, LEVELS).tolist(), days=int(train.sum()))


def log_har(inputs: pd.DataFrame, train_end: int, variance: str = "gko", leverage: bool = True) -> RiskForecast:
    """Log-HAR: OLS of ``log(variance_{t+1})`` on the log 1/5/22-day means at t (+ leverage and volume terms).

    The range variance misses part of the close-to-close variance, so one scale ``c`` (the QLIKE
    optimum ``mean(r^2 / exp(fit))`` on training) turns ``exp(fit)`` into a return variance;
    quantiles are empirical quantiles of the standardised training residuals.
    """
    x, target, r_next = _log_har_design(inputs, variance, leverage)
    train = np.all(np.isfinite(x), axis=1) & (np.arange(len(x)) < train_end - 1)
    fit = fit_log_har(x, target, r_next, train)
    h = fit.scale * np.exp(x[train_end - 1:] @ np.asarray(fit.beta))
    return scaled(h, np.asarray(fit.z))


BASELINES: dict[str, Model] = {
    "garch_normal": partial(garch, dist="normal", mean="Constant"),
    "garch_t": partial(garch, dist="t", mean="Constant"),
    "ewma": ewma,
    "har_gk": partial(log_har, variance="gk", leverage=False),
    "harx_gko": log_har,
}


@dataclass(frozen=True)
class WalkForward:
    """Forecasts of every model for the same target days, with those days' returns and dates."""

    forecasts: dict[str, RiskForecast]
    returns: np.ndarray
    dates: np.ndarray


def walk_forward(frame: pd.DataFrame, market_close: np.ndarray | pd.Series | None, years: Sequence[int],
                 models: dict[str, Model] = BASELINES) -> WalkForward:
    """Refit every model once a year on all days before it (expanding window) and forecast each day of the year."""
    inputs = daily_inputs(frame, market_close).iloc[1:].reset_index(drop=True)
    year = pd.DatetimeIndex(frame["Date"]).year.to_numpy()[1:]
    parts: dict[str, list[RiskForecast]] = {name: [] for name in models}
    rows = []
    for y in years:
        index = np.flatnonzero(year == y)
        if len(index) == 0:
            continue
        train_end, test_end = int(index[0]), int(index[-1]) + 1
        rows.append(np.arange(train_end, test_end))
        for name, model in models.items():
            parts[name].append(model(inputs.iloc[:test_end], train_end))
    rows = np.concatenate(rows)
    return WalkForward({name: RiskForecast.concat(p) for name, p in parts.items()},
                       inputs["ret"].to_numpy()[rows], frame["Date"].to_numpy()[1:][rows])


def holdout(frame: pd.DataFrame, market_close: np.ndarray | pd.Series | None, first_target: np.datetime64,
            models: dict[str, Model] = BASELINES) -> WalkForward:
    """One fold: fit every model on the days before ``first_target`` and forecast every day from it on."""
    inputs = daily_inputs(frame, market_close).iloc[1:].reset_index(drop=True)
    dates = frame["Date"].to_numpy(dtype="datetime64[D]")[1:]
    train_end = int(np.searchsorted(dates, first_target.astype("datetime64[D]")))
    if train_end < MIN_TRAIN_DAYS:
        raise ValueError(f"{train_end} days before {first_target} are too few to fit the baselines")
    return WalkForward({name: model(inputs, train_end) for name, model in models.items()},
                       inputs["ret"].to_numpy()[train_end:], dates[train_end:])



def fit_harx(frames: dict[str, pd.DataFrame], first_target: np.datetime64) -> HarxForecaster:
    """HARX-GKO (:func:`log_har`'s default) fitted per ticker on the days before ``first_target``, as a servable
    model (:class:`stockops.model.portable.forecaster.HarxForecaster`), plus one pooled fit over every ticker's training rows
    for series it was not fitted on. Its forecasts of the days from ``first_target`` on are :func:`holdout`'s
    ``harx_gko``. A ticker with fewer than :data:`MIN_TRAIN_DAYS` training days gets the pooled fit."""
    first = np.asarray(first_target).astype("datetime64[D]")
    params, pooled = {}, []
    for ticker, frame in frames.items():
        inputs = daily_inputs(frame).iloc[1:].reset_index(drop=True)
        train_end = int(np.searchsorted(frame["Date"].to_numpy(dtype="datetime64[D]")[1:], first))
        x, target, r_next = _log_har_design(inputs)
        train = np.all(np.isfinite(x), axis=1) & (np.arange(len(x)) < train_end - 1)
        if train_end < MIN_TRAIN_DAYS:
            continue
        params[ticker] = fit_log_har(x, target, r_next, train)
        pooled.append((x[train], target[train], r_next[train]))
    if not pooled:
        raise ValueError(f"no ticker has {MIN_TRAIN_DAYS} days before {first} to fit HARX-GKO on")
    x, target, r_next = (np.concatenate(parts) for parts in zip(*pooled, strict=True))
    pooled_fit = fit_log_har(x, target, r_next, np.ones(len(x), dtype=bool))
    return HarxForecaster(HarxCalibration(tickers=params, pooled=pooled_fit, fitted_before=str(first)))
