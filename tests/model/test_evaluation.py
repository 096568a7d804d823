"""Holdout metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from stockops.model.evaluation import forecast_metrics


def test_metrics_match_hand_computed_values():
    m = forecast_metrics(actual=np.array([11.0, 9.0]), forecast=np.array([12.0, 9.5]), last=np.array([10.0, 10.0]))
    assert m["rmse"] == pytest.approx(np.sqrt((1 + 0.25) / 2))
    assert m["mae"] == pytest.approx(0.75)
    assert m["mape"] == pytest.approx((1 / 11 + 0.5 / 9) / 2 * 100)
    assert m["directional_accuracy"] == pytest.approx(1.0)  # forecast up & price up; forecast down & price down


def test_directional_accuracy_counts_only_real_moves():
    last = np.array([100.0, 100.0, 100.0])
    actual = np.array([101.0, 99.0, 101.0])
    assert forecast_metrics(actual, np.array([100.5, 99.5, 99.0]), last)["directional_accuracy"] == pytest.approx(2 / 3)
    # a no-change forecast with float32 rounding noise never scores
    noisy_flat = (last.astype(np.float32) * np.float32(1.0000001)).astype(np.float64)
    assert forecast_metrics(actual, noisy_flat, last)["directional_accuracy"] == 0.0
