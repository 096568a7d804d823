"""The served risk forecasters: raw recent OHLCV in, tomorrow's return distribution out.

This module is what travels with the registered MLflow model (``code_paths``) and with the bento:
it needs numpy and pandas only (the LSTM's forward pass is numpy: :mod:`stockops.model.portable.network`; Keras
only to train, or to read a model saved before ``network.npz``), so ``mlflow.pyfunc.load_model(
"models:/<name>@champion")`` works in an interpreter that never imported the rest of ``stockops``.
Training (``stockops.model.risk_model``) builds its samples with the same :func:`feature_matrix`, so
training and serving share one preprocessing path, and what training fitted is stored beside the
model (``forecaster.json``).

Two kinds of model, one interface (``calibration.window`` / ``.history``, :meth:`predict_windows`
on raw feature windows with the tickers they belong to, :meth:`predict_frame`, ``save``/``load``):

* :class:`Forecaster` (kind ``lstm``): the global LSTM — weights + scalers + validation calibration;
* :class:`HarxForecaster` (kind ``harx_gko``): the strongest classical baseline, HARX-GKO (a log-HAR
  of the Garman–Klass + overnight variance with leverage and volume terms), fitted per ticker by
  ``stockops.model.baselines.fit_harx`` — the champion while no LSTM has passed the gate. It reads the
  newest feature row only (``window`` 1) and needs no TensorFlow.

:func:`load_forecaster` reads either from a folder (``forecaster.json`` names the kind).

Input (pyfunc): a DataFrame of daily rows, oldest first, with ``Open High Low Close Volume`` and,
optionally, ``Market`` (the market reference's close on the same day, QQQ by default) and
``ticker`` (several series in one call, one forecast each). At least ``calibration.history``
rows per series; only the last ones are used. Output: one row per series with the point forecast
of tomorrow's log return, its quantiles at :data:`LEVELS`, variance and volatility, and the
point forecast as a price (``forecast_close``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stockops.model.portable.network import FILE as NETWORK_FILE
from stockops.model.portable.network import NumpyNetwork
from stockops.model.portable.risk_inputs import VOLUME_DAYS, daily_inputs, har_terms, negative_return_term

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)  # == stockops.model.scoring.LEVELS (checked by a test)
FEATURES = ("ret", "log_gko", "gap", "volume_ratio", "market_ret", "log_gko_5", "log_gko_22", "fall")
PCT = 100.0  # the network sees returns in percent and variances in percent^2
WARMUP = max(VOLUME_DAYS, 22) + 1  # rows before the first complete feature row
OHLCV_INPUT = ("Open", "High", "Low", "Close", "Volume", "Market")  # the pyfunc signature's columns
OUTPUT_COLUMNS = ("point", *(f"q{round(level * 100):02d}" for level in LEVELS), "variance", "volatility")


def feature_matrix(frame: pd.DataFrame, market_close: np.ndarray | pd.Series | None = None) -> np.ndarray:
    """Per-day features (n, len(FEATURES)) of one series; rows before :data:`WARMUP` hold NaN."""
    inputs = daily_inputs(frame, market_close)
    har = har_terms(inputs["gko"].to_numpy()) + np.log(PCT**2)
    out = np.column_stack([
        inputs["ret"].to_numpy() * PCT, har[:, 0], inputs["gap"].to_numpy() * PCT, inputs["volume_ratio"].to_numpy(),
        inputs["market_ret"].to_numpy() * PCT, har[:, 1], har[:, 2],
        negative_return_term(inputs["ret"].to_numpy(), inputs["gko"].to_numpy()),
    ])
    out[:WARMUP] = np.nan
    return out


def windows(features: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Windows ``features[t-window+1 : t+1]`` for each end index t: shape (len(ends), window, F)."""
    idx = np.asarray(ends)[:, None] + np.arange(-window + 1, 1)[None, :]
    return features[idx]


def synthetic_ohlcv(rows: int, start: float = 100.0, seed: int = 0) -> pd.DataFrame:
    """A plausible daily OHLCV series (1 % daily moves, consistent High/Low, business-day dates).

    For probes and examples where no real data is at hand (the bento's start-up probe, its
    OpenAPI example, a deploy smoke check in a home without snapshots); the answer means nothing.
    """
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.normal(0.0003, 0.01, rows)))
    open_ = np.concatenate([[start], close[:-1]]) * np.exp(rng.normal(0.0, 0.003, rows))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.005, rows)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.005, rows)))
    volume = np.round(1e6 * np.exp(rng.normal(0.0, 0.3, rows)))
    return pd.DataFrame({"Date": pd.bdate_range(end="2024-12-31", periods=rows), "Open": open_.round(4),
                         "High": high.round(4), "Low": low.round(4), "Close": close.round(4), "Volume": volume})


@dataclass(frozen=True)
class Calibration:
    """What training fitted besides the weights: input scalers and the validation calibration."""

    window: int
    units: int
    dense: int
    mean: list[float]
    std: list[float]
    variance_scale: float = 1.0  # QLIKE-optimal factor on the validation part
    z: list[float] = field(default_factory=lambda: [-2.33, -1.64, -0.67, 0.0, 0.67, 1.64, 2.33])  # per LEVELS
    shrink: float = 0.0  # how much of the network's mean forecast survives validation (0 = "no change")

    @property
    def history(self) -> int:
        return self.window + WARMUP


def build_network(window: int, units: int, dense: int, dropout: float = 0.0, seed: int = 42,
                  log_variance_bias: float = 0.0):
    """Windows of standardised features -> [log variance (%^2), mean (%)].

    The log variance is a linear function of the newest day's features (a HAR-like skip) plus
    what the LSTM adds, so the network starts from what a linear model knows. Both start at zero
    weights and ``log_variance_bias`` (the training part's ``log mean r^2``): training begins at the
    unconditional variance instead of a random one that QLIKE punishes by orders of magnitude.
    """
    import keras

    x = keras.Input(shape=(window, len(FEATURES)), name="features")
    newest = keras.layers.Cropping1D((window - 1, 0), name="newest")(x)
    newest = keras.layers.Flatten(name="newest_flat")(newest)
    h = keras.layers.LSTM(units, name="lstm")(x)
    h = keras.layers.Dropout(dropout, seed=seed, name="dropout")(h)
    h = keras.layers.Dense(dense, activation="tanh", name="hidden")(keras.layers.Concatenate()([h, newest]))
    log_variance = keras.layers.Add(name="log_variance")([
        keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(log_variance_bias),
                           name="linear_skip")(newest),
        keras.layers.Dense(1, kernel_initializer="zeros", use_bias=False, name="lstm_part")(h)])
    mean = keras.layers.Dense(1, name="mean", kernel_initializer="zeros")(h)
    return keras.Model(x, keras.layers.Concatenate(name="out")([log_variance, mean]), name="risk_lstm")


def forecast_from_network(raw: np.ndarray, calibration: Calibration) -> dict[str, np.ndarray]:
    """Network outputs (n, 2) -> variance, quantiles and point in log-return units."""
    log_variance: np.ndarray = raw[:, 0].astype(np.float64)
    mean: np.ndarray = raw[:, 1].astype(np.float64)
    variance = np.exp(np.clip(log_variance, -20, 20)) * calibration.variance_scale / PCT**2
    point = calibration.shrink * mean / PCT
    quantiles = point[:, None] + np.sqrt(variance)[:, None] * np.asarray(calibration.z)[None, :]
    return {"variance": variance, "quantiles": np.sort(quantiles, axis=1), "point": point}


LSTM, HARX_GKO = "lstm", "harx_gko"  # the kinds of model (``forecaster.json``'s ``kind``; LSTM where absent)
KIND_DESCRIPTIONS = {
    LSTM: "global LSTM risk forecaster (one network for every ticker)",
    HARX_GKO: "HARX-GKO, the strongest classical baseline (per-ticker log-HAR of Garman-Klass + overnight variance)",
}


def _forecast_frame(model: Forecaster | HarxForecaster, frame: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc contract of either kind: OHLCV rows (optionally ``Market`` and ``ticker``) -> one row per series."""
    groups = [("", frame)] if "ticker" not in frame.columns else list(frame.groupby("ticker", sort=False))
    need, window = model.calibration.history, model.calibration.window
    rows, windows_, last = [], [], []
    for ticker, part in groups:
        if len(part) < need:
            raise ValueError(f"series {ticker or '(unnamed)'} has {len(part)} rows; the model needs at least "
                             f"{need} daily OHLCV rows (window {window} + {WARMUP} warm-up)")
        part = part.iloc[-need:]
        market = part["Market"].to_numpy(dtype=np.float64) if "Market" in part.columns else None
        features = feature_matrix(part.reset_index(drop=True), market)
        windows_.append(windows(features, np.array([need - 1]), window)[0])
        rows.append(ticker)
        last.append(float(part["Close"].iloc[-1]))
    result = model.predict_windows(np.stack(windows_), np.asarray(rows) if "ticker" in frame.columns else None)
    out = pd.DataFrame({"point": result["point"]})
    if "ticker" in frame.columns:
        out.insert(0, "ticker", rows)
    for i, level in enumerate(LEVELS):
        out[f"q{round(level * 100):02d}"] = result["quantiles"][:, i]
    out["variance"] = result["variance"]
    out["volatility"] = np.sqrt(result["variance"])
    out["last_close"] = last
    out["forecast_close"] = np.asarray(last) * np.exp(result["point"])
    return out


class Forecaster:
    """The global LSTM: weights + calibration. Forecasts come from its numpy forward pass
    (:class:`~stockops.model.portable.network.NumpyNetwork`: the same bits for a window in any batch, in any
    process); the Keras network is there while training (``network``; None when loaded from ``network.npz``)."""

    kind = LSTM

    def __init__(self, network, calibration: Calibration, forward: NumpyNetwork | None = None):
        self.network = network
        self.calibration = calibration
        if forward is None and network is None:
            raise ValueError("a Forecaster needs its network: Keras layers or numpy weights")
        self.forward: NumpyNetwork = forward if forward is not None else NumpyNetwork.from_keras(network)
        self._mean = np.asarray(calibration.mean, dtype=np.float64)
        self._std = np.asarray(calibration.std, dtype=np.float64)

    @classmethod
    def load(cls, folder: str | Path) -> Forecaster:
        """From ``save``'s folder: the numpy weights where saved (no TensorFlow), else the Keras weights."""
        folder = Path(folder)
        calibration = Calibration(**json.loads((folder / "forecaster.json").read_text()))
        if (folder / NETWORK_FILE).exists():
            return cls(None, calibration, NumpyNetwork.load(folder))
        network = build_network(calibration.window, calibration.units, calibration.dense)
        network.load_weights(folder / "network.weights.h5")
        return cls(network, calibration)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.network is not None:
            self.network.save_weights(folder / "network.weights.h5")
        self.forward.save(folder)
        (folder / "forecaster.json").write_text(json.dumps(asdict(self.calibration), indent=1))
        return folder

    def standardise(self, raw_windows: np.ndarray, dtype: type = np.float64) -> np.ndarray:
        """Windows in the scalers' units, NaN as 0 (float32 for Keras' training batches: half the memory)."""
        return np.nan_to_num((np.asarray(raw_windows, dtype=dtype) - self._mean.astype(dtype)) / self._std.astype(dtype))

    def predict_windows(self, raw_windows: np.ndarray, tickers: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Forecasts for feature windows (n, window, F) as built by :func:`windows` (one global model: ``tickers``
        is not needed); a window's forecast has the same bits whatever else is in the batch."""
        raw = self.forward(self.standardise(raw_windows)) if len(raw_windows) else np.zeros((0, 2))
        return forecast_from_network(raw, self.calibration)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The pyfunc contract: OHLCV rows (optionally ``Market`` and ``ticker``) -> one forecast row per series."""
        return _forecast_frame(self, frame)


# ---- HARX-GKO: the classical baseline as a servable model ---------------------------------------
# The regressors of stockops.model.baselines.log_har, read from a feature row: the log 1/5/22-day means of
# the GKO variance (the features hold them plus log(PCT^2)), the day's fall and its volume ratio.
HARX_TERMS = ("log_gko", "log_gko_5", "log_gko_22", "fall", "volume_ratio")
_HARX_COLUMNS = [FEATURES.index(name) for name in HARX_TERMS]
_HARX_OFFSET = np.array([np.log(PCT**2)] * 3 + [0.0, 0.0])


def harx_regressors(rows: np.ndarray) -> np.ndarray:
    """``[1, log gko 1/5/22-day means, fall, volume ratio]`` (n, 6) from raw feature rows (n, F), log-return units."""
    return np.column_stack([np.ones(len(rows)), rows[:, _HARX_COLUMNS] - _HARX_OFFSET])


@dataclass(frozen=True)
class HarxParams:
    """One fitted HARX-GKO: ``log h_{t+1} = x_t . beta``, variance ``scale * exp(x_t . beta)``, quantiles
    ``sqrt(h) * z`` (``z``: the standardised training residuals' quantiles at :data:`LEVELS`)."""

    beta: list[float]
    scale: float
    z: list[float]
    days: int = 0  # training days it was fitted on

    def forecast(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Variance (n,) and quantiles (n, len(LEVELS)) for regressor rows ``x`` (n, 6)."""
        variance = self.scale * np.exp(x @ np.asarray(self.beta))
        return variance, np.sqrt(variance)[:, None] * np.asarray(self.z)[None, :]


@dataclass(frozen=True)
class HarxCalibration:
    """What ``fit_harx`` fitted: one :class:`HarxParams` per ticker and a pooled one for any other series
    (``/predict`` with raw OHLCV, a ticker added after the fit)."""

    tickers: dict[str, HarxParams]
    pooled: HarxParams
    fitted_before: str  # the first day it was not fitted on (the holdout's first target day)
    kind: str = HARX_GKO
    window: int = 1  # reads the newest feature row only

    @property
    def history(self) -> int:
        return self.window + WARMUP

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> HarxCalibration:
        params = {t: HarxParams(**p) for t, p in data["tickers"].items()}
        return cls(**{**data, "tickers": params, "pooled": HarxParams(**data["pooled"])})


class HarxForecaster:
    """HARX-GKO per ticker, with the :class:`Forecaster` interface: numpy only, no network."""

    kind = HARX_GKO

    def __init__(self, calibration: HarxCalibration):
        self.calibration = calibration

    @classmethod
    def load(cls, folder: str | Path) -> HarxForecaster:
        return cls(HarxCalibration.from_json(json.loads((Path(folder) / "forecaster.json").read_text())))

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "forecaster.json").write_text(json.dumps(self.calibration.to_json(), indent=1))
        return folder

    def params_for(self, ticker: str | None) -> HarxParams:
        """The ticker's own fit, or the pooled one for a series it was not fitted on."""
        return self.calibration.tickers.get(str(ticker), self.calibration.pooled) if ticker else self.calibration.pooled

    def predict_windows(self, raw_windows: np.ndarray, tickers: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Forecasts from the newest row of each raw feature window (n, window, F); ``tickers`` (n,) picks each
        row's parameters (None: the pooled ones)."""
        x = harx_regressors(np.asarray(raw_windows, dtype=np.float64)[:, -1, :])
        variance, quantiles = np.empty(len(x)), np.empty((len(x), len(LEVELS)))
        names = np.full(len(x), "", dtype=object) if tickers is None else np.asarray(tickers, dtype=object)
        for ticker in dict.fromkeys(names.tolist()):
            rows = names == ticker
            variance[rows], quantiles[rows] = self.params_for(ticker).forecast(x[rows])
        return {"variance": variance, "quantiles": quantiles, "point": np.zeros(len(x))}

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The pyfunc contract (as :meth:`Forecaster.predict_frame`); a ``ticker`` column picks each series' fit."""
        return _forecast_frame(self, frame)


def read_calibration(folder: str | Path) -> Calibration | HarxCalibration:
    """What ``forecaster.json`` in ``folder`` holds, of either kind (no weights loaded)."""
    data = json.loads((Path(folder) / "forecaster.json").read_text())
    return HarxCalibration.from_json(data) if data.get("kind") == HARX_GKO else Calibration(**data)


def load_forecaster(folder: str | Path) -> Forecaster | HarxForecaster:
    """The model saved in ``folder``, of the kind its ``forecaster.json`` names."""
    calibration = read_calibration(folder)
    if isinstance(calibration, HarxCalibration):
        return HarxForecaster(calibration)
    return Forecaster.load(folder)
