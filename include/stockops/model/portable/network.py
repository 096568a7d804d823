"""The risk LSTM's forward pass in numpy: the same answer, to the bit, wherever and however it is asked.

A matrix product through BLAS rounds a row differently with the number of rows beside it (and TensorFlow's
compiled graph, Keras' layers and a batch of the watchlist all differ in the last float32 bits), so the monitor's
batch of every ticker, ``mlflow.pyfunc``, ``/predict`` and ``/forecast`` would each answer a little differently
for the same window. Here every product is an ``einsum`` without BLAS, in float64: each output is summed in one
fixed order whatever the batch, so a window's forecast does not depend on who asks or with what else.

The network (:func:`stockops.model.portable.forecaster.build_network`): an LSTM over the window, a ``tanh``
dense layer over [its last state, the newest day], a linear log variance (a skip from the newest day plus the
dense layer's part) and a linear mean. Its weights travel as ``network.npz`` (numpy only: no TensorFlow to serve).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILE = "network.npz"
# Keras layer name -> the weights this forward pass reads from it
LAYERS = {"lstm": ("kernel", "recurrent_kernel", "bias"), "hidden": ("kernel", "bias"),
          "linear_skip": ("kernel", "bias"), "lstm_part": ("kernel",), "mean": ("kernel", "bias")}


def _dot(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` for (n, k) x (k, m), every output summed over k in the same order for any n (no BLAS)."""
    return np.einsum("nk,km->nm", x, w, optimize=False)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class NumpyNetwork:
    """Weights by ``<layer>/<name>`` (float64); ``__call__`` maps standardised windows (n, window, F) to (n, 2)."""

    def __init__(self, weights: dict[str, np.ndarray]):
        missing = [f"{layer}/{name}" for layer, names in LAYERS.items() for name in names
                   if f"{layer}/{name}" not in weights]
        if missing:
            raise ValueError(f"network weights lack {missing}")
        self.weights = {key: np.asarray(value, dtype=np.float64) for key, value in weights.items()}

    @classmethod
    def from_keras(cls, network) -> NumpyNetwork:
        weights = {}
        for layer, names in LAYERS.items():
            variables = {v.path.rsplit("/", 1)[-1]: v for v in network.get_layer(layer).weights}
            for name in names:
                weights[f"{layer}/{name}"] = np.asarray(variables[name].numpy())
        return cls(weights)

    @classmethod
    def load(cls, folder: str | Path) -> NumpyNetwork:
        with np.load(Path(folder) / FILE) as data:
            return cls({key: data[key] for key in data.files})

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / FILE
        np.savez(path, **self.weights)
        return path

    def __call__(self, x: np.ndarray) -> np.ndarray:
        w = self.weights
        x = np.asarray(x, dtype=np.float64)
        n, steps, _ = x.shape
        units = w["lstm/recurrent_kernel"].shape[0]
        h, c = np.zeros((n, units)), np.zeros((n, units))
        for t in range(steps):  # Keras' LSTMCell: gates i, f, c, o; sigmoid and tanh
            z = _dot(x[:, t], w["lstm/kernel"]) + _dot(h, w["lstm/recurrent_kernel"]) + w["lstm/bias"]
            i, f, g, o = (z[:, k * units:(k + 1) * units] for k in range(4))
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
        newest = x[:, -1]
        hidden = np.tanh(_dot(np.concatenate([h, newest], axis=1), w["hidden/kernel"]) + w["hidden/bias"])
        log_variance = (_dot(newest, w["linear_skip/kernel"]) + w["linear_skip/bias"]
                        + _dot(hidden, w["lstm_part/kernel"]))
        mean = _dot(hidden, w["mean/kernel"]) + w["mean/bias"]
        return np.concatenate([log_variance, mean], axis=1)
