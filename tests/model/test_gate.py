"""The promotion gate's decision table: (a) HARX-GKO floor, (b) coverage, (c) persistence, (d) champion."""

from __future__ import annotations

import pytest

from stockops.model.gate import GatePolicy, decide

POLICY = GatePolicy(rmse_tolerance=0.001, coverage_90=(0.88, 0.92), dm_t=2.0, champion_max_age_days=7, margin=0.01)
HARX = {"qlike": 1.50}


def candidate(**overrides) -> dict:
    return {"qlike": 1.46, "coverage_90": 0.90, "rmse_ratio": 0.999, "dm_qlike_vs_champion": 0.0,
            "dm_pinball_vs_champion": 0.0, **overrides}


def test_first_model_that_passes_a_to_c_is_promoted():
    d = decide(candidate(), HARX, None, POLICY)
    assert d.promote and d.label == "promoted" and "no champion" in d.reason and "gain +0.0400" in d.reason


@pytest.mark.parametrize(("overrides", "why"), [
    ({"qlike": 1.5001}, "worse than HARX-GKO"),
    ({"coverage_90": 0.875}, "miscalibrated"),
    ({"coverage_90": 0.925}, "miscalibrated"),
    ({"rmse_ratio": 1.0011}, "worse than persistence"),
])
def test_each_of_a_to_c_refuses_on_its_own(overrides, why):
    d = decide(candidate(**overrides), HARX, None, POLICY)
    assert not d.promote and d.label == "refused" and why in d.reason


def test_edges_are_inclusive():
    assert decide(candidate(qlike=1.50, coverage_90=0.88, rmse_ratio=1.001), HARX, None, POLICY).promote


def test_a_fresh_champion_is_replaced_only_by_a_significant_win():
    champion = {"qlike": 1.47}
    assert not decide(candidate(dm_qlike_vs_champion=1.9), HARX, champion, POLICY, champion_age_days=1).promote
    assert decide(candidate(dm_qlike_vs_champion=2.0), HARX, champion, POLICY, champion_age_days=1).promote
    assert decide(candidate(dm_pinball_vs_champion=2.5), HARX, champion, POLICY, champion_age_days=1).promote
    refused = decide(candidate(), HARX, champion, POLICY, champion_age_days=None)
    assert not refused.promote and "does not beat the champion significantly" in refused.reason


def test_a_stale_champion_is_refreshed_by_a_non_inferior_candidate():
    champion = {"qlike": 1.455}  # the candidate is 0.005 worse: within the 0.01 margin
    assert decide(candidate(), HARX, champion, POLICY, champion_age_days=8).promote
    assert not decide(candidate(), HARX, champion, POLICY, champion_age_days=7).promote  # not older than 7 days
    worse = decide(candidate(qlike=1.4701), HARX, {"qlike": 1.46}, POLICY, champion_age_days=30)
    assert not worse.promote and "stale champion by more than the margin" in worse.reason


def test_force_promotes_with_a_reason_and_keeps_the_verdict():
    d = decide(candidate(coverage_90=0.80), HARX, None, POLICY, force=True, force_reason="incident 42")
    assert d.promote and d.forced and d.label == "forced"
    assert "incident 42" in d.reason and "would be refused (90 % interval miscalibrated)" in d.reason
    with pytest.raises(ValueError, match="needs a reason"):
        decide(candidate(), HARX, None, POLICY, force=True, force_reason="  ")


def test_policy_from_settings(monkeypatch):
    from stockops.core.settings import get_settings

    monkeypatch.setenv("STOCKOPS_GATE_COVERAGE_90_MIN", "0.85")
    monkeypatch.setenv("STOCKOPS_GATE_CHAMPION_MAX_AGE_DAYS", "3")
    policy = GatePolicy.from_settings(get_settings())
    assert policy.coverage_90 == (0.85, 0.92) and policy.champion_max_age_days == 3 and policy.margin == 0.03


def test_an_undefined_dm_statistic_is_no_win():
    champion = {"qlike": 1.46}
    d = decide(candidate(dm_qlike_vs_champion=None, dm_pinball_vs_champion=None), HARX, champion, POLICY,
               champion_age_days=0)
    assert not d.promote and "does not beat the champion significantly" in d.reason
