"""The portable core's two parity rules: one market alignment, and trailing means whose bits do not depend on
where a series starts (so training's whole-history panel and a served tail give the same model input)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockops.data.sources import shipped_series
from stockops.model.portable.forecaster import WARMUP, feature_matrix
from stockops.model.portable.risk_inputs import align_market, trailing_mean


def _days(*iso: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(iso)))


def test_the_market_is_aligned_by_its_last_known_close_and_its_first_before_it_starts():
    market = pd.DataFrame({"Date": pd.to_datetime(["2024-01-03", "2024-01-04", "2024-01-08", "2024-01-08"]),
                           "Close": [10.0, 11.0, 12.0, 13.0]})
    days = _days("2024-01-02", "2024-01-03", "2024-01-05", "2024-01-08", "2024-01-09")
    # before the first close: that close; a day the market lacks (01-05): 01-04's; 01-08 twice: the last one
    assert align_market(days, market).tolist() == [10.0, 10.0, 11.0, 13.0, 13.0]
    series = market.drop_duplicates("Date", keep="last").set_index("Date")["Close"]
    assert align_market(days, series).tolist() == align_market(days, market).tolist()
    assert align_market(days, None) is None
    assert align_market(days, market.iloc[:0]) is None


def test_a_market_day_the_ticker_lacks_still_moves_the_next_close():
    """The ticker skips 01-04 (a halt): its 01-05 close pairs with the market's 01-05 close, not 01-03's."""
    market = pd.DataFrame({"Date": pd.to_datetime(["2024-01-03", "2024-01-04", "2024-01-05"]),
                           "Close": [10.0, 11.0, 12.0]})
    assert align_market(_days("2024-01-03", "2024-01-05"), market).tolist() == [10.0, 12.0]


def test_trailing_means_match_pandas_and_do_not_depend_on_where_the_series_starts():
    values = np.random.default_rng(0).lognormal(size=500)
    values[[3, 40]] = np.nan
    for days, periods in ((22, 22), (22, 1), (5, 5)):
        ours = trailing_mean(values, days, periods)
        pandas = pd.Series(values).rolling(days, min_periods=periods).mean().to_numpy()
        np.testing.assert_allclose(ours, pandas, rtol=1e-12, equal_nan=True)
        assert np.array_equal(trailing_mean(values[-100:], days, periods)[-60:], ours[-60:], equal_nan=True)


@pytest.mark.parametrize("ticker", ["GOOG", "BAC", "GE", "QQQ"])
def test_a_tail_has_the_same_features_to_the_bit_as_the_whole_history(ticker):
    frame, market = shipped_series(ticker), shipped_series("QQQ")
    full = feature_matrix(frame, align_market(frame["Date"], market))
    for window in (20, 60):
        tail = frame.iloc[-(window + WARMUP):].reset_index(drop=True)
        served = feature_matrix(tail, align_market(tail["Date"], market))
        assert np.array_equal(served[-window:], full[-window:])


def test_the_numpy_forward_pass_is_the_keras_network_with_the_same_bits_in_any_batch(tmp_path):
    """The LSTM as served: Keras' answer (to float32's resolution), and for each window the same bits alone, in
    any batch, and after a save and load (what the pyfunc, the monitor and the bento each do)."""
    from stockops.model.portable.forecaster import build_network
    from stockops.model.portable.network import NumpyNetwork

    network = build_network(12, 6, 5, log_variance_bias=0.3)
    rng = np.random.default_rng(0)
    for weight in network.weights:  # trained-like weights: every gate and layer matters
        weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))
    x = rng.normal(size=(37, 12, 8))
    ours = NumpyNetwork.from_keras(network)
    np.testing.assert_allclose(ours(x), np.asarray(network(x.astype("float32"), training=False)), rtol=1e-5, atol=1e-5)
    batch = ours(x)
    assert np.array_equal(np.concatenate([ours(x[i:i + 1]) for i in range(len(x))]), batch)
    assert np.array_equal(ours(x[5:20]), batch[5:20])
    ours.save(tmp_path)
    assert np.array_equal(NumpyNetwork.load(tmp_path)(x), batch)
