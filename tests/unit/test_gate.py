"""The promotion gate's decision table."""

from __future__ import annotations

import pytest

from stockops.gate import decide

KW = {"tolerance": 0.0, "margin": 0.01}


def test_worse_than_persistence_is_refused():
    d = decide(10.5, 10.0, None, **KW)
    assert not d.promote and d.label == "refused" and "persistence" in d.reason


def test_worse_than_champion_is_refused_even_if_it_beats_persistence():
    d = decide(9.0, 10.0, 8.9, **KW)
    assert not d.promote and "champion" in d.reason


def test_not_better_than_champion_by_the_margin_is_refused():
    assert not decide(8.85, 10.0, 8.9, **KW).promote  # 0.56 % better, margin is 1 %


def test_better_than_both_is_promoted():
    d = decide(8.7, 10.0, 8.9, **KW)
    assert d.promote and not d.forced and d.label == "promoted"


def test_first_model_that_beats_persistence_is_promoted():
    assert decide(9.99, 10.0, None, **KW).promote


def test_tolerance_admits_a_near_tie_with_persistence():
    assert not decide(10.04, 10.0, None, tolerance=0.0, margin=0.0).promote
    assert decide(10.04, 10.0, None, tolerance=0.005, margin=0.0).promote


def test_forced_promotion_records_the_reason_and_the_merits():
    d = decide(12.0, 10.0, 8.0, **KW, force=True, force_reason="hotfix for ticket 42")
    assert d.promote and d.forced and d.label == "forced"
    assert "hotfix for ticket 42" in d.reason and "would be refused" in d.reason


def test_forcing_without_a_reason_is_an_error():
    with pytest.raises(ValueError, match="reason"):
        decide(12.0, 10.0, None, **KW, force=True, force_reason="  ")
