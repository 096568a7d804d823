"""The committed GX project is the one the code describes (``python -m stockops gx-init`` rewrites it)."""

from __future__ import annotations

import json

from stockops.core.settings import REPO_ROOT
from stockops.data.gxproject import CHECKPOINT_NAME
from stockops.data.suite import PARAMETERS, SUITE_NAME, build_expectations

GX = REPO_ROOT / "great_expectations" / "gx"


def _normalise(kwargs: dict) -> dict:
    """GX stores numeric bounds as floats; compare numbers by value."""
    def num(v):
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v
    return {k: num(v) for k, v in kwargs.items() if v is not None}


def test_committed_suite_matches_build_expectations():
    committed = json.loads((GX / "expectations" / f"{SUITE_NAME}.json").read_text())
    have = sorted((e["type"], json.dumps(_normalise(e["kwargs"]), sort_keys=True), e.get("description"))
                  for e in committed["expectations"])
    want = sorted((e["type"], json.dumps(_normalise({k: v for k, v in e["kwargs"].items() if k != "description"}),
                                         sort_keys=True), e["kwargs"]["description"]) for e in build_expectations())
    severities = {(e["type"], e["kwargs"]["description"]): e["severity"] for e in build_expectations()}
    assert {(e["type"], e["description"]): e["severity"] for e in committed["expectations"]} == severities
    assert have == want, "run `.venv/bin/stockops gx-init` and commit the result"


def test_thresholds_are_suite_parameters_not_constants():
    committed = (GX / "expectations" / f"{SUITE_NAME}.json").read_text()
    for name in PARAMETERS:
        assert f'"$PARAMETER": "{name}"' in committed


def test_checkpoint_builds_data_docs_and_reports_dates():
    checkpoint = json.loads((GX / "checkpoints" / f"{CHECKPOINT_NAME}.json").read_text())
    assert [a["type"] for a in checkpoint["actions"]] == ["update_data_docs"]
    assert checkpoint["result_format"]["unexpected_index_column_names"] == ["Ticker", "Date"]  # a panel's rows
    config = (GX / "great_expectations.yml").read_text()
    assert "analytics_enabled: false" in config
    assert "validation_results_limit: 36" in config, "the Data Docs index must not load every result ever stored"


def test_only_the_operator_review_is_a_warning():
    """Every failure quarantines, except an unconfirmed extreme move: that one asks a person."""
    warnings = [e for e in build_expectations() if e["severity"] != "critical"]
    assert [(e["kwargs"]["column"], e["kwargs"]["value_set"], e["severity"]) for e in warnings] == [
        ("operator_review", ["awaiting_decision"], "warning")]
