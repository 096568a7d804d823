"""The DORA report on a hand-built history whose every figure was worked out by hand (in the comments)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta

import pytest

from stockops.charts.dora import draw_chart
from stockops.core import audit
from stockops.data.store import SnapshotEntry
from stockops.reporting.dora import main, report
from stockops.reporting.dora.measures import compute, level
from stockops.reporting.dora.records import DAY, HOUR, WEEK, load_records
from stockops.reporting.dora.text import format_table

BASE = datetime(2026, 11, 20, tzinfo=UTC)  # the first record: snapshot A's publication
NOW = BASE + timedelta(days=10, hours=12)  # 2026-11-30 12:00 UTC: a 10.5-day period
HASH = {"a": "a" * 64, "b": "b" * 64, "c": "c" * 64}


def at(base: datetime, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0) -> str:
    return (base + timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)).isoformat(timespec="seconds")


def snapshot(base: datetime, name: str, days: float) -> dict:
    return {"hash": HASH[name], "ticker": "GOOG", "rows": 1000, "first_date": "2022-01-03", "last_date": "2026-11-19",
            "source": "replay", "logical_date": at(base, days)[:10], "path": f"/snap/{name}.parquet",
            "validation_path": f"/val/{name}.json", "published_at": at(base, days), "file_sha256": None}


def deploy(kind: str | None, version: str, started: str, ended: str, *, outcome: str = "succeeded",
           switched_after_s: float | None = None, snapshot_hash: str | None = None, dag_run_id: str = "",
           previous_version: str | None = None, error: str | None = None) -> dict:
    record = {"at": ended, "event": "deploy", "version": version, "bento_tag": f"goog_forecast:v{version}",
              "previous_version": previous_version, "previous_bento_tag": None, "reason": "test",
              "dag_run_id": dag_run_id, "started_at": started, "outcome": outcome, "seconds": 60.0}
    if kind is not None:
        record["kind"] = kind
    if snapshot_hash is not None:
        record["snapshot_hash"] = snapshot_hash
    if switched_after_s is not None:
        record["switched_after_s"] = switched_after_s
    if error is not None:
        record["error"] = error
    return record


def dag_run(dag_id: str, run_id: str, state: str, started: str, ended: str | None) -> dict:
    return {"at": ended or started, "event": "dag_run", "dag_id": dag_id, "run_id": run_id, "state": state,
            "run_type": "manual", "logical_date": started, "start_date": started, "end_date": ended, "reason": ""}


def scenario(base: datetime) -> dict[str, list[dict]]:
    """Three snapshots, four promotion attempts (v2 fails its health check, v3 is rolled back to v1), two serve
    deploys that must be ignored, and the DAG runs behind them; every time is an offset from ``base``."""
    snapshots = [snapshot(base, "a", 0), snapshot(base, "b", 2), snapshot(base, "c", 5)]
    deploys = [
        deploy("promotion", "1", at(base, minutes=10), at(base, minutes=11), switched_after_s=50,
               snapshot_hash=HASH["a"], dag_run_id="train_1"),
        deploy("serve", "1", at(base, 1, 8), at(base, 1, 8, 1), switched_after_s=40, previous_version="1"),
        deploy("promotion", "2", at(base, 2, minutes=20), at(base, 2, minutes=23), outcome="failed",
               snapshot_hash=HASH["b"], dag_run_id="train_2", previous_version="1",
               error="goog_forecast:v2 /readyz did not answer within 180 s"),
        deploy("promotion", "3", at(base, 2, 6), at(base, 2, 6, 1), switched_after_s=30, snapshot_hash=HASH["b"],
               dag_run_id="train_3", previous_version="1"),
        deploy("rollback", "1", at(base, 3, 10, 0, 20), at(base, 3, 10, 1, 30), switched_after_s=40,
               dag_run_id="rollback_1", previous_version="3"),
        deploy("promotion", "4", at(base, 5, minutes=30), at(base, 5, minutes=32), switched_after_s=60,
               snapshot_hash=HASH["c"], dag_run_id="train_4", previous_version="1"),
        deploy("serve", "4", at(base, 6, 9), at(base, 6, 9, 1), switched_after_s=40, previous_version="4"),
    ]
    audit = [
        {"at": at(base, minutes=9), "event": "gate", "version": "1", "decision": "promoted", "reason": "beats"},
        {"at": at(base, minutes=12), "event": "promotion", "model": "GOOG_lstm", "from_version": None,
         "to_version": "1", "decision": "promoted", "reason": "gate passed", "dag_run_id": "train_1",
         "run_id": "r1", "snapshot_hash": HASH["a"]},
        {"at": at(base, 2, minutes=19), "event": "gate", "version": "2", "decision": "promoted", "reason": "beats"},
        {"at": at(base, 2, 5, 59), "event": "gate", "version": "3", "decision": "promoted", "reason": "beats"},
        {"at": at(base, 2, 6, 2), "event": "promotion", "model": "GOOG_lstm", "from_version": "1",
         "to_version": "3", "decision": "promoted", "reason": "gate passed", "dag_run_id": "train_3",
         "run_id": "r3", "snapshot_hash": HASH["b"]},
        {"at": at(base, 3, 10, 2), "event": "rollback", "model": "GOOG_lstm", "from_version": "3", "to_version": "1",
         "reason": "v3 forecasts drift off", "dag_run_id": "rollback_1", "forced": False,
         "requested_at": at(base, 3, 10), "bento_tag": "goog_forecast:v1"},
        {"at": at(base, 5, minutes=33), "event": "promotion", "model": "GOOG_lstm", "from_version": "1",
         "to_version": "4", "decision": "promoted", "reason": "gate passed", "dag_run_id": "train_4",
         "run_id": "r4", "snapshot_hash": HASH["c"]},
        {"at": at(base, 7), "event": "gate", "version": "5", "decision": "refused", "reason": "loses to persistence"},
    ]
    dag_runs = [
        dag_run("stock_ingest", "ingest_1", "running", at(base), None),
        dag_run("stock_ingest", "ingest_1", "success", at(base), at(base, minutes=2)),
        dag_run("stock_train", "train_1", "running", at(base, minutes=1), None),
        dag_run("stock_train", "train_1", "success", at(base, minutes=1), at(base, minutes=13)),
        dag_run("stock_train", "train_2", "failed", at(base, 2), at(base, 2, minutes=24)),
        dag_run("stock_train", "train_3", "success", at(base, 2, 5), at(base, 2, 6, 3)),
        dag_run("stock_rollback", "rollback_1", "success", at(base, 3, 10), at(base, 3, 10, 3)),
        dag_run("stock_train", "train_4", "success", at(base, 5), at(base, 5, minutes=34)),
        dag_run("stock_ingest", "ingest_2", "running", at(base, 10), None),
    ]
    return {"deploys": deploys, "audit": audit, "snapshots": snapshots, "dag_runs": dag_runs}


@pytest.fixture
def result():
    return compute(**scenario(BASE), now=NOW)


def test_period_starts_at_the_first_record(result):
    # 30 days back would be 2026-10-31; the first record (snapshot A) is 2026-11-20 00:00 -> 10.5 days
    assert result["period"] == {"start": "2026-11-20T00:00:00+00:00", "end": "2026-11-30T12:00:00+00:00",
                                "days": 10.5}


def test_deployment_frequency(result):
    freq = result["deployment_frequency"]
    # succeeded promotions v1, v3, v4 and the rollback to v1; serve deploys and the failed v2 do not count
    assert (freq["count"], freq["promotions"], freq["rollbacks"], freq["failed_attempts"]) == (4, 3, 1, 1)
    assert freq["per_day"] == pytest.approx(4 / 10.5, abs=1e-4)  # 0.381 / day
    assert freq["per_week"] == pytest.approx(4 / 10.5 * 7, abs=1e-4)  # 2.667 / week
    assert freq["level"] == "high"  # at least monthly, less than daily
    assert [e["kind"] for e in freq["events"]] == ["promotion", "promotion", "promotion", "rollback", "promotion"]
    daily = {d["date"]: d for d in freq["daily"]}
    assert len(daily) == 11  # 20 to 30 November
    assert daily["2026-11-20"] == {"date": "2026-11-20", "promoted": 1, "rolled_back": 0, "failed": 0}
    assert daily["2026-11-22"] == {"date": "2026-11-22", "promoted": 1, "rolled_back": 0, "failed": 1}
    assert daily["2026-11-23"]["rolled_back"] == 1
    assert daily["2026-11-21"] == {"date": "2026-11-21", "promoted": 0, "rolled_back": 0, "failed": 0}  # serve only


def test_lead_time(result):
    lead = result["lead_time"]
    # v1: answered 00:10:50, snapshot A published 00:00:00 -> 650 s
    # v3: answered day 2 06:00:30, snapshot B published day 2 00:00 -> 6 h 30 s = 21630 s
    # v4: answered day 5 00:31:00, snapshot C published day 5 00:00 -> 1860 s
    assert [(e["version"], e["snapshot"], e["seconds"]) for e in lead["events"]] == [
        ("1", "a" * 12, 650.0), ("3", "b" * 12, 21630.0), ("4", "c" * 12, 1860.0)]
    assert lead["n"] == 3
    assert lead["median_s"] == 1860.0
    assert lead["mean_s"] == pytest.approx((650 + 21630 + 1860) / 3, abs=0.01)  # 8046.67
    assert lead["max_s"] == 21630.0
    assert lead["level"] == "elite"  # median 31 min < 1 h
    assert lead["unmatched"] == []


def test_change_failure_rate(result):
    cfr = result["change_failure_rate"]
    # four promotion attempts: v2 failed its health check, v3 was rolled back before v4 replaced it
    assert (cfr["changes"], cfr["failed"], cfr["rate"]) == (4, 2, 0.5)
    assert cfr["level"] == "low"  # > 30 %
    assert [(e["version"], e["status"]) for e in cfr["events"]] == [
        ("1", "ok"), ("2", "health_check_failed"), ("3", "rolled_back"), ("4", "ok")]
    why = {f["version"]: f["reason"] for f in cfr["failures"]}
    assert "/readyz did not answer" in why["2"]
    assert why["3"].startswith("rolled back to v1 at 2026-11-23T10:02:00+00:00: v3 forecasts drift off")


def test_time_to_restore(result):
    ttr = result["time_to_restore"]
    # requested day 3 10:00:00; the rollback deploy started 10:00:20 and answered 40 s later -> 60 s
    assert (ttr["n"], ttr["median_s"], ttr["mean_s"], ttr["max_s"]) == (1, 60.0, 60.0, 60.0)
    assert ttr["level"] == "elite"
    (event,) = ttr["events"]
    assert event["restored"] and event["start_from"] == "requested_at"
    assert (event["from_version"], event["to_version"], event["answered_at"]) == (
        "3", "1", "2026-11-23T10:01:00+00:00")
    # the failed v2 deploy took nothing down: listed, but not an incident
    assert ttr["no_outage"] == [{"at": "2026-11-22T00:23:00+00:00", "version": "2", "kept_serving": "1",
                                 "error": "goog_forecast:v2 /readyz did not answer within 180 s"}]
    assert ttr["not_restored"] == 0


def test_pipeline_runs(result):
    runs = result["pipeline_runs"]
    assert (runs["finished"], runs["succeeded"], runs["failed"]) == (6, 5, 1)
    assert runs["dags"]["stock_train"] == {"finished": 4, "succeeded": 3, "failed": 1, "running": 0,
                                           # 12, 24, 63 and 34 min -> median (24 + 34) / 2 = 29 min
                                           "median_duration_s": 1740.0}
    assert runs["dags"]["stock_ingest"] == {"finished": 1, "succeeded": 1, "failed": 0, "running": 1,
                                            "median_duration_s": 120.0}
    assert runs["dags"]["stock_rollback"]["succeeded"] == 1


def test_serve_deploys_change_nothing(result):
    records = scenario(BASE)
    records["deploys"] = [d for d in records["deploys"] if d.get("kind") != "serve"]
    assert compute(**records, now=NOW) == result


def test_attempt_starts_and_requests_found_done_change_nothing_but_a_killed_attempt_counts(result):
    """``deploy_started`` lines and ``unchanged`` outcomes are not deploys; an attempt whose process was killed
    (completed by reconcile as failed, ``interrupted``) is a failed change like any other."""
    records = scenario(BASE)
    started = [{**d, "event": "deploy_started"} for d in records["deploys"]]
    unchanged = {**deploy("rollback", "1", at(BASE, 3, 10), at(BASE, 3, 10), outcome="unchanged")}
    assert compute(**{**records, "deploys": [*started, *records["deploys"], unchanged]}, now=NOW) == result
    killed = {**deploy("promotion", "5", at(BASE, 9), at(BASE, 9, minutes=1), outcome="failed",
                       error="the deploying process (pid 4242) died before it finished"), "interrupted": True}
    counted = compute(**{**records, "deploys": [*records["deploys"], killed]}, now=NOW)
    assert counted["change_failure_rate"]["changes"] == result["change_failure_rate"]["changes"] + 1
    assert counted["change_failure_rate"]["failed"] == result["change_failure_rate"]["failed"] + 1
    assert counted["deployment_frequency"]["failed_attempts"] == result["deployment_frequency"]["failed_attempts"] + 1


def test_the_result_is_json(result):
    assert json.loads(json.dumps(result)) == result


def test_table_reads_in_human_units(result):
    table = format_table(result)
    print(table)
    rows = {line.split("  ")[0]: line for line in table.splitlines()}
    assert "0.38 / day (2.67 / week)" in rows["Deployment frequency"] and "high" in rows["Deployment frequency"]
    assert "31 min median (max 6.0 h)" in rows["Lead time for changes"]
    assert "50 % (2 of 4)" in rows["Change failure rate"] and "low" in rows["Change failure rate"]
    assert "60 s median (max 60 s)" in rows["Time to restore"] and "elite" in rows["Time to restore"]
    assert "No outage" in table and "v2 (2026-11-22T00:23:00+00:00): v1 kept serving" in table
    assert "stock_train: 4 finished, 3 succeeded, 1 failed" in table


def test_chart_draws(result, tmp_path):
    path = draw_chart(result, tmp_path / "charts" / "dora.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_no_records_at_all(tmp_path):
    empty = compute([], [], [], [], now=NOW)
    assert empty["period"]["days"] == 30  # no first record to start from
    freq = empty["deployment_frequency"]
    assert (freq["count"], freq["per_day"], freq["level"]) == (0, 0.0, None)
    for measure in ("lead_time", "time_to_restore"):
        assert {k: empty[measure][k] for k in ("n", "median_s", "mean_s", "max_s", "level")} == {
            "n": 0, "median_s": None, "mean_s": None, "max_s": None, "level": None}
    assert (empty["change_failure_rate"]["rate"], empty["change_failure_rate"]["level"]) == (None, None)
    assert empty["pipeline_runs"] == {"finished": 0, "succeeded": 0, "failed": 0, "dags": {}}
    table = format_table(empty)
    assert "Change failure rate" in table and "—" in table and "none recorded" in table
    assert draw_chart(empty, tmp_path / "empty.png").stat().st_size > 0


def test_old_deploy_records_without_kind_or_snapshot_hash():
    base = BASE
    records = {
        "snapshots": [snapshot(base, "a", 0)],
        "deploys": [
            # no kind, no snapshot hash, no switch time: a promotion; its hash comes from the audit entry,
            # and the answer moment is the record's own "at" (00:20) -> 1200 s after snapshot A
            deploy(None, "1", at(base, minutes=18), at(base, minutes=20), dag_run_id="train_1"),
            # no kind and nothing to find its snapshot by: counted, but its lead time is unknown
            deploy(None, "2", at(base, 1), at(base, 1, minutes=2), switched_after_s=30, dag_run_id="train_2"),
            # a hash the manifest does not know
            deploy("promotion", "3", at(base, 2), at(base, 2, minutes=2), switched_after_s=30,
                   snapshot_hash="d" * 64, dag_run_id="train_3"),
        ],
        "audit": [{"at": at(base, minutes=21), "event": "promotion", "from_version": None, "to_version": "1",
                   "dag_run_id": "train_1", "snapshot_hash": HASH["a"]}],
        "dag_runs": [],
    }
    result = compute(**records, now=NOW)
    assert result["deployment_frequency"]["promotions"] == 3
    assert result["change_failure_rate"]["changes"] == 3 and result["change_failure_rate"]["rate"] == 0.0
    lead = result["lead_time"]
    assert [(e["version"], e["seconds"], e["hash_from"]) for e in lead["events"]] == [
        ("1", 1200.0, "promotion audit entry")]
    assert [(u["version"], u["reason"]) for u in lead["unmatched"]] == [
        ("2", "no snapshot hash in the deploy record nor in a promotion audit entry"),
        ("3", "snapshot dddddddddddd is not in the manifest")]
    assert "Lead time unknown" in format_table(result)


@pytest.mark.parametrize(("first", "days", "expected"), [
    (timedelta(days=45), 30, 30.0),  # older than the window: the window
    (timedelta(days=5), 30, 5.0),  # started five days ago: five days
    (timedelta(hours=2), 30, 1.0),  # started two hours ago: at least a day
    (timedelta(days=5), 3, 3.0),  # a shorter window asked for
])
def test_period_length(first, days, expected):
    records = [dag_run("stock_ingest", "one", "running", at(NOW - first), None)]
    assert compute([], [], [], records, now=NOW, days=days)["period"]["days"] == expected


def test_records_after_now_are_left_out():
    records = scenario(BASE)
    records["deploys"].append(deploy("promotion", "9", at(NOW, 1), at(NOW, 1, minutes=1), switched_after_s=30,
                                     snapshot_hash=HASH["c"]))
    assert compute(**records, now=NOW) == compute(**scenario(BASE), now=NOW)


def test_a_rollback_without_its_deploy_is_reported_not_restored():
    records = scenario(BASE)
    records["audit"].append({"at": at(BASE, 8), "event": "rollback", "from_version": "4", "to_version": "3",
                             "reason": "bad", "dag_run_id": "rollback_2", "forced": False,
                             "requested_at": at(BASE, 8, minutes=-1)})
    result = compute(**records, now=NOW)
    ttr = result["time_to_restore"]
    assert (ttr["rollbacks"], ttr["not_restored"], ttr["n"], ttr["median_s"]) == (2, 1, 1, 60.0)
    missing = ttr["events"][1]
    assert not missing["restored"] and missing["seconds"] is None
    assert missing["note"] == "no successful rollback deploy of v3 found: not restored"
    # and v4 now counts as a failed change too: 3 of 4
    assert result["change_failure_rate"]["rate"] == 0.75
    assert "v4 → v3 (2026-11-28T00:00:00+00:00): no successful rollback deploy of v3 found" in format_table(result)


def test_rollback_start_falls_back_to_the_dag_run_then_to_a_lower_bound():
    records = scenario(BASE)
    entry = next(e for e in records["audit"] if e["event"] == "rollback")
    del entry["requested_at"]  # the DAG-run log says rollback_1 started day 3 10:00:00: the same 60 s
    (event,) = compute(**records, now=NOW)["time_to_restore"]["events"]
    assert (event["start_from"], event["seconds"]) == ("dag run start", 60.0)

    entry["dag_run_id"] = ""  # no run to look up: matched by version, timed from the deploy's own start
    records["dag_runs"] = []
    (event,) = compute(**records, now=NOW)["time_to_restore"]["events"]
    assert (event["start_from"], event["seconds"], event["restored"]) == ("rollback entry", 40.0, True)
    assert event["note"] == "request time unknown: a lower bound"


def test_rollback_matched_by_version_after_the_request():
    records = scenario(BASE)
    next(d for d in records["deploys"] if d.get("kind") == "rollback")["dag_run_id"] = "other"
    (event,) = compute(**records, now=NOW)["time_to_restore"]["events"]
    assert (event["restored"], event["seconds"]) == (True, 60.0)


def test_levels_follow_the_bands():
    assert [level("deployment_frequency", v) for v in (3, 1, 1 / 7, 1 / 30, 1 / 100, 1 / 200)] == [
        "elite", "elite", "high", "high", "medium", "low"]
    assert [level("lead_time", v) for v in (HOUR - 1, HOUR, WEEK - 1, WEEK, 200 * DAY)] == [
        "elite", "high", "high", "medium", "low"]
    assert [level("time_to_restore", v) for v in (59, HOUR, DAY, WEEK)] == ["elite", "high", "medium", "low"]
    assert [level("change_failure_rate", v) for v in (0, 0.15, 0.16, 0.30, 0.31)] == [
        "elite", "elite", "high", "high", "low"]
    assert level("lead_time", None) is None


def write_manifest(store, records):
    """Records of a ticker's snapshot manifest, as the store keeps them (a log of the records' database)."""
    for record in records:
        store.state.append(store.manifest_log, record, key=record["hash"])


def write_jsonl(path, records):
    """The platform's log at ``path`` holding ``records`` (a log of the home's records' database)."""
    audit.append_many(path, list(records))


def test_main_end_to_end(settings, capsys):
    from stockops.data import store_for

    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=11)  # its last record is a day old
    records = scenario(base)
    write_jsonl(settings.deploy_log, records["deploys"])
    write_jsonl(settings.audit_log, records["audit"])
    write_jsonl(settings.dag_run_log, records["dag_runs"])
    assert [f.name for f in fields(SnapshotEntry)] == list(records["snapshots"][0])  # the manifest's own shape
    write_manifest(store_for(settings), records["snapshots"])

    assert main(["--days", "30"]) == 0
    out = capsys.readouterr().out
    assert "50 % (2 of 4)" in out
    saved = json.loads((settings.reports_dir / "dora.json").read_text())
    assert saved["deployment_frequency"]["count"] == 4
    assert saved["lead_time"]["median_s"] == 1860.0
    assert saved["time_to_restore"]["median_s"] == 60.0
    assert saved["period"]["start"] == base.isoformat()
    chart = settings.reports_dir / "dora.png"
    assert chart.read_bytes()[:4] == b"\x89PNG"
    assert f"JSON:  {settings.reports_dir / 'dora.json'}" in out and f"chart: {chart}" in out


def test_main_with_no_records_and_chosen_paths(settings, tmp_path, capsys):
    assert main(["--json", str(tmp_path / "out" / "r.json"), "--chart", str(tmp_path / "out" / "r.png")]) == 0
    assert json.loads((tmp_path / "out" / "r.json").read_text())["change_failure_rate"]["rate"] is None
    assert (tmp_path / "out" / "r.png").stat().st_size > 0
    assert "DORA report" in capsys.readouterr().out


def test_serving_incidents_are_counted_by_their_last_record():
    def incident(status, detected, **fields):
        return {"at": fields.pop("at", detected), "event": "incident", "component": "bento", "status": status,
                "cause": "the bento (pid 7) is gone", "detected_at": detected, "started_at": detected, **fields}

    healed = at(BASE, 1)
    log = [incident("open", healed), incident("recovered", healed, at=at(BASE, 1, seconds=4), downtime_s=4.5,
                                              detection_s=1.0, recovered_at=at(BASE, 1, seconds=4),
                                              action="failed over to the spare"),
           incident("open", at(BASE, 2)), incident("unrecovered", at(BASE, 2), at=at(BASE, 2, minutes=1)),
           incident("open", at(BASE, 20))]  # after now: left out
    result = compute([], [], [], [], now=NOW, incidents_log=log)["incidents"]
    assert (result["recovered"], result["open"], result["median_s"]) == (1, 1, 4.5)
    assert [e["status"] for e in result["events"]] == ["recovered", "unrecovered"]
    assert "1 outage healed, 1 open" in format_table(compute([], [], [], [], now=NOW, incidents_log=log))


# ---- a watchlist model: one global model trained on the latest snapshot of every ticker ----------------------
def manifest_entry(ticker: str, digest: str, published: str) -> dict:
    """A line of ``ticker``'s snapshot manifest, in the store's own shape."""
    return asdict(SnapshotEntry(hash=digest, ticker=ticker, rows=1000, first_date="2022-01-03",
                                last_date=published[:10], source="replay", logical_date=published[:10],
                                path=f"/home/data/{ticker}/snapshots/{digest}.parquet", validation_path="",
                                published_at=published))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def lineage(snapshots: dict[str, str]) -> str:
    """A training run's combined hash over its tickers' snapshots, as ``stockops.training.load_snapshots`` makes it."""
    return sha("".join(f"{ticker}:{digest}\n" for ticker, digest in sorted(snapshots.items())))


TRAINED_ON = {"AAPL": sha("AAPL day 1"), "GOOG": sha("GOOG day 1"), "MSFT": sha("MSFT day 1")}
COMBINED = lineage(TRAINED_ON)


def watchlist_records(base: datetime) -> dict[str, list[dict]]:
    """v7 trained on the day-1 snapshots of AAPL (published 08:00), GOOG (09:30: the last input) and MSFT (09:00).

    Each ticker also has an older snapshot, and MSFT publishes a newer one at 10:00, while v7 trains: the model
    never saw it, so it must not count. v7's deploy starts 10:10:00 and answers 45 s later.
    """
    snapshots = [*(manifest_entry(t, sha(f"{t} day 0"), at(base)) for t in TRAINED_ON),
                 manifest_entry("AAPL", TRAINED_ON["AAPL"], at(base, 1, 8)),
                 manifest_entry("MSFT", TRAINED_ON["MSFT"], at(base, 1, 9)),
                 manifest_entry("GOOG", TRAINED_ON["GOOG"], at(base, 1, 9, 30)),
                 manifest_entry("MSFT", sha("MSFT day 1, later"), at(base, 1, 10))]
    gate = {"at": at(base, 1, 10, 5), "event": "gate", "ticker": "GOOG", "model": "stock_risk", "version": "7",
            "decision": "promoted", "reason": "beats harx_gko", "run_id": "r7", "snapshot_hash": COMBINED,
            "request_reason": "", "snapshots": dict(TRAINED_ON)}
    promotion = {"at": at(base, 1, 10, 11), "event": "promotion", "ticker": "GOOG", "model": "stock_risk",
                 "from_version": "6", "to_version": "7", "reason": "gate passed", "dag_run_id": "train_7",
                 "decision": "promoted", "run_id": "r7", "snapshot_hash": COMBINED}
    deploys = [deploy("promotion", "7", at(base, 1, 10, 10), at(base, 1, 10, 11), switched_after_s=45,
                      snapshot_hash=COMBINED, dag_run_id="train_7", previous_version="6")]
    return {"deploys": deploys, "audit": [gate, promotion], "snapshots": snapshots, "dag_runs": []}


@pytest.mark.parametrize("hash_in_deploy", [True, False])
def test_lead_time_of_a_watchlist_model_starts_at_its_last_input(hash_in_deploy):
    records = watchlist_records(BASE)
    if not hash_in_deploy:  # an older deploy record: the combined hash comes from the promotion audit entry
        del records["deploys"][0]["snapshot_hash"]
    lead = compute(**records, now=NOW)["lead_time"]
    # answered day 1 10:10:45; the newest snapshot v7 was trained on is GOOG's, day 1 09:30 -> 40 min 45 s
    assert lead["events"] == [{"version": "7", "snapshot": COMBINED[:12], "hash_from": "gate entry (3 tickers)",
                               "last_input": "GOOG", "published_at": at(BASE, 1, 9, 30),
                               "answered_at": at(BASE, 1, 10, 10, 45), "seconds": 2445.0}]
    assert (lead["n"], lead["median_s"], lead["level"], lead["unmatched"]) == (1, 2445.0, "elite", [])


def test_a_watchlist_snapshot_missing_from_its_own_manifest_is_unmatched():
    records = watchlist_records(BASE)
    gate = records["audit"][0]
    # the gate entry says AAPL was trained on GOOG's snapshot: in a manifest, but not in AAPL's
    gate["snapshots"]["AAPL"] = TRAINED_ON["GOOG"]
    # an earlier run on the same data (v6, refused), recorded later: v7's own entry (same run_id) is the one used
    records["audit"].insert(1, {**gate, "at": at(BASE, 1, 10, 6), "version": "6", "run_id": "r6",
                                "decision": "refused", "snapshots": dict(TRAINED_ON)})
    result = compute(**records, now=NOW)
    lead = result["lead_time"]
    assert lead["events"] == [] and lead["n"] == 0
    assert lead["unmatched"] == [{
        "version": "7", "at": at(BASE, 1, 10, 11),
        "reason": f"snapshot {COMBINED[:12]} combines 3 tickers (gate entry of v7): "
                  f"AAPL's snapshot {TRAINED_ON['GOOG'][:12]} is not in AAPL's manifest"}]
    assert f"v7 ({at(BASE, 1, 10, 11)}): snapshot {COMBINED[:12]} combines 3 tickers" in format_table(result)


def test_a_watchlist_gate_entry_without_its_snapshots_says_so():
    records = watchlist_records(BASE)
    del records["audit"][0]["snapshots"]  # written before gate entries listed them
    (unmatched,) = compute(**records, now=NOW)["lead_time"]["unmatched"]
    assert unmatched["reason"] == (
        f"snapshot {COMBINED[:12]} is in no ticker's manifest, and the gate entry of v7 with that hash does not "
        "list its tickers' snapshots (gate entries written before they did)")


def test_single_ticker_and_watchlist_promotions_side_by_side():
    records = watchlist_records(BASE + timedelta(days=6))  # v7 answers on day 7, after the others
    old = scenario(BASE)  # v1, v3 and v4 of a GOOG-only model (their hash is GOOG's snapshot): as before
    for name in ("deploys", "audit", "snapshots"):
        records[name] = old[name] + records[name]
    lead = compute(**records, now=NOW)["lead_time"]
    assert [(e["version"], e["hash_from"], e["last_input"], e["seconds"]) for e in lead["events"]] == [
        ("1", "deploy record", "GOOG", 650.0), ("3", "deploy record", "GOOG", 21630.0),
        ("4", "deploy record", "GOOG", 1860.0), ("7", "gate entry (3 tickers)", "GOOG", 2445.0)]
    assert lead["unmatched"] == []


def test_report_reads_the_manifest_of_every_ticker_the_model_was_trained_on(settings, monkeypatch):
    from stockops.core.settings import get_settings
    from stockops.data import store_for

    # the watchlist is now AAPL and GOOG: MSFT was dropped after v7 trained on it, but its manifest is still here
    monkeypatch.setenv("STOCKOPS_TICKERS", "AAPL,GOOG")
    settings = get_settings()
    records = watchlist_records(BASE)
    for ticker in TRAINED_ON:
        write_manifest(store_for(settings, ticker), [s for s in records["snapshots"] if s["ticker"] == ticker])
    write_manifest(store_for(settings, "IBM"), [manifest_entry("IBM", sha("IBM"), at(BASE, 1, 9, 59))])
    write_jsonl(settings.audit_log, records["audit"])
    write_jsonl(settings.deploy_log, records["deploys"])

    loaded = load_records(settings)
    # AAPL and GOOG as the watchlist, MSFT as named by the gate entry; IBM is neither
    assert sorted({s["ticker"] for s in loaded["snapshots"]}) == ["AAPL", "GOOG", "MSFT"]
    lead = report(settings, now=NOW)["lead_time"]
    assert [(e["version"], e["last_input"], e["seconds"]) for e in lead["events"]] == [("7", "GOOG", 2445.0)]
