"""Drift at universe size: Evidently's statistic computed with numpy for every ticker, one compact report.

30 made tickers (block bootstraps of the shipped series), 8 of them pushed out of their reference; Evidently
draws 3 of them. One Evidently run for the module.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from stockops.core.settings import get_settings
from stockops.model.drift_features import FEATURES, monitor_features
from stockops.monitoring.decision import decide
from stockops.monitoring.drift import (
    assess_watchlist_drift,
    evidently_distances,
    feature_distances,
    normed_wasserstein,
)
from tests.universe import synthetic_universe

SHOWN = 3
PUSHED = 8  # tickers whose current returns and volatility are scaled ×3: they drift


@pytest.fixture(scope="module")
def universe():
    frames = synthetic_universe(30, seed=27)
    references, currents = {}, {}
    for i, (ticker, frame) in enumerate(frames.items()):
        features = monitor_features(frame)
        references[ticker] = features.iloc[-900 - 60 * (i % 4):-160].reset_index(drop=True)  # lengths differ
        current = features.iloc[-60:].reset_index(drop=True)
        if i < PUSHED:
            current = current.assign(**{c: current[c] * 3 for c in ("log_return", "abs_return", "volatility_20d")})
        currents[ticker] = current
    return references, currents


@pytest.fixture(scope="module")
def checked(universe):
    settings = get_settings()
    return assess_watchlist_drift(*universe, settings.monitor_drift_threshold, settings.monitor_drift_share,
                                  settings.monitor_drift_tickers_share, report_tickers=SHOWN)


def test_the_vectorised_distance_is_scipys_and_evidentlys_formula():
    rng = np.random.default_rng(3)
    reference = np.column_stack([rng.normal(size=700), rng.integers(0, 5, 700), np.full(700, 2.0)])
    current = np.column_stack([rng.normal(0.5, 2, size=60), rng.integers(0, 7, 60), np.full(60, 2.5)])  # ties
    expected = [stats.wasserstein_distance(reference[:, i], current[:, i]) / max(np.std(reference[:, i]), 0.001)
                for i in range(3)]
    np.testing.assert_allclose(normed_wasserstein(reference, current), expected, rtol=1e-12)


def test_numpy_distances_equal_evidentlys_on_the_tickers_it_draws(universe, checked):
    references, currents = universe
    summary, report = checked
    theirs = evidently_distances(report.snapshot)
    assert {c.split(":")[0] for c in theirs} == set(summary["report_tickers"])
    assert len(theirs) == SHOWN * len(FEATURES)
    for column, value in theirs.items():
        ticker, feature = column.split(":")
        ours = feature_distances(references[ticker], currents[ticker])[feature]
        assert ours == pytest.approx(value, rel=1e-9, abs=1e-12), column


def test_every_ticker_is_checked_and_the_report_puts_the_drifted_first(universe, checked, tmp_path):
    settings = get_settings()
    summary, report = checked
    tickers = sorted(universe[0])
    assert summary["tickers_checked"] == tickers and set(summary["per_ticker"]) == set(tickers)
    pushed = set(tickers[:PUSHED])
    assert set(summary["drifted_tickers"]) >= pushed, "the pushed tickers drift"
    assert summary["drift_share"] == len(summary["drifted_tickers"]) / len(tickers)
    one = summary["per_ticker"][tickers[0]]
    assert set(one) >= {"drift_share", "drifted", "drifted_columns", "distances", "reference_rows", "current_rows"}
    assert one["drifted"] is True and one["reference_rows"] == len(universe[0][tickers[0]])
    assert {"log_return", "abs_return", "volatility_20d"} <= set(one["drifted_columns"])
    ranking = summary["ranking"]
    flags = [summary["per_ticker"][t]["drifted"] for t in ranking]
    assert flags == sorted(flags, reverse=True), "drifted tickers first"
    assert summary["report_tickers"] == ranking[:SHOWN]

    report.save_html(str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    assert f"{len(summary['drifted_tickers'])} of 30 tickers drifted" in page
    rows = [page.index(f"<b>{t}</b>") for t in ranking]
    assert rows == sorted(rows), "the table lists every ticker, nearest drift first"
    shown, hidden = ranking[0], ranking[-1]
    assert f"{shown}:volatility_20d" in page and f"{hidden}:volatility_20d" not in page, "plots of the first only"
    assert len(page) < 3.7e6 + SHOWN * 0.4e6

    decision = decide(summary, None, settings)
    assert f"{len(summary['drifted_tickers'])} of 30 tickers drifted" in decision["reason"]


def test_the_reason_names_the_most_drifted_tickers_and_counts_the_rest():
    from stockops.monitoring.decision import NAMED_TICKERS

    settings = get_settings()
    n = NAMED_TICKERS + 5
    per_ticker = {f"T{i:02d}": {"drift_share": 1.0 if i < 3 else 0.6, "drifted": True,
                                "drifted_columns": list(FEATURES) if i < 3 else ["log_return"],
                                "distances": dict.fromkeys(FEATURES, 1.0)} for i in range(n)}
    ranking = sorted(per_ticker, reverse=True)  # any order the check gave
    summary = {"drift_share": 1.0, "drifted_tickers": sorted(per_ticker), "ranking": ranking,
               "drifted_columns": [], "per_ticker": per_ticker}
    reason = decide(summary, None, settings)["reason"]
    assert f"{n} of {n} tickers drifted" in reason and "and 5 more (the drift report lists every ticker)" in reason
    named = ranking[:NAMED_TICKERS]
    assert all(f"{t} (" in reason for t in named) and not any(f"{t} (" in reason for t in ranking[NAMED_TICKERS:])
