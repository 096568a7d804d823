"""The step contracts: every one survives JSON, a malformed one is refused by field, and the Airflow adapter."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from dataclasses import replace

import pytest

from stockops import contracts
from stockops.contracts import (
    Baseline,
    Bento,
    Built,
    ChampionCompared,
    Contract,
    ContractError,
    Deployed,
    DeployRecord,
    Evaluated,
    Features,
    Fetched,
    ForecastRecord,
    GateDecision,
    HeldMove,
    Holdout,
    IngestChunk,
    IngestRequest,
    IngestStatus,
    MonitorDecision,
    MonitorRecord,
    Promoted,
    Published,
    Quarantined,
    Registered,
    Rejected,
    RollbackBuilt,
    RollbackDeployed,
    RollbackPlan,
    RollbackProposal,
    RollbackVerified,
    Scored,
    ServingHealth,
    ShadowScored,
    SnapshotEntry,
    Snapshots,
    SnapshotSummary,
    TickerStatus,
    Trained,
    Validated,
    Verified,
    WatchlistOutcome,
)
from stockops.core.settings import Settings, make_settings
from stockops.orchestration.xcom import xcom_step

ENTRY = SnapshotEntry(hash="a" * 64, ticker="GOOG", rows=250, first_date="2025-01-02", last_date="2025-12-31",
                      source="replay", logical_date="2025-12-31", path="/data/GOOG/a.parquet",
                      validation_path="/data/GOOG/validations/x.json", published_at="2026-01-01T00:00:00+00:00")
SNAPSHOTS = Snapshots(summary=SnapshotSummary(hash="b" * 64, tickers=["GOOG"], rows=250, first_date="2025-01-02",
                                              last_date="2025-12-31", logical_date="2025-12-31", path="/data",
                                              validation_path="/docs/index.html"),
                      entries={"GOOG": ENTRY})
FEATURES = Features(snapshots=SNAPSHOTS, path="/t/panel.parquet", window=20, sizes={"train": 100, "val": 20, "test": 20},
                    val_start="2025-09-01", test_start="2025-11-01")
TRAINED = Trained(features=FEATURES, run_id="r1", model_uri="runs:/r1/model", model_path="/t/candidate-r1",
                  history_path="/t/candidate-r1/history.json", train_seconds=12.5, config={"window": 20, "units": 8},
                  reason="a test")
EVALUATED = Evaluated(trained=TRAINED, scores={"candidate": {"qlike": 1.2, "dm_qlike_vs_champion": None}},
                      champion=ChampionCompared(version="1", run_id="r0", trained_through="2025-06-30"),
                      holdout=Holdout(days=20, pairs=20, first="2025-11-03", last="2025-12-31"))
REGISTERED = Registered(evaluated=EVALUATED, model_name="stockops-GOOG", version="2")
DECISION = GateDecision(promote=True, forced=False, reason="promoted: every check passed")
HARX_BASELINE = Baseline(version="3", run_id="r3", model_kind="harx_gko", reason="no champion yet")
BENTO = Bento(bento_tag="goog_forecast:v2-r1", bento_model="stockops-goog:v2-r1", bento_path="/b", model_name="stockops-GOOG",
              version="2", mlflow_run_id="r1", snapshot_hash="b" * 64, window=20, history=45)
BUILT = Built(registered=REGISTERED, decision=DECISION, bento=BENTO)
RECORD = DeployRecord(at="2026-01-01T00:00:00+00:00", kind="promotion", outcome="succeeded", version="2",
                      bento_tag=BENTO.bento_tag, previous_version="1", seconds=21.0, audit_at="2026-01-01T00:00:01+00:00")
PLAN = RollbackPlan(model_name="stockops-GOOG", from_version="2", version="1", reason="worse live", forced=False,
                    gate_decision="promoted", repair=False, requested_at="2026-01-02T00:00:00+00:00", run_id="r0")
SEEN = {"champion": "1", "served": "1", "audit": "1", "routed": True, "ready": True}
FETCHED = Fetched(ticker="GOOG", logical_date="2025-12-31", source="replay", reference_date="2025-12-31", rows=250,
                  raw_path="/data/GOOG/raw/2025-12-31.csv")
MOVE = HeldMove(day="2025-12-31", previous_close=100.0, open=101.0, high=140.0, low=100.5, close=135.3,
                volume=9e7, move_pct=35.3, gap_pct=1.0, range_share=0.95, volume_ratio=None)
PASSED = Validated(fetched=FETCHED, hash="a" * 64, validation_path="/data/GOOG/validations/x.json",
                   data_docs_path="/docs/index.html", scope="2 rows after the published snapshot", held_for_review=False)
HELD = Validated(fetched=FETCHED, hash="a" * 64, validation_path="/data/GOOG/validations/x.json",
                 data_docs_path="/docs/index.html", scope="", held_for_review=True, held=[MOVE])
PUBLISHED = Published(validated=PASSED, entry=ENTRY, new=True, latest=True)

MONITORED = MonitorRecord(
    checked_at="2026-01-02T00:00:00+00:00", ticker="GOOG", dag_run_id="r1", dry_run=False, drift_share=0.2,
    drifted_columns=[], live_rmse_ratio=0.9, persistence_ratio=1.0, triggered=False, reason="nothing crossed: calm",
    crossed=[], debounced_by=[], scorecard=None, rollback={"propose": False, "reason": "not worse"},
    champion_version="2", champion_run_id="run2", live_error_source="own", traffic_requests=0, snapshot_hash="h",
    current_window=["2025-10-01", "2025-12-31"], reference_window=None, reference_rows=0, drift=None,
    live_error={"days": 60}, thresholds={"monitor_current_days": 60}, decision_path="/m/decision.json")
FORECAST = ForecastRecord(ticker="GOOG", as_of="2025-12-31", forecast_for="2026-01-02", model_version="2",
                          snapshot_hash="h", last_close=100.0, point=0.0, forecast=100.0, quantiles={"q05": -0.03},
                          variance=0.0004, made_at="2026-01-01T22:00:00+00:00")

EVERY = [
    ENTRY, SNAPSHOTS.summary, SNAPSHOTS, EVALUATED.champion, EVALUATED.holdout, ShadowScored(model_version="1", recorded=["GOOG"]),
    RollbackProposal(propose=False, reason="not worse"), FEATURES, TRAINED, EVALUATED, REGISTERED, DECISION, BENTO, BUILT, RECORD,
    Built(registered=REGISTERED, decision=None, bento=BENTO),
    # a refused candidate with the classical baseline serving in its place
    HARX_BASELINE, Built(registered=REGISTERED, decision=GateDecision(
        promote=False, forced=False, reason="refused: worse than HARX-GKO on QLIKE", baseline=HARX_BASELINE),
        bento=Bento(**{**BENTO.to_xcom(), "version": "3", "window": 1, "history": 24, "model_kind": "harx_gko"})),
    Deployed(built=BUILT, deploy=RECORD),
    Verified(model_name="stockops-GOOG", version="2", previous="1", **SEEN),
    Promoted(model_name="stockops-GOOG", version="2", previous=None),
    ServingHealth(served="2", http=200), ServingHealth(served=None),
    Scored(model_version="2", recorded=["GOOG"], already_recorded=[], skipped={"JPM": "no published snapshot yet"},
           previous=ShadowScored(model_version="1", error="OSError: gone")),
    MonitorDecision(checked_at="2026-01-02T00:00:00+00:00", triggered=True, reason="retrain: drift", crossed=["drift"],
                    rollback=RollbackProposal(propose=True, reason="worse", from_version="2", to_version="1"),
                    champion_version="2", drift_share=0.6, live_rmse_ratio=None, report="/m/drift_report.html"),
    MONITORED, FORECAST, replace(FORECAST, role="shadow", dag_run_id="r1"),
    PLAN, RollbackBuilt(plan=PLAN, bento=BENTO), RollbackDeployed(built=RollbackBuilt(plan=PLAN, bento=BENTO), deploy=RECORD),
    RollbackVerified(version="1", from_version="2", repair=False, deploy_at=RECORD.at, **SEEN),
    # ingest
    FETCHED, IngestRequest(ticker="GOOG", logical_date="2025-12-31"),
    IngestRequest(ticker="GOOG", logical_date="2025-12-31", landed=FETCHED), MOVE, PASSED, HELD, PUBLISHED,
    IngestChunk(logical_date="2025-12-31", label="GOOG..KO (2)", requests=[
        IngestRequest(ticker="GOOG", logical_date="2025-12-31", landed=FETCHED),
        IngestRequest(ticker="KO", logical_date="2025-12-31")]),
    Rejected(validated=HELD, folder="/data/GOOG/quarantine/2025-12-31__aaaa", reason="an operator rejected 2025-12-31"),
    Quarantined(ticker="JPM", logical_date="2025-12-31", reason="2 of 30 expectations failed"),
    WatchlistOutcome(logical_date="2025-12-31"),
    WatchlistOutcome(logical_date="2025-12-31", published=[PUBLISHED], held_for_review=[HELD],
                     quarantined=[Quarantined(ticker="JPM", logical_date="2025-12-31", reason="bad")]),
    TickerStatus(ticker="GOOG", logical_date="2025-12-31", status=IngestStatus.PUBLISHED, detail="250 rows",
                 at="2026-01-01T00:00:00+00:00", hash="a" * 64),
    TickerStatus(ticker="KO", logical_date="", status=IngestStatus.NEVER_INGESTED),
]


def test_every_contract_class_is_exercised():
    declared = {c for c in vars(contracts).values()
                if isinstance(c, type) and issubclass(c, Contract) and c is not Contract}
    assert declared == {type(c) for c in EVERY}


@pytest.mark.parametrize("value", EVERY, ids=lambda v: type(v).__name__)
def test_every_contract_round_trips_through_json(value):
    data = json.loads(json.dumps(value.to_xcom()))
    assert type(value).from_xcom(data) == value


def test_a_later_contract_holds_the_earlier_one():
    data = REGISTERED.to_xcom()
    assert data["evaluated"]["trained"]["features"]["snapshots"]["entries"]["GOOG"]["hash"] == "a" * 64
    assert REGISTERED.snapshot == SNAPSHOTS.summary and REGISTERED.run_id == "r1"


def test_a_malformed_dict_names_the_field():
    data = TRAINED.to_xcom()
    del data["run_id"]
    with pytest.raises(ContractError, match=r"Trained\.run_id: missing"):
        Trained.from_xcom(data)

    data = TRAINED.to_xcom()
    data["features"]["window"] = "20"
    with pytest.raises(ContractError, match=r"Trained\.features\.window: expected int, got str"):
        Trained.from_xcom(data)

    data = FEATURES.to_xcom()
    data["snapshots"]["entries"]["GOOG"]["rows"] = True
    with pytest.raises(ContractError, match=r"Features\.snapshots\.entries\['GOOG'\]\.rows: expected int, got bool"):
        Features.from_xcom(data)

    with pytest.raises(ContractError, match=r"unknown field\(s\) 'promoted' for GateDecision"):
        GateDecision.from_xcom({**DECISION.to_xcom(), "promoted": True})
    with pytest.raises(ContractError, match=r"GateDecision: expected a GateDecision \(a dict\), got str"):
        GateDecision.from_xcom("promoted")  # type: ignore[arg-type]



def test_every_problem_is_named_by_its_path_in_one_error():
    data = WatchlistOutcome(logical_date="2025-12-31", held_for_review=[HELD]).to_xcom()
    del data["held_for_review"][0]["scope"]
    data["held_for_review"][0]["held"][0]["open"] = "101"
    with pytest.raises(ContractError) as caught:
        WatchlistOutcome.from_xcom(data)
    assert "WatchlistOutcome.held_for_review[0].scope: missing (a Validated needs it" in str(caught.value)
    assert "WatchlistOutcome.held_for_review[0].held[0].open: expected float, got str '101'" in str(caught.value)
    data = WatchlistOutcome(logical_date="2025-12-31", held_for_review=[HELD]).to_xcom()
    data["held_for_review"][0]["held_for_review"] = False  # a __post_init__ check, where it failed
    with pytest.raises(ContractError, match=r"WatchlistOutcome\.held_for_review\[0\]: Validated\.held_for_review: False"):
        WatchlistOutcome.from_xcom(data)
    # JSON's forms only: a tuple is a list once serialised, a number no float's text
    assert ShadowScored(model_version="1", recorded=("GOOG",)).to_xcom()["recorded"] == ["GOOG"]  # type: ignore[arg-type]
    with pytest.raises(ContractError, match=r"HeldMove\.volume_ratio: expected float, got str '2\.5'"):
        HeldMove.from_xcom({**MOVE.to_xcom(), "volume_ratio": "2.5"})


def test_importing_the_contracts_imports_neither_pydantic_nor_airflow():
    """Every DAG file imports them: pydantic is imported on a contract's first parse, Airflow never."""
    code = ("import sys, stockops.contracts, stockops.orchestration.xcom; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'pydantic_core', 'airflow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_gate_labels_and_monitor_decisions_from_records():
    assert [GateDecision(p, f, "").label for p, f in ((True, False), (True, True), (False, False))] == [
        "promoted", "forced", "refused"]
    record = replace(MONITORED, live_rmse_ratio=math.nan, rollback={
        "propose": False, "clearly_worse": False, "reason": "not worse", "comparison": None})
    decision = record.decision()
    assert decision.triggered is False and decision.rollback == RollbackProposal(propose=False, reason="not worse")
    assert math.isnan(decision.live_rmse_ratio)
    assert (decision.champion_version, decision.report, decision.decision_path) == ("2", None, "/m/decision.json")
    deploy_log_line = {**RECORD.to_xcom(), "event": "deploy", "ticker": "GOOG", "url": "http://x", "version": 2,
                       "previous_version": 1}
    assert DeployRecord.from_record(deploy_log_line) == RECORD


def test_records_leave_out_what_they_lack_and_keep_what_is_null():
    """``decision.json`` and the log lines keep the keys they always had: a check without a champion has none of
    a check's fields, a check without a report folder no paths; a null that was written stays written."""
    idle = replace(MONITORED, champion_version=None, champion_run_id=None, live_error_source=None,
                   traffic_requests=None, snapshot_hash=None, current_window=None, reference_rows=None,
                   live_error=None, thresholds=None, decision_path=None, mlflow_run_id="m1")
    assert list(idle.to_record()) == ["checked_at", "ticker", "dag_run_id", "dry_run", "drift_share",
                                      "drifted_columns", "live_rmse_ratio", "persistence_ratio", "triggered",
                                      "reason", "crossed", "debounced_by", "scorecard", "rollback", "mlflow_run_id"]
    written = MONITORED.to_record()
    assert written["reference_window"] is None and written["drift"] is None and written["report"] is None
    assert "scorecard_path" not in written and "mlflow_run_id" not in written
    assert written["rollback"] is MONITORED.rollback, "written as built: no JSON conversion on the way"
    assert "role" not in FORECAST.to_record() and "dag_run_id" not in FORECAST.to_record()
    assert replace(FORECAST, role="shadow", dag_run_id="").to_record() == {
        **FORECAST.to_record(), "role": "shadow", "dag_run_id": ""}


def _step(features: Features, epochs: int | None = None, force: bool = False, note: str = "") -> Trained:
    """A stand-in step: typed in, typed out."""
    assert isinstance(features, Features)
    return Trained(features=features, run_id=f"e{epochs}-{force}", model_uri="", model_path="", history_path="",
                   train_seconds=0.0, config={}, reason=note)


def test_xcom_step_parses_contract_arguments_and_returns_json():
    wrapped = xcom_step(_step)
    out = wrapped(FEATURES.to_xcom(), epochs="3", force="false", note="n")
    assert isinstance(out, dict) and out["run_id"] == "e3-False" and out["features"] == FEATURES.to_xcom()
    assert wrapped(FEATURES, force=True)["run_id"] == "eNone-True"  # a contract passes through as it is
    with pytest.raises(ContractError, match=r"_step\(force\): expected true or false, got 'maybe'"):
        wrapped(FEATURES.to_xcom(), force="maybe")
    with pytest.raises(ContractError, match=r"Features\.window: missing"):
        wrapped({k: v for k, v in FEATURES.to_xcom().items() if k != "window"})


def test_xcom_step_keeps_the_signature_airflow_inspects_and_no_multiple_outputs():
    from airflow.sdk import task

    wrapped = xcom_step(_step)
    assert wrapped.__name__ == "_step"
    assert list(inspect.signature(wrapped).parameters) == ["features", "epochs", "force", "note"]
    assert wrapped.__annotations__ == {}
    decorated = task(wrapped)
    assert decorated.multiple_outputs is False
    assert task(_step).multiple_outputs is False  # (a dataclass is no Mapping either)


def _settings_step(features: Features, *, settings: Settings, note: str = "") -> dict:
    return {"home": str(settings.home), "tickers": list(settings.tickers), "note": note}


def test_xcom_step_hands_a_step_its_settings_read_when_the_task_runs(monkeypatch, tmp_path):
    from airflow.sdk import task

    wrapped = xcom_step(_settings_step)
    assert list(inspect.signature(wrapped).parameters) == ["features", "note"]  # Airflow never sees settings
    task(wrapped)  # and binds the DAG's arguments without it
    monkeypatch.setenv("STOCKOPS_HOME", str(tmp_path / "h1"))
    monkeypatch.setenv("STOCKOPS_TICKERS", "KO,PG")
    assert wrapped(FEATURES.to_xcom()) == {"home": str(tmp_path / "h1"), "tickers": ["KO", "PG"], "note": ""}
    monkeypatch.setenv("STOCKOPS_HOME", str(tmp_path / "h2"))  # read per task run, not once at import
    assert wrapped(FEATURES.to_xcom(), note="x")["home"] == str(tmp_path / "h2")
    given = make_settings(home=tmp_path / "given", tickers="GOOG")
    assert wrapped(FEATURES.to_xcom(), settings=given)["home"] == str(tmp_path / "given")  # a caller's own wins


# ---- ingest ---------------------------------------------------------------------------------------------
def test_ingest_contracts_nest_and_name_their_outcomes():
    data = PUBLISHED.to_xcom()
    assert data["validated"]["fetched"]["raw_path"] == FETCHED.raw_path and data["entry"]["hash"] == "a" * 64
    assert (PUBLISHED.ticker, PUBLISHED.logical_date, HELD.held_days) == ("GOOG", "2025-12-31", ["2025-12-31"])
    assert HELD.to_xcom()["held"][0]["volume_ratio"] is None
    ko = Validated(**{**vars(HELD), "fetched": Fetched(**{**vars(FETCHED), "ticker": "KO"})})
    outcome = WatchlistOutcome(logical_date="2025-12-31", published=[PUBLISHED], held_for_review=[ko],
                               quarantined=[Quarantined(ticker="JPM", logical_date="2025-12-31", reason="bad")])
    assert outcome.statuses == {"GOOG": IngestStatus.PUBLISHED, "KO": IngestStatus.HELD,
                                "JPM": IngestStatus.QUARANTINED}
    assert WatchlistOutcome.from_xcom(json.loads(json.dumps(outcome.to_xcom()))) == outcome
    status = TickerStatus(ticker="GOOG", logical_date="2025-12-31", status=IngestStatus.HELD, days=["2025-12-31"])
    assert status.to_xcom()["status"] == "held" and type(status.to_xcom()["status"]) is str  # plain JSON
    assert TickerStatus.from_xcom(json.loads(json.dumps(status.to_xcom()))).status is IngestStatus.HELD


def test_held_for_review_is_a_value_and_says_what_the_held_moves_say():
    with pytest.raises(ContractError, match=r"Validated\.held_for_review: True with 0 held move"):
        Validated(**{**vars(PASSED), "held_for_review": True})
    with pytest.raises(ContractError, match=r"held_for_review: False with 1 held move"):
        Validated.from_xcom({**HELD.to_xcom(), "held_for_review": False})
    with pytest.raises(ContractError, match=r"Validated\.held_for_review: expected bool, got str 'true'"):
        Validated.from_xcom({**HELD.to_xcom(), "held_for_review": "true"})
    old_style = {**FETCHED.to_xcom(), "hash": "a" * 64, "status": "held", "held": []}  # the dicts before contracts
    with pytest.raises(ContractError, match=r"unknown field\(s\) .*'status'.* for Validated"):
        Validated.from_xcom(old_style)


def test_an_outcome_label_is_parsed_once_and_an_unknown_one_refused():
    with pytest.raises(ContractError, match=r"TickerStatus\.status: expected one of 'published', 'held', .*got str 'ok'"):
        TickerStatus.from_xcom({"ticker": "GOOG", "logical_date": "", "status": "ok"})
    with pytest.raises(ContractError, match=r"TickerStatus\.ticker: missing"):
        TickerStatus.from_xcom({"logical_date": "", "status": "held"})


def _plan(logical_date: str, tickers: str = "") -> list[IngestRequest]:
    return [IngestRequest(ticker=t, logical_date=logical_date) for t in tickers.split(",")]


def _publish(validated: Validated) -> Published | Rejected:
    assert isinstance(validated, Validated)
    return PUBLISHED if not validated.held_for_review else Rejected(validated=validated, folder="/q", reason="no")


def test_xcom_step_carries_ingest_contracts_as_json():
    planned = xcom_step(_plan)(logical_date="2025-12-31", tickers="GOOG,KO")
    assert planned == [{"ticker": "GOOG", "logical_date": "2025-12-31", "landed": None},
                       {"ticker": "KO", "logical_date": "2025-12-31", "landed": None}]
    assert [IngestRequest.from_xcom(r) for r in json.loads(json.dumps(planned))] == _plan("2025-12-31", "GOOG,KO")
    publish = xcom_step(_publish)
    assert publish(json.loads(json.dumps(PASSED.to_xcom()))) == PUBLISHED.to_xcom()
    assert publish(HELD.to_xcom())["reason"] == "no"
