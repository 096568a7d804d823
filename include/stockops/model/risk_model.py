"""Training the global LSTM risk forecaster on a watchlist panel (Keras 3 on TensorFlow).

One network for every ticker, pooled: each sample is a window of scale-free daily features of one
ticker (``stockops.model.portable.forecaster.feature_matrix``) and its target is the ticker's next-day log
return. The panel is split by **date**, the same boundaries for every ticker, with a purge of one
window between parts, so no window holds a day of an earlier part. The loss is the Gaussian
negative log-likelihood ``log h + (r - mu)^2 / h``, which for ``mu = 0`` is QLIKE, the
proper score the gate judges variance forecasts with, plus ``range_weight`` x the QLIKE of the same ``h``
against the target day's range variance (GKO, rescaled to the squared return's mean on training): QLIKE is
robust to an unbiased noisy proxy, and the range is a far less noisy one than one squared return, so the
network learns how variance moves from every day's range (HARX-GKO, fitted on log range variance, is why the
classical model followed a volatility jump faster). After training, on the validation part
only: the variance scale (QLIKE-optimal), the standardised-residual quantiles (so intervals
cover what they say) and the shrink of the mean toward "no change".

At universe size (421 tickers, ~1.4 M training windows) an epoch is a fresh random draw of
``samples_per_epoch`` training windows (seeded; every window, reshuffled, when the part is smaller), and the
windows are cut batch by batch from one standardised feature array: no array of every window is ever built
(bench/universe_training.py: what the budget costs in QLIKE and saves in time and memory).

Import this module only inside tasks: it imports TensorFlow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stockops.model.portable.forecaster import (
    FEATURES,
    LEVELS,
    PCT,
    WARMUP,
    Calibration,
    Forecaster,
    build_network,
    feature_matrix,
)
from stockops.model.portable.forecaster import windows as feature_windows
from stockops.model.portable.risk_inputs import align_market


@dataclass(frozen=True)
class RiskModelConfig:
    window: int = 40
    units: int = 32
    dense: int = 16
    dropout: float = 0.1
    epochs: int = 20
    batch_size: int = 512
    learning_rate: float = 2e-3
    patience: int = 3
    seed: int = 42
    samples_per_epoch: int = 0  # training windows drawn afresh for each epoch; 0: every window, every epoch
    range_weight: float = 1.0  # weight of the next day's range variance (GKO) as a second variance target; 0: none


@dataclass(frozen=True)
class Panel:
    """Per-day features and next-day returns of many tickers, aligned on one trading-day index."""

    tickers: tuple[str, ...]
    dates: np.ndarray  # (n_days,) datetime64[D], shared by every ticker
    features: dict[str, np.ndarray]  # ticker -> (n_days, F); NaN where not available
    returns: dict[str, np.ndarray]  # ticker -> (n_days,) log return of that day (NaN on the first)
    last_close: dict[str, np.ndarray]


def build_panel(frames: dict[str, pd.DataFrame], market: str | None = "QQQ") -> Panel:
    """Align the tickers' OHLCV frames on the union of their dates; the market reference's closes ride along."""
    dates = np.array(sorted(set().union(*(set(f["Date"].to_numpy(dtype="datetime64[D]")) for f in frames.values()))),
                     dtype="datetime64[D]")
    market_frame = frames.get(market) if market else None
    features, returns, closes = {}, {}, {}
    for ticker, frame in frames.items():
        frame = frame.reset_index(drop=True)
        own: np.ndarray = frame["Date"].to_numpy(dtype="datetime64[D]")
        f = feature_matrix(frame, align_market(own, market_frame))
        pos: np.ndarray = dates.searchsorted(own)
        full = np.full((len(dates), len(FEATURES)), np.nan)
        full[pos] = f
        ret = np.full(len(dates), np.nan)
        ret[pos] = f[:, 0] / PCT
        ret[pos[0]] = np.nan
        close = np.full(len(dates), np.nan)
        close[pos] = frame["Close"].to_numpy(np.float64)
        features[ticker], returns[ticker], closes[ticker] = full, ret, close
    return Panel(tuple(frames), dates, features, returns, closes)


@dataclass(frozen=True)
class Samples:
    """Window end rows (ticker, day index t); the target is the return on day t+1."""

    ticker: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.end)


def samples(panel: Panel, window: int, first: int, stop: int) -> Samples:
    """Every valid window whose target day index lies in [first, stop)."""
    t = np.arange(max(window - 1 + WARMUP, first - 1), min(stop, len(panel.dates)) - 1)
    tickers, ends = [], []
    for i, ticker in enumerate(panel.tickers):
        f, r = panel.features[ticker], panel.returns[ticker]
        ok = np.isfinite(r[t + 1]) & np.isfinite(f[t - window + 1]).all(axis=1) & np.isfinite(f[t]).all(axis=1)
        tickers.append(np.full(int(ok.sum()), i))
        ends.append(t[ok])
    return Samples(np.concatenate(tickers), np.concatenate(ends))


def sample_windows(panel: Panel, s: Samples, window: int) -> np.ndarray:
    out: np.ndarray = np.empty((len(s), window, len(FEATURES)), dtype=np.float32)
    for i, ticker in enumerate(panel.tickers):
        rows = s.ticker == i
        if rows.any():
            out[rows] = feature_windows(panel.features[ticker], s.end[rows], window)
    return out


def sample_returns(panel: Panel, s: Samples) -> np.ndarray:
    out = np.empty(len(s))
    for i, ticker in enumerate(panel.tickers):
        rows = s.ticker == i
        out[rows] = panel.returns[ticker][s.end[rows] + 1]
    return out


def sample_range_variance(panel: Panel, s: Samples) -> np.ndarray:
    """The target day's GKO variance (range and overnight gap; percent^2, floored as the features are)."""
    column = FEATURES.index("log_gko")
    out = np.empty(len(s))
    for i, ticker in enumerate(panel.tickers):
        rows = s.ticker == i
        out[rows] = np.exp(panel.features[ticker][s.end[rows] + 1, column])
    return out


def sample_dates(panel: Panel, s: Samples) -> np.ndarray:
    return panel.dates[s.end + 1]


@dataclass(frozen=True)
class DateSplit:
    """Target-day boundaries shared by every ticker: train < val_start <= val < test_start <= test <= test_end.

    Purge: an earlier part's targets stop one window before the next part starts, so no window
    of a later part holds a day that an earlier part was fitted on, and a part's own days are
    all scored (the purge comes out of the earlier part: in a walk-forward fold, out of the
    training data, never out of the test year).
    """

    val_start: np.datetime64
    test_start: np.datetime64 | None = None  # None: every day from val_start on is validation
    test_end: np.datetime64 | None = None

    def parts(self, panel: Panel, window: int) -> dict[str, Samples]:
        iv = int(np.searchsorted(panel.dates, self.val_start))
        if self.test_start is None:
            return {"train": samples(panel, window, 0, iv - window), "val": samples(panel, window, iv, len(panel.dates))}
        it = int(np.searchsorted(panel.dates, self.test_start))
        stop = len(panel.dates) if self.test_end is None else int(np.searchsorted(panel.dates, self.test_end, "right"))
        return {"train": samples(panel, window, 0, iv - window), "val": samples(panel, window, iv, it - window),
                "test": samples(panel, window, it, stop)}


def fraction_split(panel: Panel, val_frac: float = 0.1, test_frac: float = 0.1) -> DateSplit:
    """The last ``test_frac`` of trading days are the test part, the ``val_frac`` before them validation."""
    n = len(panel.dates)
    return DateSplit(val_start=np.datetime64(panel.dates[int(n * (1 - val_frac - test_frac))].item(), "D"),
                     test_start=np.datetime64(panel.dates[int(n * (1 - test_frac))].item(), "D"))


def _loss(y_true, y_pred):
    """Gaussian NLL of the return (QLIKE for mu = 0) plus ``y_true[:, 2]`` x QLIKE of the same variance against the
    day's range variance, rescaled to the squared return's mean (``y_true[:, 1]``): a far less noisy proxy of the
    same variance, so the network learns how variance moves (after a jump, above all) from every day's range, not
    only from one squared return."""
    from keras import ops

    r, range_variance, weight = y_true[:, 0], y_true[:, 1], y_true[:, 2]
    log_h, mu = ops.clip(y_pred[:, 0], -12.0, 12.0), y_pred[:, 1]
    inverse = ops.exp(-log_h)
    return log_h + ops.square(r - mu) * inverse + weight * (log_h + range_variance * inverse)


@dataclass
class TrainedRisk:
    forecaster: Forecaster
    config: RiskModelConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    seconds: float = 0.0
    samples: dict[str, int] = field(default_factory=dict)


def calibrate(raw: np.ndarray, r_pct: np.ndarray, base: Calibration) -> Calibration:
    """Variance scale, residual quantiles and mean shrink, fitted on validation outputs ``raw`` (n, 2)."""
    h = np.exp(raw[:, 0].astype(np.float64))
    scale = float(np.clip(np.mean(r_pct**2 / h), 0.5, 2.0))
    mu: np.ndarray = raw[:, 1].astype(np.float64)
    denom = float(np.dot(mu, mu))
    shrink = float(np.clip(np.dot(mu, r_pct) / denom, 0.0, 1.0)) if denom > 0 else 0.0
    z = np.quantile((r_pct - shrink * mu) / np.sqrt(h * scale), LEVELS)
    return Calibration(**{**base.__dict__, "variance_scale": scale, "z": [float(v) for v in z], "shrink": shrink})


def window_scalers(panel: Panel, s: Samples, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std of each feature over every row of every window in ``s``, a row counted once per
    window that holds it: the statistics of the stacked windows, without building them. NaN rows are left out."""
    n = len(panel.dates)

    def weighted(i: int, ticker: str) -> tuple[np.ndarray, np.ndarray]:
        ends = s.end[s.ticker == i]
        # the windows holding row d end in [d, d + window - 1]
        coverage = np.cumsum(np.bincount(ends - window + 1, minlength=n + 1) - np.bincount(ends + 1, minlength=n + 1))
        f = panel.features[ticker]
        finite = np.isfinite(f)
        return np.where(finite, coverage[:n, None], 0.0), np.where(finite, f, 0.0)

    held = [(i, t) for i, t in enumerate(panel.tickers) if np.any(s.ticker == i)]
    total, count = np.zeros(len(FEATURES)), np.zeros(len(FEATURES))
    for i, ticker in held:
        w, values = weighted(i, ticker)
        total += (w * values).sum(axis=0)
        count += w.sum(axis=0)
    mean = total / np.maximum(count, 1.0)
    square = np.zeros(len(FEATURES))
    for i, ticker in held:
        w, values = weighted(i, ticker)
        square += (w * (values - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(square / np.maximum(count, 1.0))


def _window_batches(inputs: np.ndarray, s: Samples, targets: np.ndarray, window: int, batch_size: int,
                    budget: int = 0, seed: int | None = None):
    """A Keras ``PyDataset`` of (windows, targets) batches cut from ``inputs`` (tickers, days, F) as they are needed.

    ``seed`` None: every sample once, in order (validation, prediction). Else each epoch is a fresh draw of
    ``budget`` samples without replacement (every sample, shuffled, when ``budget`` is 0 or covers them all),
    from a generator seeded once: the same seed, the same epochs.
    """
    import keras

    offsets = np.arange(-window + 1, 1)

    class WindowBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.rng = None if seed is None else np.random.default_rng(seed)
            self.size = len(s) if budget <= 0 or seed is None else min(budget, len(s))
            self.order = np.arange(len(s))
            self.draw()

        def draw(self) -> None:
            if self.rng is not None:
                self.order = (self.rng.permutation(len(s)) if self.size == len(s)
                              else self.rng.choice(len(s), self.size, replace=False))

        @property
        def num_batches(self) -> int:
            return -(-self.size // batch_size)

        def __getitem__(self, index: int):
            rows = self.order[index * batch_size:(index + 1) * batch_size]
            x = inputs[s.ticker[rows, None], s.end[rows, None] + offsets[None, :]]
            return x, targets[rows]

        def on_epoch_end(self) -> None:
            self.draw()

    return WindowBatches()


def train_risk(panel: Panel, split: DateSplit, config: RiskModelConfig, on_epoch_end=None) -> TrainedRisk:
    """Fit on the train part (``config.samples_per_epoch`` windows an epoch, drawn afresh), early-stop on validation
    QLIKE, calibrate on validation."""
    import keras

    keras.utils.set_random_seed(config.seed)
    parts = split.parts(panel, config.window)
    mean, std = window_scalers(panel, parts["train"], config.window)
    std[std == 0] = 1.0
    base = Calibration(window=config.window, units=config.units, dense=config.dense,
                       mean=[float(v) for v in mean], std=[float(v) for v in std])
    r_train = sample_returns(panel, parts["train"]) * PCT
    range_train = sample_range_variance(panel, parts["train"])
    to_return_scale = float(np.mean(r_train**2) / np.mean(range_train))  # the range misses part of close-to-close

    def targets(part: str) -> np.ndarray:
        r = sample_returns(panel, parts[part]) * PCT
        rv = sample_range_variance(panel, parts[part]) * to_return_scale
        return np.column_stack([r, rv, np.full(len(r), config.range_weight)]).astype("float32")

    y_train = targets("train")
    network = build_network(config.window, config.units, config.dense, config.dropout, config.seed,
                            log_variance_bias=float(np.log(np.mean(r_train**2))))
    forecaster = Forecaster(network, base)
    # every ticker's standardised features in one array (tickers, days, F): windows are cut from it batch by batch
    inputs = np.stack([forecaster.standardise(panel.features[t], np.float32) for t in panel.tickers])
    y_val = targets("val")
    train = _window_batches(inputs, parts["train"], y_train, config.window, config.batch_size,
                            config.samples_per_epoch, seed=config.seed)
    val = _window_batches(inputs, parts["val"], y_val, config.window, 4096)
    network.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=_loss)
    callbacks: list = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                                     restore_best_weights=True)]
    if on_epoch_end is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end))
    started = time.perf_counter()
    fit = network.fit(train, validation_data=val, epochs=config.epochs, shuffle=False, verbose=0,
                      callbacks=callbacks)
    raw_val = np.concatenate([np.asarray(network.predict_on_batch(val[i][0])) for i in range(val.num_batches)])
    forecaster = Forecaster(network, calibrate(raw_val, y_val[:, 0].astype(np.float64), base))
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    return TrainedRisk(forecaster, config, history, int(np.argmin(history["val_loss"])) + 1,
                       time.perf_counter() - started, {k: len(v) for k, v in parts.items()})
