"""Behaviour of a trained model: finite output, stable under tiny noise, scale-equivariant."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(goog):
    from stockops.features import build_dataset
    from stockops.model import ModelConfig, train

    closes = goog["Close"].to_numpy()[:900]
    config = ModelConfig(window=20, units=8, epochs=3, patience=2)
    dataset = build_dataset(closes, config.window)
    return closes, dataset, train(closes, dataset, config)


def test_output_is_finite_prices_near_the_last_close(trained):
    from stockops.features import raw_windows
    from stockops.model import predict_prices

    closes, dataset, model = trained
    windows = raw_windows(closes, 20, dataset.split.test)
    forecast = predict_prices(model.model, windows)
    assert forecast.shape == (len(windows),)
    assert np.isfinite(forecast).all()
    assert np.all(np.abs(forecast / windows[:, -1] - 1) < 0.2), "a next-day forecast far from today's close"


def test_tiny_noise_moves_the_forecast_only_a_little(trained):
    from stockops.features import raw_windows
    from stockops.model import predict_prices

    closes, dataset, model = trained
    windows = raw_windows(closes, 20, dataset.split.test)
    noisy = windows * (1 + np.random.default_rng(1).normal(0, 1e-4, windows.shape))
    change = np.abs(predict_prices(model.model, noisy) / predict_prices(model.model, windows) - 1)
    assert change.max() < 2e-3


def test_scaling_all_prices_by_two_scales_the_forecast_by_two(trained):
    from stockops.features import raw_windows
    from stockops.model import predict_prices

    closes, dataset, model = trained
    windows = raw_windows(closes, 20, dataset.split.test)
    np.testing.assert_allclose(predict_prices(model.model, 2 * windows), 2 * predict_prices(model.model, windows),
                               rtol=1e-5)


def test_training_is_seeded(trained, goog):
    from stockops.features import raw_windows
    from stockops.model import predict_prices, train

    closes, dataset, model = trained
    again = train(closes, dataset, model.config)
    windows = raw_windows(closes, 20, dataset.split.test[:20])
    np.testing.assert_allclose(predict_prices(again.model, windows), predict_prices(model.model, windows), rtol=1e-4)


def test_saved_model_reloads_with_its_preprocessing(trained, tmp_path):
    import keras

    from stockops.features import raw_windows
    from stockops.model import predict_prices

    closes, dataset, model = trained
    path = tmp_path / "m.keras"
    model.model.save(path)
    loaded = keras.models.load_model(path)
    windows = raw_windows(closes, 20, dataset.split.test[:10])
    np.testing.assert_allclose(predict_prices(loaded, windows), predict_prices(model.model, windows), rtol=1e-6)
