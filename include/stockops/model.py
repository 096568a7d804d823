"""The LSTM forecaster (Keras 3 on TensorFlow), with its preprocessing inside the model.

One Keras model takes a batch of *raw* recent closes, shape ``(n, window)``, and returns the
next day's price forecast, shape ``(n, 1)``. Inside: log prices relative to the newest close,
standardised with statistics fitted on the training part; an LSTM predicts the standardised
next-day log return; the last layer turns it back into a price. Training fits the same graph
minus the last layer, so training and serving share one preprocessing path, and the logged
artefact is all that serving needs. Scaling every input price by c scales the forecast by c.

Import this module only inside tasks: it imports TensorFlow.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from stockops.features import Dataset, raw_windows  # noqa: E402


@keras.saving.register_keras_serializable(package="stockops")
class RelativeLogPrices(keras.layers.Layer):
    """``(log(p) - log(p_newest) - mean) / std``, shaped ``(n, window, 1)`` for the LSTM."""

    def __init__(self, mean: float, std: float, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std = float(mean), float(std)

    def call(self, closes):
        logs = ops.log(closes)
        relative = logs - logs[:, -1:]
        return ops.expand_dims((relative - self.mean) / self.std, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="stockops")
class ReturnToPrice(keras.layers.Layer):
    """Standardised next-day log return + the newest close -> price forecast.

    ``shrink`` (0..1) scales the predicted log return toward "no change"; it is fitted on the
    validation part after training (see :func:`fit_shrink`).
    """

    def __init__(self, mean: float, std: float, shrink: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std, self.shrink = float(mean), float(std), float(shrink)

    def call(self, inputs):
        scaled_return, closes = inputs
        return closes[:, -1:] * ops.exp(self.shrink * (scaled_return * self.std + self.mean))

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "std": self.std, "shrink": self.shrink}


@dataclass(frozen=True)
class ModelConfig:
    window: int = 60
    units: int = 32
    dropout: float = 0.1
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 5
    seed: int = 42


@dataclass
class TrainedModel:
    model: keras.Model  # raw closes (n, window) -> price (n, 1)
    config: ModelConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    seconds: float = 0.0
    shrink: float = 1.0


def build_training_model(config: ModelConfig, dataset: Dataset) -> keras.Model:
    """Raw closes -> standardised next-day log return (what the loss sees)."""
    closes = keras.Input(shape=(config.window,), name="closes", dtype="float32")
    x = RelativeLogPrices(dataset.x_scaler.mean, dataset.x_scaler.std, name="relative_log_prices")(closes)
    x = keras.layers.LSTM(config.units, name="lstm")(x)
    x = keras.layers.Dropout(config.dropout, seed=config.seed, name="dropout")(x)
    return keras.Model(closes, keras.layers.Dense(1, name="scaled_return")(x), name="lstm_return")


def build_serving_model(training_model: keras.Model, dataset: Dataset, shrink: float = 1.0) -> keras.Model:
    """Raw closes -> price, sharing every weight with the training model."""
    closes = training_model.input
    price = ReturnToPrice(dataset.y_scaler.mean, dataset.y_scaler.std, shrink, name="price")(
        [training_model.output, closes])
    return keras.Model(closes, price, name="lstm_price")


def fit_shrink(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Least-squares scale of predicted log returns toward the actual ones, clipped to [0, 1].

    With little signal the LSTM's return forecasts are mostly noise around the drift; scaling
    them by the factor that minimises validation error pulls the forecast toward "no change"
    exactly as much as the validation data says it should.
    """
    denom = float(np.dot(predicted, predicted))
    return float(np.clip(np.dot(predicted, actual) / denom, 0.0, 1.0)) if denom > 0 else 0.0


def train(closes: np.ndarray, dataset: Dataset, config: ModelConfig,
          on_epoch_end=None) -> TrainedModel:
    """Fit on the training part with early stopping on validation loss (best weights restored)."""
    keras.utils.set_random_seed(config.seed)
    train_model = build_training_model(config, dataset)
    train_model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
    ]
    if on_epoch_end is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end))
    started = time.perf_counter()
    fit = train_model.fit(
        raw_windows(closes, config.window, dataset.split.train).astype("float32"),
        dataset.y_scaler.transform(dataset.y_train).astype("float32"),
        validation_data=(raw_windows(closes, config.window, dataset.split.val).astype("float32"),
                         dataset.y_scaler.transform(dataset.y_val).astype("float32")),
        epochs=config.epochs, batch_size=config.batch_size, shuffle=True, verbose=0, callbacks=callbacks,
    )
    val_windows = raw_windows(closes, config.window, dataset.split.val).astype("float32")
    predicted = dataset.y_scaler.inverse(train_model.predict(val_windows, batch_size=256, verbose=0).reshape(-1))
    shrink = fit_shrink(predicted, dataset.y_val)
    serving_model = build_serving_model(train_model, dataset, shrink)
    seconds = time.perf_counter() - started
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    best_epoch = int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else len(history.get("loss", []))
    return TrainedModel(serving_model, config, history, best_epoch, seconds, shrink)


def predict_prices(model: keras.Model, windows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Price forecasts for raw close windows ``(n, window)`` through the compiled path."""
    out = model.predict(np.asarray(windows, dtype="float32"), batch_size=batch_size, verbose=0)
    return np.asarray(out, dtype=np.float64).reshape(-1)


def model_window(model: keras.Model) -> int:
    """The number of closes a model takes (from its input shape)."""
    return int(model.input_shape[-1])
