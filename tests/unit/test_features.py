"""Features: shapes, no look-ahead, a split in time order, scalers fitted on training data only."""

from __future__ import annotations

import numpy as np
import pytest

from stockops.features import build_dataset, chronological_split, next_log_returns, raw_windows, relative_log_windows


@pytest.fixture(scope="module")
def closes(goog):
    return goog["Close"].to_numpy()[:800]


def test_window_shapes(closes):
    ends = np.arange(59, 100)
    x = relative_log_windows(closes, 60, ends)
    assert x.shape == (len(ends), 60)
    assert np.allclose(x[:, -1], 0.0), "the newest close is the reference"
    assert raw_windows(closes, 60, ends).shape == (len(ends), 60)
    assert next_log_returns(closes, ends).shape == (len(ends),)
    with pytest.raises(ValueError):
        relative_log_windows(closes, 60, np.array([10]))


def test_feature_at_day_t_uses_only_data_up_to_t(closes):
    t = 400
    ends = np.arange(59, t + 1)
    before = relative_log_windows(closes, 60, ends)
    future_changed = closes.copy()
    future_changed[t + 1:] *= np.random.default_rng(0).uniform(0.5, 2.0, len(closes) - t - 1)
    after = relative_log_windows(future_changed, 60, ends)
    np.testing.assert_array_equal(before, after)
    # ...and the target of day t is exactly the move to day t+1, nothing later.
    assert next_log_returns(closes, np.array([t]))[0] == pytest.approx(np.log(closes[t + 1] / closes[t]))


def test_split_is_chronological_and_disjoint(closes):
    split = chronological_split(len(closes), 60)
    assert split.train[-1] < split.val[0] and split.val[-1] < split.test[0]
    assert split.test[-1] == len(closes) - 2, "the last window's target is the last close"
    assert split.train[0] == 59


def test_holdout_days_do_not_depend_on_the_window(closes):
    np.testing.assert_array_equal(chronological_split(len(closes), 5).test, chronological_split(len(closes), 60).test)


def test_scalers_are_fitted_on_training_data_only(closes):
    base = build_dataset(closes, 60)
    changed = closes.copy()
    changed[base.split.val[0]:] *= np.linspace(1.0, 3.0, len(closes) - base.split.val[0])  # a wild future
    again = build_dataset(changed, 60)
    assert again.x_scaler == base.x_scaler and again.y_scaler == base.y_scaler
    assert not np.allclose(again.y_val, base.y_val), "the change did reach the validation part"
