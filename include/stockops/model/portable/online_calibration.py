"""Online calibration: a risk forecast kept on target as the regime changes, from realised outcomes, day by day.

A model's calibration (its variance scale and standardised quantiles) is fitted once, on the validation part.
When volatility jumps, or on a ticker the model never saw, it drifts off target until the next retrain. This
module corrects the served forecast with a small state, updated each day with the outcomes just realised:

* a **variance scale** ``exp(market + ticker)``: the QLIKE-optimal scale of a variance forecast is the mean of
  ``r^2 / h``; each scale is an exponentially weighted mean of it, kept in logs: ``log c += log(1 + eta (s^2 - 1))``
  for the volatility-normalised residual ``s = (r - point) / sqrt(h)`` of the served forecast (exactly the EWMA
  ``c <- (1 - eta) c + eta r^2 / h_model``; no clipping, which would bias it down on fat tails). ``market`` is one
  number for every ticker, stepped with the day's cross-sectional mean of ``s^2`` (a market-wide shock moves it in a
  day, with little noise); ``ticker`` is each ticker's own, slow (its noise costs QLIKE: a ticker's level, e.g. one
  the model was not trained on);
* **quantile offsets** per ticker and level: adaptive conformal inference in its quantile-tracking form (Gibbs &
  Candès 2021; Angelopoulos, Candès & Tibshirani 2023, the P part of conformal PID) on the normalised score:
  ``delta_L += eta (L - 1{r < q_L})``, so each quantile's long-run breach rate converges to its level ``L``
  whatever the model does, with the error bounded by ``(bound + eta) / (eta T)`` over T days.

The corrected forecast: ``h' = h exp(market + ticker)``, ``q'_L = point + sqrt(h') (z_L + delta_L)`` where
``z_L = (q_L - point) / sqrt(h)`` are the model's own standardised quantiles. An update needs only what was
served (the corrected variance and quantiles) and the realised return: the platform's forecast records.

The state belongs to one model version (``model_version``) and says which days it has seen (``through`` per
ticker and overall); a state for another version is never applied. It is saved as JSON, written whole and renamed.
Numpy only: it travels with the model (the bento applies it).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)  # == forecaster.LEVELS
FILE_NAME = "online_calibration.json"


@dataclass(frozen=True)
class OnlineRates:
    """Step sizes and bounds (log-variance units for the scales, standardised units for the quantile offsets).

    Chosen on the development years 2010-2013 (bench/model_quality.py --years 2010 .. 2013, 100 tickers), never on
    the test years 2014-2020: of market weights 0.02, 0.05, 0.1, a cap on a day's mean s^2, no ticker scale and no
    variance scale at all, market 0.02 gave the lowest QLIKE there (0.037 nats/day below HARX-GKO, against 0.031
    for the model alone)."""

    market: float = 0.02  # EWMA weight of the day's cross-sectional mean of s^2
    ticker: float = 0.002  # EWMA weight of the ticker's own s^2
    quantile: float = 0.05  # per day, times (L - 1{breach})
    scale_bound: float = 2.0  # |market|, |ticker| <= this (a factor of e^2 = 7.4 on the variance)
    offset_bound: float = 1.5  # |delta_L| <= this


@dataclass
class TickerState:
    log_scale: float = 0.0
    offsets: list[float] = field(default_factory=lambda: [0.0] * len(LEVELS))
    days: int = 0  # realised days applied
    through: str | None = None  # the last realised day applied (ISO)


@dataclass
class OnlineState:
    """The online calibration of one model version: a market-wide scale and each ticker's own state."""

    model_version: str
    rates: OnlineRates = field(default_factory=OnlineRates)
    market_log_scale: float = 0.0
    tickers: dict[str, TickerState] = field(default_factory=dict)
    days: int = 0  # realised days applied (cross-sections)
    through: str | None = None  # the last realised day applied
    updated_at: str | None = None
    started_from: str = "neutral"  # "neutral", or where the state was warmed (e.g. "holdout through 2024-05-31")

    # ---- applying -------------------------------------------------------------------------------------------
    def arrays(self, tickers) -> tuple[np.ndarray, np.ndarray]:
        """(log variance factor (n,), quantile offsets (n, len(LEVELS))) for each ticker (None: the market part only)."""
        names = list(tickers)
        factor = np.full(len(names), self.market_log_scale)
        offsets = np.zeros((len(names), len(LEVELS)))
        for i, name in enumerate(names):
            state = self.tickers.get(str(name)) if name is not None else None
            if state is not None:
                factor[i] += state.log_scale
                offsets[i] = state.offsets
        return factor, offsets

    def adjust(self, forecast: dict[str, np.ndarray], tickers) -> dict[str, np.ndarray]:
        """The corrected forecast (``variance``, ``quantiles``, ``point``: arrays of n rows) for ``tickers`` (n,)."""
        return adjust(forecast, *self.arrays(tickers))

    # ---- updating -------------------------------------------------------------------------------------------
    def update(self, day: str, tickers, returns, point, variance, quantiles) -> int:
        """Apply one day's realised outcomes: ``returns`` (n,) of the forecasts as served (corrected ``variance``
        (n,), ``quantiles`` (n, len(LEVELS)), ``point`` (n,)) for ``tickers`` (n,), all for target day ``day``.

        Days come in order: a day at or before ``through`` is ignored (0 returned: a re-run adds nothing; an outcome
        realised after its day was applied is dropped); returns the number of tickers applied.
        """
        day = str(day)
        if self.through is not None and day <= self.through:
            return 0
        names = [str(t) for t in tickers]
        r, mu, h = (np.asarray(a, dtype=np.float64) for a in (returns, point, variance))
        q = np.asarray(quantiles, dtype=np.float64).reshape(len(names), len(LEVELS))
        fresh = np.isfinite(r) & np.isfinite(h) & (h > 0)
        if not fresh.any():
            return 0
        names = [t for t, ok in zip(names, fresh, strict=True) if ok]
        r, mu, h, q = r[fresh], mu[fresh], h[fresh], q[fresh]
        rates = self.rates
        excess = (r - mu) ** 2 / h - 1.0  # >= -1
        self.market_log_scale = float(np.clip(self.market_log_scale + np.log1p(rates.market * excess.mean()),
                                              -rates.scale_bound, rates.scale_bound))
        states = [self.tickers.setdefault(name, TickerState()) for name in names]
        scales = np.clip(np.array([st.log_scale for st in states]) + np.log1p(rates.ticker * excess),
                         -rates.scale_bound, rates.scale_bound)
        offsets = np.clip(np.array([st.offsets for st in states])
                          + rates.quantile * (np.asarray(LEVELS)[None, :] - (r[:, None] < q)),
                          -rates.offset_bound, rates.offset_bound)
        for state, scale, offset in zip(states, scales.tolist(), offsets.tolist(), strict=True):
            state.log_scale, state.offsets = scale, offset
            state.days += 1
            state.through = day
        self.days += 1
        self.through = day
        self.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
        return len(names)

    # ---- lineage and storage --------------------------------------------------------------------------------
    def lineage(self, ticker: str | None) -> dict:
        """What an answer says about the state it used, with the numbers that turn the model's own forecast into the
        served one (:func:`adjust` with ``log(variance_factor)`` and ``quantile_offsets``, per :data:`LEVELS`)."""
        own = self.tickers.get(str(ticker)) if ticker is not None else None
        factor = self.market_log_scale + (own.log_scale if own else 0.0)
        return {"model_version": self.model_version, "through": self.through, "updated_at": self.updated_at,
                "started_from": self.started_from, "days": self.days,
                "ticker_through": own.through if own else None, "ticker_days": own.days if own else 0,
                "variance_factor": float(np.exp(factor)),
                "quantile_offsets": list(own.offsets) if own else [0.0] * len(LEVELS),
                "scope": "ticker" if own else "market"}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> OnlineState:
        """Raises ``ValueError`` unless every scale and offset is a finite number within the rates' bounds, the right
        count of them: a hand-edited or damaged state must not turn an answer into an error. Rate names this code
        does not know (a state written by another version of it) are left out."""
        known = {f for f in OnlineRates.__dataclass_fields__}
        rates = OnlineRates(**{k: v for k, v in data.get("rates", {}).items() if k in known})
        state = cls(**{**data, "rates": rates,
                       "tickers": {t: TickerState(**s) for t, s in data.get("tickers", {}).items()}})
        scales = np.array([state.market_log_scale, *(t.log_scale for t in state.tickers.values())], dtype=np.float64)
        offsets = np.array([t.offsets for t in state.tickers.values()], dtype=np.float64).reshape(-1, len(LEVELS))
        if not (np.isfinite(scales).all() and np.isfinite(offsets).all()):
            raise ValueError("a variance scale or quantile offset is not a finite number")
        if np.abs(scales).max() > rates.scale_bound + 1e-9 or (offsets.size and np.abs(offsets).max()
                                                                > rates.offset_bound + 1e-9):
            raise ValueError(f"a variance scale or quantile offset is beyond its bound ({rates.scale_bound}, "
                             f"{rates.offset_bound})")
        return state

    def save(self, path: str | Path) -> Path:
        """Written whole to a temporary file, then renamed: a reader sees the old state or the new one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> OnlineState:
        """Raises ``ValueError`` (saying which file) when it is torn or not a state."""
        path = Path(path)
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError, ValueError) as exc:
            raise ValueError(f"{path} is not an online calibration state ({type(exc).__name__}: {exc})") from exc


def adjust(forecast: dict[str, np.ndarray], log_factor: np.ndarray, offsets: np.ndarray) -> dict[str, np.ndarray]:
    """``h' = h e^factor``; ``q' = point + sqrt(h') (z + offsets)`` with ``z`` the forecast's standardised quantiles."""
    point = np.asarray(forecast["point"], dtype=np.float64)
    variance = np.asarray(forecast["variance"], dtype=np.float64)
    z = (np.asarray(forecast["quantiles"], dtype=np.float64) - point[:, None]) / np.sqrt(variance)[:, None]
    corrected = variance * np.exp(log_factor)
    quantiles = point[:, None] + np.sqrt(corrected)[:, None] * (z + offsets)
    return {**forecast, "variance": corrected, "quantiles": np.sort(quantiles, axis=1), "point": point}


def run_online(state: OnlineState, forecast: dict[str, np.ndarray], returns: np.ndarray, tickers: np.ndarray,
               days: np.ndarray) -> dict[str, np.ndarray]:
    """Walk ``state`` day by day through a panel of raw forecasts (n rows, any order) and their realised ``returns``:
    each day's forecasts are corrected with the state as it was after the previous day, then the day's outcomes
    update it. Returns the corrected forecasts, in the input order (what was served)."""
    days = np.asarray(days).astype("datetime64[D]").astype(str)
    tickers = np.asarray(tickers).astype(str)
    out = {k: np.array(v, dtype=np.float64, copy=True) for k, v in forecast.items()}
    order = np.argsort(days, kind="stable")
    bounds = np.flatnonzero(np.r_[True, days[order][1:] != days[order][:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        rows = order[a:b]
        part = state.adjust({k: v[rows] for k, v in forecast.items()}, tickers[rows])
        for key in out:
            out[key][rows] = part[key]
        state.update(days[rows[0]], tickers[rows], returns[rows], part["point"], part["variance"], part["quantiles"])
    return out
