"""Workers on other hosts, proven here: the daily cycle on four hosts that share nothing but the network.

:class:`~stockops.launch.hosts_platform.HostsPlatform` builds ``control`` (PostgreSQL, Redis, the S3 object store,
Airflow's api-server, scheduler, dag-processor and triggerer, the MLflow server), ``worker-a`` and ``worker-b``
(one Celery worker each, concurrency 1) and ``serving-a`` and ``serving-b`` (a serving agent each, behind the
front proxy on control) as network namespaces, each with its own hostname and empty folder. ``stock_ingest`` is
triggered through the REST API (from inside the control host); the scheduler and the two workers run ingest,
train (build, deploy through the agents, verify) and the monitor.

Checked: every run succeeds; task instances ran on both worker hosts; the front proxy answers ``/forecast`` for
every ticker; the deploy switched both serving hosts (each one's own address serves the champion, each has an
outcome for every deploy request, one change of champion is one audit entry) and the front routes to both; no
host's folder holds another host's files (nor names another host's folder).
Then the fault: worker-a's cable is pulled while it runs an ingest task; the scheduler fails the silent attempt
after the (shortened) heartbeat timeout and the retry runs on worker-b; the run completes, and each ticker's
snapshot manifest (records ``data/<T>/manifest`` in PostgreSQL) holds no record twice.

Skipped, with the reason, where network namespaces, PostgreSQL's server binaries or redis-server are missing.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from stockops.launch import netns
from stockops.model.gate import PERMISSIVE_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.services, pytest.mark.hosts]

TICKERS = ("GOOG", "KO", "QQQ")
SERVING = ("serving-a", "serving-b")
DAGS = ("stock_ingest", "stock_train", "stock_monitor")
HEARTBEAT_TIMEOUT_S = 20


def _why_not() -> str | None:
    why = netns.available()
    if why:
        return f"network namespaces unavailable: {why}"
    try:
        netns.postgres_bin()
    except FileNotFoundError as exc:
        return str(exc)
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    return None


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    why = _why_not()
    if why:
        pytest.skip(why)
    from stockops.launch.hosts_platform import HostsPlatform

    env = {"STOCKOPS_TICKERS": ",".join(TICKERS), "STOCKOPS_TRAIN_PROFILE": "small", "STOCKOPS_SOURCE": "replay",
           # triggered runs only (the schedule's own first run would add a second cycle)
           "STOCKOPS_INGEST_SCHEDULE": "manual", **PERMISSIVE_ENV}
    hosts = HostsPlatform(base_dir=tmp_path_factory.mktemp("hosts"), env=env, worker_concurrency=1,
                          heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, serving_hosts=SERVING)
    started = time.monotonic()
    try:
        hosts.start()
        hosts.wait_healthy(timeout=300)
        hosts.ensure_dags_ready(DAGS, timeout=240)
        print(f"\nhosts up in {time.monotonic() - started:.1f} s: {hosts.timings}")
        yield hosts
    finally:
        hosts.stop()
        assert not any(ns.startswith(hosts.network.prefix + "-") for ns in netns.namespaces()) \
            if hosts.network else True


def wait_idle(hosts, dag_ids, timeout: float = 900) -> dict[str, list[dict]]:
    """Every run of ``dag_ids`` once none is queued or running (and each DAG has at least one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = {d: hosts.runs(d) for d in dag_ids}
        if all(runs.values()) and not any(r["state"] in ("queued", "running") for rs in runs.values() for r in rs):
            return runs
        hosts.check_alive()
        time.sleep(3)
    raise TimeoutError(f"{dag_ids} still busy after {timeout:.0f} s: {runs}")


def failed_tasks(hosts, runs) -> dict[str, list]:
    return {f"{d}/{r['dag_run_id']}": [(t["task_id"], t.get("map_index"), t["state"], t.get("hostname"))
                                       for t in hosts.task_instances(d, r["dag_run_id"])
                                       if t["state"] not in ("success", "skipped")]
            for d, rs in runs.items() for r in rs if r["state"] != "success"}


def test_daily_cycle_runs_on_both_worker_hosts_and_the_serving_host_answers(platform):
    hosts = platform
    started = time.monotonic()
    ingest_id = hosts.trigger("stock_ingest", logical_date="2026-11-19T12:00:00Z")
    runs = wait_idle(hosts, DAGS, timeout=1500)
    print(f"\ncycle in {time.monotonic() - started:.1f} s")
    problems = []  # every check runs, so one run reports everything that fails
    assert ingest_id in {r["dag_run_id"] for r in runs["stock_ingest"]}
    if {r["state"] for rs in runs.values() for r in rs} != {"success"}:
        problems.append(f"runs not successful: {failed_tasks(hosts, runs)}")

    ran_on: dict[str, list[str]] = {}
    for dag_id, rs in runs.items():
        for r in rs:
            for ti in hosts.tries(dag_id, r["dag_run_id"]):
                if ti.get("hostname"):
                    ran_on.setdefault(ti["hostname"], []).append(f"{dag_id}.{ti['task_id']}[{ti.get('map_index')}]")
    print("task instances per host:", {h: len(v) for h, v in ran_on.items()})
    if not {"worker-a", "worker-b"} <= set(ran_on) or not set(ran_on) <= {"worker-a", "worker-b", "control"}:
        problems.append(f"task instances ran on {ran_on}")  # control: the triggerer's deferred ones

    for ticker in TICKERS:
        answer = hosts.http(f"{hosts.serve_url}/forecast", "POST", {"ticker": ticker}, timeout=30)
        if answer["status"] != 200 or not json.loads(answer["body"] or "null"):
            problems.append(f"/forecast {ticker} from control: {answer}")
    problems += serving_fleet_problems(hosts)
    # a worker's task log, read through the api-server on control: from the bucket (no worker log server runs)
    logs = hosts.api(f"dags/stock_ingest/dagRuns/{ingest_id}/taskInstances/watchlist/logs/1?full_content=true")
    if "DAG bundles loaded" not in json.dumps(logs):
        problems.append(f"the watchlist task's log is not readable through the api-server: {str(logs)[:1000]}")
    try:
        assert_no_foreign_files(hosts)
    except AssertionError as exc:
        problems.append(f"foreign files: {exc}")
    assert not problems, "\n".join(problems)


def records(hosts, log_name: str) -> list[dict]:
    """Every record of the log ``log_name`` in the records' database (PostgreSQL on control), oldest first."""
    import sqlalchemy as sa

    engine = sa.create_engine(hosts.records_url())
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT body FROM stockops_log WHERE log = :l ORDER BY id"), {"l": log_name})
            return [json.loads(r[0]) for r in rows]
    finally:
        engine.dispose()


def serving_fleet_problems(hosts) -> list[str]:
    """Two serving hosts behind the front proxy: both serve the champion, each carried out every deploy request
    (one moving @champion, the other following), and the front proxy routes to both."""
    problems = []
    front = json.loads(hosts.http(f"{hosts.serve_url}/-/stockops/upstream")["body"])
    champion = front.get("champion")
    print("front proxy:", {k: front.get(k) for k in ("champion", "routed", "hosts")})
    if not champion or sorted(front.get("routed") or []) != sorted(SERVING):
        problems.append(f"the front proxy routes v{front.get('version')} to {front.get('routed')}: {front}")
    for host in SERVING:
        own = json.loads(hosts.http(f"{hosts.host_serve_url(host)}/-/stockops/upstream")["body"])
        answer = hosts.http(f"{hosts.host_serve_url(host)}/forecast", "POST", {"ticker": "GOOG"}, timeout=30)
        answered = json.loads(answer["body"] or "null") if answer["status"] == 200 else {}
        if own.get("version") != champion or (answered or {}).get("model_version") != champion:
            problems.append(f"{host} serves v{own.get('version')} and answered {answer} (champion v{champion})")
    deploys = [r for r in records(hosts, "serving/deploys") if r.get("event") == "deploy" and r.get("request_id")]
    by_request: dict[str, dict[str, dict]] = {}
    for r in deploys:
        by_request.setdefault(r["request_id"], {})[r.get("host")] = r
    print("deploy outcomes:", {rid: {h: (r["kind"], r["outcome"]) for h, r in out.items()}
                               for rid, out in by_request.items()})
    if not by_request:
        problems.append("no deploy request was carried out")
    for rid, out in by_request.items():
        if set(out) != set(SERVING) or any(r["outcome"] not in ("succeeded", "unchanged") for r in out.values()):
            problems.append(f"request {rid}: outcomes {[(h, r['kind'], r['outcome']) for h, r in out.items()]}")
    changes = [e for e in records(hosts, "audit/audit") if e.get("to_version") is not None]
    moved = [str(e["to_version"]) for e in changes]
    if len(moved) != len(set(moved)) or (moved and moved[-1] != champion):
        problems.append(f"champion changes in the audit log: {[(e.get('event'), e.get('to_version')) for e in changes]}")
    return problems


def assert_no_foreign_files(hosts) -> None:
    """Each host's folder holds what its own processes wrote: the workers' and the serving host's nothing but
    their home and logs; no file of a host's home or logs (Airflow's task logs aside) names another host's folder. (Control's object store
    and PostgreSQL data hold what every host sent them over the network: not scanned.) Records in the shared
    database that name a host's folder are printed: a path there means nothing on another host."""
    names = {name: node.workdir for name, node in hosts.hosts.items()}
    for name in (*hosts.serving_hosts, *hosts.workers):
        assert set(p.name for p in names[name].iterdir()) <= {"home", "logs"}, name
    foreign = []
    for name, folder in names.items():
        others = [str(f) + "/" for n, f in names.items() if n != name]
        for path in [*(folder / "home").rglob("*"), *(folder / "logs").rglob("*")]:
            # Airflow's task logs are records of what happened, not state: one may echo an XCom value that names
            # the host an earlier task ran on (the build's bento path), which nothing reads
            if not path.is_file() or path.stat().st_size > 5_000_000 or "airflow/logs" in path.as_posix():
                continue
            text = path.read_text(errors="ignore")
            hits = [o for o in others if o in text]
            if hits:
                foreign.append((str(path.relative_to(folder.parent)), hits))
    assert not foreign, foreign
    import sqlalchemy as sa

    engine = sa.create_engine(hosts.records_url())
    try:
        with engine.connect() as conn:
            base = f"{hosts.network_dir}/%"
            logs = conn.execute(sa.text("SELECT log, count(*) FROM stockops_log WHERE body LIKE :b GROUP BY log"),
                                {"b": f"%{base}"}).all()
            pointers = conn.execute(sa.text("SELECT name FROM stockops_pointer WHERE body LIKE :b"),
                                    {"b": f"%{base}"}).all()
    finally:
        engine.dispose()
    print("records naming a host's folder:", [tuple(r) for r in logs], "pointers:", [r[0] for r in pointers])


def manifests(hosts) -> dict[str, list[str]]:
    import sqlalchemy as sa

    engine = sa.create_engine(hosts.records_url())
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT log, body FROM stockops_log WHERE log LIKE 'data/%/manifest' "
                                        "ORDER BY id")).all()
    finally:
        engine.dispose()
    out: dict[str, list[str]] = {}
    for log_name, body in rows:
        out.setdefault(log_name, []).append(body)
    return out


def test_pulled_cable_on_a_worker_mid_task_retries_on_the_other(platform):
    """The worker that runs the ingest's chunk (fetch, validate, publish every ticker) loses its cable while the
    task runs; the scheduler fails the silent attempt after the heartbeat timeout, the retry runs on the other
    worker, the run succeeds, and no snapshot record is there twice or missing."""
    hosts = platform
    before = manifests(hosts)
    run_id = hosts.trigger("stock_ingest", logical_date="2026-11-20T12:00:00Z")
    chunk, deadline = None, time.monotonic() + 300
    while chunk is None and time.monotonic() < deadline:  # the chunk's id, once the watchlist task mapped it
        chunk = next((t for t in hosts.task_instances("stock_ingest", run_id) if t["task_id"] == "chunk"), None)
        time.sleep(0.2)
    assert chunk is not None, "no chunk task instance"
    cut, deadline = None, time.monotonic() + 300
    while cut is None and time.monotonic() < deadline:
        for worker in hosts.workers:
            if chunk["id"] in hosts.running_tasks(worker):
                hosts.network.link_down(worker)
                cut = worker
                break
        else:
            time.sleep(0.05)
    assert cut is not None, "the chunk never ran"
    cut_at = time.monotonic()
    other = next(w for w in hosts.workers if w != cut)
    print(f"\ncut {cut}'s cable while it ran the chunk")
    state = hosts.wait_for_run("stock_ingest", run_id, timeout=900)
    print(f"ingest {state} {time.monotonic() - cut_at:.1f} s after the cut")
    tis = {(t["task_id"], t.get("map_index")): t for t in hosts.task_instances("stock_ingest", run_id)}
    assert state == "success", {k: (t["state"], t.get("hostname"), t["try_number"]) for k, t in tis.items()}
    tries = [t for t in hosts.tries("stock_ingest", run_id) if t["task_id"] == "chunk"]
    print("chunk tries:", [(t["try_number"], t["state"], t.get("hostname")) for t in tries])
    assert tis[("chunk", 0)]["hostname"] == other and tis[("chunk", 0)]["try_number"] >= 2, tis[("chunk", 0)]
    after = manifests(hosts)
    for log_name, bodies in after.items():
        entries = [json.loads(b) for b in bodies]
        hashes = [e.get("hash") for e in entries]
        assert len(hashes) == len(set(hashes)), f"{log_name}: a snapshot recorded twice: {entries}"
        assert bodies[:len(before.get(log_name, []))] == before.get(log_name, []), f"{log_name}: a record lost"
        assert "2026-11-20" in {e.get("logical_date") for e in entries}, f"{log_name}: the day is missing"
    assert {k.split("/")[1] for k in after} == set(TICKERS)


def front_state(hosts) -> dict:
    return json.loads(hosts.http(f"{hosts.serve_url}/-/stockops/upstream")["body"])


def test_a_serving_host_cut_off_leaves_the_front_answering_and_a_rollback_switches_the_live_one(platform):
    """serving-b's cable is pulled: the front proxy keeps answering from serving-a, stops routing to serving-b once
    its heartbeat is stale, a rollback (stock_rollback, as from the UI) waits for serving-a alone; plugged back in,
    serving-b reconciles itself to the new champion and the front routes to both again."""
    hosts = platform
    wait_idle(hosts, DAGS, timeout=900)  # the train run the previous test's ingest triggered
    before = front_state(hosts)
    changes = [e for e in records(hosts, "audit/audit") if e.get("to_version") is not None]
    assert len(changes) >= 2, f"the second day should have promoted a second version: {changes}"
    assert sorted(before["routed"]) == sorted(SERVING) and before["version"] == before["champion"], before
    hosts.network.link_down("serving-b")
    cut = time.monotonic()
    slowest = 0.0
    for _ in range(6):
        asked = time.monotonic()
        answer = hosts.http(f"{hosts.serve_url}/forecast", "POST", {"ticker": "GOOG"}, timeout=60)
        slowest = max(slowest, time.monotonic() - asked)
        assert answer["status"] == 200 and json.loads(answer["body"])["model_version"] == before["champion"], answer
    deadline = time.monotonic() + 60
    while front_state(hosts)["routed"] != ["serving-a"] and time.monotonic() < deadline:
        time.sleep(0.5)
    dropped = time.monotonic() - cut
    assert front_state(hosts)["routed"] == ["serving-a"], front_state(hosts)
    print(f"\nserving-b cut: 6 forecasts through the front, slowest {slowest:.1f} s; dropped from routing after "
          f"{dropped:.1f} s")
    run_id = hosts.trigger("stock_rollback", conf={"reason": "serving-b is cut off: roll back anyway"})
    assert hosts.wait_for_run("stock_rollback", run_id, timeout=600) == "success", \
        [(t["task_id"], t["state"]) for t in hosts.task_instances("stock_rollback", run_id)]
    target = str(changes[-2]["to_version"])
    after = front_state(hosts)
    assert after["champion"] == target and after["routed"] == ["serving-a"], after
    outcomes = [r for r in records(hosts, "serving/deploys") if r.get("event") == "deploy"
                and r.get("dag_run_id") == run_id]
    assert {r.get("host") for r in outcomes} == {"serving-a"}, outcomes
    hosts.network.link_up("serving-b")
    back = time.monotonic()
    deadline = back + 240
    while time.monotonic() < deadline:
        state = front_state(hosts)
        if sorted(state["routed"]) == sorted(SERVING) and state["version"] == target:
            break
        time.sleep(1)
    print(f"serving-b back: serving v{target} and routed to again after {time.monotonic() - back:.1f} s")
    assert sorted(state["routed"]) == sorted(SERVING), state
    own = json.loads(hosts.http(f"{hosts.host_serve_url('serving-b')}/-/stockops/upstream")["body"])
    assert own["version"] == target, own


def test_the_object_store_restarted_mid_publish_never_leaves_a_half_snapshot_latest(platform):
    """The object store on control is killed and restarted again and again while a worker's ingest chunk publishes
    every ticker: the run completes (its S3 client retries, the chunk task retries), and every ticker's ``latest``
    (PostgreSQL) names a snapshot whose blob (on the object store's disk) is whole and matches its hash."""
    from stockops.model.portable.snapshot import read_snapshot_bytes

    hosts = platform
    wait_idle(hosts, DAGS, timeout=900)
    run_id = hosts.trigger("stock_ingest", logical_date="2026-11-23T12:00:00Z")
    deadline, restarts, down_s = time.monotonic() + 300, 0, 0.0
    while time.monotonic() < deadline and restarts < 8:
        if not any(hosts.running_tasks(w) for w in hosts.workers):
            if hosts.api(f"dags/stock_ingest/dagRuns/{run_id}")["state"] not in ("queued", "running"):
                break
            time.sleep(0.05)
            continue
        hosts.store.kill()
        killed = time.monotonic()
        time.sleep(0.3 + 0.2 * (restarts % 3))
        hosts.store.start()
        down_s += time.monotonic() - killed
        restarts += 1
        time.sleep(0.5)
    state = hosts.wait_for_run("stock_ingest", run_id, timeout=900)
    print(f"\nobject store killed {restarts} times under the ingest ({down_s:.1f} s down in all): run {state}")
    assert restarts >= 3, "the store was not restarted while tasks ran"
    assert state == "success", [(t["task_id"], t["state"], t["try_number"])
                                for t in hosts.task_instances("stock_ingest", run_id)]
    import sqlalchemy as sa

    engine = sa.create_engine(hosts.records_url())
    try:
        with engine.connect() as conn:
            latest = {name: json.loads(body) for name, body in conn.execute(sa.text(
                "SELECT name, body FROM stockops_pointer WHERE name LIKE 'data/%/latest'"))}
    finally:
        engine.dispose()
    assert {n.split("/")[1] for n in latest} == set(TICKERS)
    bucket = hosts.control.workdir / "s3" / "stockops" / "home"
    for name, entry in latest.items():
        blob = bucket / "data" / name.split("/")[1] / "snapshots" / f"{entry['hash']}.parquet"
        frame = read_snapshot_bytes(blob.read_bytes(), entry["hash"], file_sha256=entry.get("file_sha256"))
        assert str(frame["Date"].max())[:10] == entry["last_date"][:10], (name, entry)
        assert entry["logical_date"] == "2026-11-23", f"{name} did not move to the new day: {entry}"
