"""The daily cycle at universe size: a new trading day → every ticker published → trained → gated → deployed →
``/forecast`` answering from the new champion for every ticker; 18, 100 and 421 real tickers, embedded, Celery and
on hosts (network namespaces).

The universe is the 18 shipped series plus the 403 of ``universe.parquet`` (real US-listed daily series,
2004-08-19 .. 2020-12-11; its path on the command line), written as a folder of ``<TICKER>.csv`` files that the
``csv`` source serves (``bench/universe_ingest.py``'s feed). A size takes the first N of them (the 18 first). For
each size and setup, in a fresh home, ``bench/lead_time.py``'s measurement runs with that watchlist: the platform
starts, its first cycle publishes 2020-12-09 for every ticker and trains and deploys the first champion; then
``stock_ingest`` is triggered for 2020-12-10 and the clock runs until ``/forecast/batch`` answers every ticker from a
new version trained on exactly the snapshots it serves. The gate lets any model through (``--gate promote`` of
lead_time: margin -1, tolerance 1): the path timed is the whole one, build and deploy included. Per stage, from the
trigger: the last publish, each task of the training run that trained on the whole new day (features, train,
evaluate, register, gate, build, deploy: queue wait and run time) and the moment every ticker answered. While the
platform still runs: ``/forecast/batch`` of every ticker at concurrency 1 for ``--batch-seconds`` (p50/p99), and
the new day's ``stock_monitor`` run (started by the same Asset event as training): its time and its report's size.

Ways (``--ways``): ``embedded`` (``make run``'s LocalPlatform), ``celery`` (``CeleryPlatform`` on one machine) and
``hosts``: the namespace topology, ``stockops.launch.hosts_platform.HostsPlatform`` -- a control host (PostgreSQL,
Redis, the S3 object store, Airflow's api-server, scheduler, dag-processor and triggerer, MLflow), two worker hosts
(one Celery worker each, concurrency 1), a serving host (the agent); records in PostgreSQL, blobs in S3, nothing
shared but the network, Airflow's heartbeat timeout shortened as tests/system/test_multi_host.py does
(``--heartbeat-timeout``, 20 s). The bench stays in the root namespace: its REST calls and ``/forecast/batch``
polls go through one relay process inside the control host, and the batch load's client runs there too. The
same measurement as lead_time's (its loop, criteria and breakdown), on the hosts; at ``--cut-sizes`` (18) the
platform then runs one more cycle (the universe's last day, 2020-12-11) during which the cable of the worker host
running ``--cut-task`` (``train``) is pulled (``Network.link_down``) as soon as its task process is seen there: the
scheduler fails the silent attempt after the heartbeat timeout, the task's retry (after its ``retry_delay``) runs on
the other worker; reported: that cycle's extra seconds over the uncut one, where the cut fell and each try.

Goals (issue 27): 421 tickers <= 15 minutes embedded; Celery <= 1.3 x embedded; training alone (the train task)
on 421 tickers <= 8 minutes; ``/forecast/batch`` of 421 tickers p99 <= 100 ms at c=1; the monitor check for 421
tickers <= 2 minutes, its HTML <= 10 MB; the namespace topology at 100 tickers <= 1.3 x embedded (same 2 cores).
Results: bench/results/universe_cycle.json (a size or way not run keeps its earlier result; each size's row holds
one entry per way and the ratios ``celery_to_embedded``, ``hosts_to_embedded`` against the same size's embedded).

    .venv/bin/python bench/universe_cycle.py <path>/universe.parquet [--tickers 18 100 421]
        [--ways embedded,celery,hosts] [--batch-seconds 10] [--cut-sizes 18] [--cut-task train] [--cut-delay 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "results" / "universe_cycle.json"
FIRST_DAY, NEW_DAY = "2020-12-09T22:00:00Z", "2020-12-10T22:00:00Z"
CUT_DAY = "2020-12-11T22:00:00Z"  # the cut-cable cycle, on the hosts after the measured one (the universe's last day)
GOAL_S = 900.0
GOAL_TRAIN_S = 480.0
GOAL_CELERY_RATIO = 1.3
GOAL_HOSTS_RATIO = 1.3  # the namespace topology, at 100 tickers, on the same 2 cores
HEARTBEAT_TIMEOUT_S = 20  # tests/system/test_multi_host.py's
WAYS = ("embedded", "celery", "hosts")
GOAL_BATCH_P99_MS = 100.0
STAGES = ("load_snapshots", "features", "train", "evaluate", "register", "gate", "build", "deploy")


def while_running(seconds: float):
    """``after`` for lead_time.measure: ``/forecast/batch`` of the whole watchlist at concurrency 1, then the new
    day's ``stock_monitor`` run (it starts with training, on the same day's Asset event): its wall time, its tasks'
    run times and its report's size."""

    def measure(settings, platform, token) -> dict:
        from serving_load import http_level

        row = http_level(f"{settings.serve_url}/forecast/batch", [b"{}"], 1, seconds, [], refused=b'"error"')
        batch = {"tickers": len(settings.tickers), **{k: row[k] for k in (
            "rps", "p50_ms", "p99_ms", "max_ms", "errors", "error_samples")}}
        return {"batch": batch, "monitor": monitor_run(settings, platform, token)}

    return measure


def monitor_run(settings, platform, token, monitoring_dirs: list[Path] | None = None) -> dict:
    """The latest ``stock_monitor`` run, waited for: state, queued to end, each task's run time, the report's size
    (the newest report folder of ``monitoring_dirs``: on the hosts, each worker's own; default the settings')."""
    from stockops.monitoring import report_folders

    runs = platform.api("dags/stock_monitor/dagRuns?order_by=-run_after&limit=1", token)["dag_runs"]
    if not runs:
        return {"error": "no stock_monitor run"}
    run_id = runs[0]["dag_run_id"]
    state = platform.wait_for_run("stock_monitor", run_id, token, timeout=900)
    run = platform.api(f"dags/stock_monitor/dagRuns/{run_id}", token)
    tis = platform.api(f"dags/stock_monitor/dagRuns/{run_id}/taskInstances", token)["task_instances"]
    queued, ended = (datetime.fromisoformat(run[k].replace("Z", "+00:00")) if run.get(k) else None
                     for k in ("queued_at", "end_date"))
    folders = sorted((f for d in monitoring_dirs or [settings.monitoring_dir] for f in report_folders(d)),
                     key=lambda f: f.name)
    html = sorted(folders[-1].glob("*.html")) if folders else []
    return {"run_id": run_id, "state": state,
            "seconds": round((ended - queued).total_seconds(), 1) if queued and ended else None,
            "tasks_s": {t["task_id"]: round(t["duration"], 1) for t in tis if t.get("duration") is not None},
            "report_mb": round(sum(p.stat().st_size for p in html) / 2**20, 2) if html else None}


def stages(result: dict) -> dict:
    """The cycle's stages, in seconds from the trigger: the last publish, then each task of the complete training
    run (when it was queued, how long it waited and ran, when it ended), then every ticker answering."""
    out: dict = {"published_at_s": result.get("last_publish_at_s")}
    complete = {t["task"]: t for t in result.get("tasks_summary", []) if t["run"].endswith("(complete)")}
    for task in STAGES:
        t = complete.get(task)
        if t is not None:
            out[task] = {"queued_at_s": t["first_queued_at_s"], "wait_s": t["wait_max_s"], "run_s": t["run_sum_s"],
                         "ended_at_s": t["last_end_at_s"]}
    out["answering_at_s"] = result.get("lead_time_s")
    return out


# ---- the namespace topology (stockops.launch.hosts_platform.HostsPlatform) ----------------------------------------
# The bench process stays in the root namespace, which has no address on the hosts' LAN: REST calls and the
# /forecast/batch polls go through one long-lived helper process inside the control host (a request per line on
# its stdin, the answer per line on its stdout), not through HostsPlatform.http, which starts `ip netns exec ...
# python` per request (~0.1 s of CPU each: a second's poll would cost the 2-core machine a noticeable share).
_RELAY = r"""
import json, sys, urllib.error, urllib.request
for line in sys.stdin:
    url, method, body, headers, timeout = json.loads(line)
    req = urllib.request.Request(url, method=method, data=body.encode() if body else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out = {"status": resp.status, "body": resp.read().decode(errors="replace")}
    except urllib.error.HTTPError as exc:
        out = {"status": exc.code, "body": exc.read().decode(errors="replace")}
    except Exception as exc:
        out = {"status": 0, "body": repr(exc)}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
"""

_BATCH = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from serving_load import http_level
row = http_level(sys.argv[2], [b"{}"], 1, float(sys.argv[3]), [], refused=b'"error"')
print(json.dumps(row, default=str))
"""


def _plain_env() -> dict[str, str]:
    """A helper's environment inside a host: this process's, without any platform setting (as HostsPlatform's)."""
    from stockops.launch.hosts_platform import _HOST_OWN

    return {k: v for k, v in os.environ.items() if not k.startswith(_HOST_OWN)}


class HostsApi:
    """lead_time's view of a platform (``api(path, token)``, ``trigger(dag, token, logical_date=)``,
    ``wait_for_run(dag, run, token, timeout=)``) over a :class:`HostsPlatform`, its requests made from inside the
    control host by one relay process; plus ``http`` for any URL on the LAN (the serving host's endpoint)."""

    def __init__(self, hosts):
        import subprocess
        import threading

        self.hosts = hosts
        self.lock = threading.Lock()
        self.proc = hosts.control.popen([sys.executable, "-u", "-c", _RELAY], env=_plain_env(),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._token: str | None = None

    def http(self, url: str, method: str = "GET", body: object = None, headers: dict | None = None,
             timeout: float = 60) -> dict:
        data = "" if body is None else json.dumps(body)
        line = json.dumps([url, method, data, {"Content-Type": "application/json", **(headers or {})}, timeout])
        with self.lock:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the relay in the control host exited ({self.proc.returncode})")
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError("the relay in the control host gave no answer")
        return json.loads(answer)

    def api_token(self) -> str:
        if self._token is None:
            self._token = self.hosts.token()
        return self._token

    def api(self, path: str, token: str | None = None, method: str | None = None, body: object = None):
        from stockops.launch.hosts_platform import ApiError

        url = f"{self.hosts.url}/api/v2/{path.lstrip('/')}"
        resp = self.http(url, method or ("POST" if body is not None else "GET"), body,
                         {"Authorization": f"Bearer {token or self.api_token()}"})
        if not 200 <= resp["status"] < 300:
            raise ApiError(resp["status"], resp["body"], url)
        return json.loads(resp["body"]) if resp["body"] else None

    def trigger(self, dag_id: str, token: str | None = None, conf: dict | None = None,
                logical_date: str | None = None) -> str:
        return str(self.api(f"dags/{dag_id}/dagRuns", token, body={"logical_date": logical_date, "conf": conf or {}})
                   ["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str, token: str | None = None, timeout: float = 600) -> str:
        deadline, state = time.monotonic() + timeout, "unknown"
        while time.monotonic() < deadline:
            state = self.api(f"dags/{dag_id}/dagRuns/{run_id}", token)["state"]
            if state in ("success", "failed"):
                return str(state)
            self.hosts.check_alive()
            time.sleep(1)
        raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")

    def served(self) -> dict | None:
        """lead_time.served, asked from inside the control host of the serving host's endpoint."""
        import hashlib

        try:
            resp = self.http(f"{self.hosts.serve_url}/forecast/batch", "POST", {}, {"X-Stockops-Smoke": "1"},
                             timeout=10)
            body = json.loads(resp["body"]) if resp["status"] == 200 else None
        except (RuntimeError, ValueError):
            return None
        if not isinstance(body, list):
            return None
        answered = [e for e in body if "error" not in e]
        combined = hashlib.sha256("".join(f"{e['ticker']}:{e['snapshot_hash']}\n" for e in sorted(
            answered, key=lambda e: e["ticker"])).encode()).hexdigest()
        return {"tickers": len(body), "answered": len(answered),
                "versions": sorted({e["model_version"] for e in answered}),
                "snapshot_days": sorted({e["snapshot_last_date"] for e in answered}),
                "trained_on_served": bool(answered) and all(e["training_snapshot_hash"] == combined for e in answered)}

    def batch_load(self, seconds: float) -> dict:
        """serving_load.http_level on ``/forecast/batch`` at c=1, the client inside the control host."""
        done = self.hosts.control.run([sys.executable, "-c", _BATCH, str(ROOT), f"{self.hosts.serve_url}/forecast/batch",
                                       str(seconds)], env=_plain_env(), capture_output=True, text=True,
                                      timeout=seconds + 120)
        if done.returncode != 0:
            return {"error": done.stderr[-2000:]}
        return json.loads(done.stdout.strip().splitlines()[-1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except Exception:  # noqa: BLE001 - stopped by id below
                self.hosts.control.stop(self.proc, grace=2)


class CableCutter:
    """Pulls the cable of the worker host that runs ``task`` of a new run of ``dag_id`` (one not in ``before``),
    once that task instance's process is seen on the host (``HostsPlatform.running_tasks``, read from /proc every
    50 ms; the task instance ids come from the REST API), ``delay_s`` after it was first seen running."""

    def __init__(self, api: HostsApi, dag_id: str, task: str, before: set[str], t0: datetime, delay_s: float = 0.0):
        import threading

        self.api, self.dag_id, self.task, self.before, self.t0, self.delay_s = api, dag_id, task, before, t0, delay_s
        self.cut: dict | None = None
        self.error: str | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CableCutter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)

    def _candidates(self) -> dict[str, tuple[str, dict]]:
        out = {}
        runs = self.api.api(f"dags/{self.dag_id}/dagRuns?order_by=-run_after&limit=20")["dag_runs"]
        for run in runs:
            if run["dag_run_id"] in self.before:
                continue
            tis = self.api.api(f"dags/{self.dag_id}/dagRuns/{run['dag_run_id']}/taskInstances?limit=1000")
            out.update({t["id"]: (run["dag_run_id"], t) for t in tis["task_instances"] if t["task_id"] == self.task})
        return out

    def _run(self) -> None:
        hosts = self.api.hosts
        try:
            ids: dict[str, tuple[str, dict]] = {}
            seen: tuple[str, str, float] | None = None  # worker, ti id, when first seen running
            last_lookup = 0.0
            while not self.stop.is_set():
                if time.monotonic() - last_lookup > 0.5 and seen is None:
                    ids.update(self._candidates())
                    last_lookup = time.monotonic()
                live = any(t["state"] in ("scheduled", "queued", "running") for _, t in ids.values())
                if seen is None and live:
                    for worker in hosts.workers:
                        running = [i for i in hosts.running_tasks(worker) if i in ids]
                        if running:
                            seen = (worker, running[0], time.monotonic())
                            break
                if seen is not None and time.monotonic() - seen[2] >= self.delay_s:
                    worker, ti_id, _ = seen
                    if ti_id in hosts.running_tasks(worker):
                        hosts.network.link_down(worker)
                        run_id, ti = ids[ti_id]
                        self.cut = {"worker": worker, "dag": self.dag_id, "run_id": run_id, "task": self.task,
                                    "map_index": ti.get("map_index", -1), "ti_id": ti_id,
                                    "cut_at_s": round((datetime.now(UTC) - self.t0).total_seconds(), 1),
                                    "running_for_s": round(time.monotonic() - seen[2], 1)}
                        print(f"    cut {worker}'s cable while it ran {self.dag_id}.{self.task} "
                              f"(+{self.cut['cut_at_s']} s)", flush=True)
                        return
                    seen = None  # it ended before the delay was over: wait for another
                time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001 - reported in the result
            self.error = repr(exc)


def _cycle(api: HostsApi, token: str, day: str, cut: dict | None = None) -> dict:
    """One daily cycle on the running hosts: trigger ``stock_ingest`` for ``day``, poll every second until every
    ticker answers from a new version trained on the served snapshots (lead_time.measure's loop and criteria);
    ``cut``: {"task": ..., "delay_s": ...}: pull the cable of the worker running that task meanwhile."""
    import lead_time as lt

    before = api.served()
    trains_before = {r["dag_run_id"] for r in lt._runs(api, token, "stock_train")}
    ingests_before = {r["dag_run_id"] for r in lt._runs(api, token, "stock_ingest")}
    old_versions = set(before["versions"]) if before else set()
    t0 = datetime.now(UTC)
    clock = time.monotonic()
    cutter = None
    if cut:
        dag = "stock_ingest" if cut["task"] in ("watchlist", "chunk", "held", "settled", "outcomes") else "stock_train"
        cutter = CableCutter(api, dag, cut["task"], ingests_before if dag == "stock_ingest" else trains_before, t0,
                             cut.get("delay_s", 0.0))
    from contextlib import nullcontext

    with lt.CpuMeter(str(api.hosts.network_dir)) as cpu, (cutter or nullcontext()):
        run_id = api.trigger("stock_ingest", token, logical_date=day)
        seen = lt.watch_new_day(api, token, run_id, t0, clock, trains_before, old_versions, api.served)
    lt.settle(api, token, seen.complete_id)
    outcome, end_s, first_new_s, complete_id, last_publish, polls = seen.outcome, seen.end_s, seen.first_new_s, \
        seen.complete_id, seen.last_publish, seen.polls
    train_runs = sorted((r for r in lt._runs(api, token, "stock_train") if r["dag_run_id"] not in trains_before),
                        key=lambda r: r["run_after"])
    tasks = lt.breakdown(api, token, "stock_ingest", run_id, t0, "ingest")
    for i, run in enumerate(train_runs, 1):
        label = f"train #{i}" + (" (complete)" if run["dag_run_id"] == complete_id else "")
        tasks += lt.breakdown(api, token, "stock_train", run["dag_run_id"], t0, label)
    out = {"day": day, "served_before": before, "outcome": outcome, "lead_time_s": round(end_s, 1) if end_s else None,
           "first_new_version_everywhere_s": round(first_new_s, 1) if first_new_s else None,
           "last_publish_at_s": round((last_publish - t0).total_seconds(), 1) if last_publish else None,
           "train_runs": [{"run_id": r["dag_run_id"], "state": r["state"], "complete": r["dag_run_id"] == complete_id}
                          for r in train_runs],
           "cpu": cpu.summary(), "polls": polls, "tasks_summary": lt.by_task(tasks), "tasks": tasks,
           "ran_on": _ran_on(api, token, [("stock_ingest", run_id), *(("stock_train", r["dag_run_id"])
                                                                      for r in train_runs)])}
    failures = _failures(api, token, [("stock_ingest", run_id), *(("stock_train", r["dag_run_id"]) for r in train_runs)])
    if failures:
        out["failures"] = failures
    if cutter is not None:
        out["cut"] = {**(cutter.cut or {"error": cutter.error or "the task was never seen running on a worker"})}
        if cutter.cut:
            c = cutter.cut
            path = f"dags/{c['dag']}/dagRuns/{c['run_id']}/taskInstances/{c['task']}"
            path += f"/{c['map_index']}/tries" if c["map_index"] is not None and c["map_index"] >= 0 else "/tries"
            t0s = t0.isoformat()
            out["cut"]["tries"] = [{"try": t["try_number"], "state": t["state"], "hostname": t.get("hostname"),
                                    "start_at_s": _since(t0s, t.get("start_date")),
                                    "end_at_s": _since(t0s, t.get("end_date")),
                                    "run_s": round(t["duration"], 1) if t.get("duration") is not None else None}
                                   for t in api.api(path, token)["task_instances"]]
    return out


def _failures(api: HostsApi, token: str, runs: list[tuple[str, str]]) -> list[dict]:
    """Each failed task instance of ``runs``: where it ran, its try and its log's tail (read through the api-server,
    from the bucket), kept before the hosts and their logs are gone."""
    import lead_time as lt

    out = []
    for dag_id, run_id in runs:
        for ti in lt._task_instances(api, token, dag_id, run_id):
            if ti["state"] != "failed":
                continue
            index = ti.get("map_index", -1)
            path = (f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}"
                    f"?full_content=true" + (f"&map_index={index}" if index is not None and index >= 0 else ""))
            try:
                text = json.dumps(api.api(path, token))
            except Exception as exc:  # noqa: BLE001 - the failure is still recorded
                text = repr(exc)
            out.append({"dag": dag_id, "run_id": run_id, "task": ti["task_id"], "map_index": index,
                        "hostname": ti.get("hostname"), "try": ti.get("try_number"), "log_tail": text[-6000:]})
    return out


def _since(t0: str, stamp: str | None) -> float | None:
    if not stamp:
        return None
    return round((datetime.fromisoformat(stamp) - datetime.fromisoformat(t0)).total_seconds(), 1)


def _ran_on(api: HostsApi, token: str, runs: list[tuple[str, str]]) -> dict[str, int]:
    """Task instances (current tries) per hostname over ``runs``."""
    import lead_time as lt

    hosts: dict[str, int] = {}
    for dag_id, run_id in runs:
        for ti in lt._task_instances(api, token, dag_id, run_id):
            if ti.get("hostname"):
                hosts[ti["hostname"]] = hosts.get(ti["hostname"], 0) + 1
    return hosts


def measure_hosts(env: dict[str, str], days: tuple[str, ...], batch_seconds: float, heartbeat_timeout_s: int | None,
                  cut: dict | None = None) -> dict:
    """lead_time.measure on the namespace topology, in a fresh network: start, the first cycle (days[0]), the
    measured cycle (days[1]), the batch load and the day's monitor run; with ``cut``, then one more cycle
    (days[2]) during which a worker's cable is pulled (``cut``'s task, see :class:`CableCutter`)."""
    import lead_time as lt

    from stockops.launch import netns
    from stockops.launch.hosts_platform import HostsPlatform
    from stockops.model.gate import PERMISSIVE_ENV

    why = netns.available()
    if why:
        return {"skipped": f"network namespaces unavailable: {why}"}
    for name in [k for k in os.environ if k.startswith("STOCKOPS_")]:
        del os.environ[name]
    hosts = HostsPlatform(env={"STOCKOPS_TRAIN_PROFILE": "default", **env, **PERMISSIVE_ENV}, worker_concurrency=1,
                          heartbeat_timeout_s=heartbeat_timeout_s)
    api = None
    started = time.monotonic()
    try:
        hosts.start()
        hosts.wait_healthy(timeout=300)
        hosts.ensure_dags_ready(lt.DAGS, timeout=240)
        api = HostsApi(hosts)
        token = api.api_token()
        startup_s = time.monotonic() - started
        print(f"hosts: up in {startup_s:.0f} s ({hosts.timings}); network {hosts.network.prefix}", flush=True)
        clock = time.monotonic()
        first = api.trigger("stock_ingest", token, logical_date=days[0])
        lt.wait_idle(api, token)
        first_cycle_s = time.monotonic() - clock
        print(f"hosts: first cycle {first_cycle_s:.0f} s; serving: {api.served()}", flush=True)
        result = _cycle(api, token, days[1])
        result.update({"startup_s": round(startup_s, 1), "startup_steps_s": dict(hosts.timings),
                       "first_cycle_s": round(first_cycle_s, 1), "first_cycle_run": first,
                       "heartbeat_timeout_s": heartbeat_timeout_s, "worker_concurrency": hosts.worker_concurrency})
        if result["lead_time_s"]:
            worker = hosts.platform_for(hosts.workers[0]).settings
            dirs = [hosts.platform_for(w).settings.monitoring_dir for w in hosts.workers]
            result["after"] = {"batch": {"tickers": len(worker.tickers), **{k: v for k, v in api.batch_load(
                batch_seconds).items() if k in ("rps", "p50_ms", "p99_ms", "max_ms", "errors", "error_samples",
                                                "error")}},
                               "monitor": monitor_run(worker, api, token, dirs)}
        if cut and result["lead_time_s"]:
            lt.wait_idle(api, token)
            print(f"hosts: the cut cycle ({cut['task']})", flush=True)
            result["cut_cycle"] = _cycle(api, token, days[2], cut)
        return result
    finally:
        if api is not None:
            api.close()
        hosts.stop()


def _row(result: dict) -> dict:
    """What a size's row keeps of one measured cycle."""
    summary = stages(result)
    after = result.get("after") or {}
    return {"cycle_s": result["lead_time_s"], "outcome": result["outcome"], "stages": summary,
            "first_cycle_s": result["first_cycle_s"], "startup_s": result["startup_s"],
            "batch": after.get("batch") or {}, "monitor": after.get("monitor") or {}, "cpu": result["cpu"],
            "train_runs": result["train_runs"], "tasks_summary": result["tasks_summary"]}


def _print_cycle(n: int, way: str, row: dict) -> None:
    train = (row["stages"].get("train") or {}).get("run_s")
    batch, monitor = row["batch"], row["monitor"]
    print(f"{n} tickers, {way}: cycle {row['cycle_s']} s ({row['outcome']}); train task {train} s;"
          f" /forecast/batch of {batch.get('tickers')} at c=1: p50 {batch.get('p50_ms')} ms, p99 "
          f"{batch.get('p99_ms')} ms; first cycle {row['first_cycle_s']} s; the day's monitor run "
          f"{monitor.get('seconds')} s ({monitor.get('state')}; check {monitor.get('tasks_s', {}).get('check')} s;"
          f" report {monitor.get('report_mb')} MB)", flush=True)
    for task, t in row["stages"].items():
        print(f"    {task:<16} {t}", flush=True)


def _cut_summary(uncut: dict, cut_cycle: dict) -> dict:
    """The cut cycle against the uncut one of the same platform: the extra seconds, where the cut fell, the tries."""
    cut = cut_cycle.get("cut") or {}
    extra = (round(cut_cycle["lead_time_s"] - uncut["lead_time_s"], 1)
             if cut_cycle.get("lead_time_s") and uncut.get("lead_time_s") else None)
    tries = sorted(cut.get("tries", []), key=lambda t: t["try"])
    failed = next((t for t in tries if t.get("hostname") == cut.get("worker") and t["state"] != "success"), None)
    redo = next((t for t in tries if t.get("hostname") != cut.get("worker") and t["state"] == "success"), None)
    parts = {}
    if failed and failed.get("end_at_s") is not None and cut.get("cut_at_s") is not None:
        parts["cut_to_attempt_failed_s"] = round(failed["end_at_s"] - cut["cut_at_s"], 1)  # the heartbeat timeout
        if redo and redo.get("start_at_s") is not None:
            parts["attempt_failed_to_retry_start_s"] = round(redo["start_at_s"] - failed["end_at_s"], 1)  # retry_delay
            parts["retry_on"] = redo.get("hostname")
            parts["retry_run_s"] = redo.get("run_s")
    return {"cycle_s": cut_cycle.get("lead_time_s"), "uncut_cycle_s": uncut.get("lead_time_s"), "extra_s": extra,
            **parts, "outcome": cut_cycle["outcome"], "failures": cut_cycle.get("failures", []), "day": cut_cycle["day"], "cut": cut, "stages": stages(cut_cycle),
            "ran_on": cut_cycle.get("ran_on"), "cpu": cut_cycle["cpu"], "tasks_summary": cut_cycle["tasks_summary"]}


def _print_side_by_side(n: str, row: dict) -> None:
    """Each stage's end (s from the trigger) and run time, per way, for one size."""
    ways = [w for w in WAYS if (row.get(w) or {}).get("stages")]
    if not ways:
        return
    print(f"\n{n} tickers, stage by stage: ended at s (run s), from the trigger")
    print(f"  {'stage':<16}" + "".join(f"{w:>22}" for w in ways))
    for stage in ("published_at_s", *STAGES, "answering_at_s"):
        cells = []
        for w in ways:
            t = row[w]["stages"].get(stage)
            cells.append(f"{t!s:>22}" if not isinstance(t, dict) else f"{t['ended_at_s']!s:>13} ({t['run_s']!s:>5})")
        print(f"  {stage:<16}" + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("universe", type=Path, help="universe.parquet (Ticker, Date, Open .. Volume)")
    parser.add_argument("--sizes", "--tickers", dest="sizes", type=int, nargs="+", default=[18, 100, 421])
    parser.add_argument("--ways", "--setups", dest="ways", default="embedded,celery",
                        help="comma-separated, of: embedded, celery, hosts (the namespace topology)")
    parser.add_argument("--batch-seconds", type=float, default=10.0)
    parser.add_argument("--cut-sizes", type=int, nargs="*", default=[18],
                        help="hosts: at these sizes, one more cycle during which a worker's cable is pulled")
    parser.add_argument("--cut-task", default="train",
                        help="hosts: the task whose worker loses its cable (stock_train's or stock_ingest's)")
    parser.add_argument("--cut-delay", type=float, default=0.0,
                        help="hosts: seconds the task has run when the cable is pulled")
    parser.add_argument("--heartbeat-timeout", type=int, default=HEARTBEAT_TIMEOUT_S,
                        help="hosts: Airflow's task heartbeat timeout (s), as the multi-host test sets it")
    args = parser.parse_args()
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    if set(ways) - set(WAYS):
        parser.error(f"unknown ways {sorted(set(ways) - set(WAYS))}: of {', '.join(WAYS)}")

    import lead_time
    from universe_ingest import write_feed

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update({"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                    "days": [FIRST_DAY, NEW_DAY], "universe": args.universe.name,
                    "goals": {"cycle_421_embedded_s": GOAL_S, "train_421_s": GOAL_TRAIN_S,
                              "celery_to_embedded": GOAL_CELERY_RATIO, "hosts_100_to_embedded": GOAL_HOSTS_RATIO,
                              "batch_421_p99_ms": GOAL_BATCH_P99_MS},
                    "ways": {"embedded": "make run's LocalPlatform (airflow standalone, SQLite, local serving)",
                             "celery": "stockops.launch.cluster.CeleryPlatform on one machine",
                             "hosts": "stockops.launch.hosts_platform.HostsPlatform: control (PostgreSQL, Redis, "
                                      "S3, Airflow api-server/scheduler/dag-processor/triggerer, MLflow), worker-a "
                                      "and worker-b (one Celery worker each, concurrency 1), serving (the agent; "
                                      "since the fleet change, asked through the front proxy on control) as "
                                      "network namespaces; records in PostgreSQL, blobs in S3"}})
    sizes = results.setdefault("sizes", {})
    with tempfile.TemporaryDirectory(prefix="stockops-universe-feed-") as feed:
        os.chmod(feed, 0o755)
        order = write_feed(args.universe, Path(feed))
        for n in args.sizes:
            tickers = order[:n]
            env = {"STOCKOPS_SOURCE": "csv", "STOCKOPS_CSV_PATH": feed, "STOCKOPS_TICKERS": ",".join(tickers),
                   "STOCKOPS_INGEST_SCHEDULE": "manual"}
            row = sizes.setdefault(str(n), {})
            for way in ways:
                print(f"\n{n} tickers, {way}: starting (load average {os.getloadavg()[0]:.2f})", flush=True)
                load = os.getloadavg()
                if way == "hosts":
                    cut = {"task": args.cut_task, "delay_s": args.cut_delay} if n in args.cut_sizes else None
                    try:
                        result = measure_hosts(env, (FIRST_DAY, NEW_DAY, CUT_DAY), args.batch_seconds,
                                               args.heartbeat_timeout, cut)
                    except Exception as exc:  # noqa: BLE001 - recorded; the next size still runs
                        import traceback

                        traceback.print_exc()
                        row[way] = {"error": repr(exc)[:2000]}
                        continue
                else:
                    result = lead_time.measure(way, "promote", env, days=(FIRST_DAY, NEW_DAY),
                                               after=while_running(args.batch_seconds))
                if result.get("skipped"):
                    row[way] = {"skipped": result["skipped"]}
                    print(f"{n} tickers, {way}: skipped: {result['skipped']}", flush=True)
                    continue
                earlier = row.get(way) or {}
                repeats = earlier.get("earlier_runs", [])
                if earlier.get("cycle_s") or earlier.get("error"):  # a rerun keeps the last run's outcome here
                    repeats = [*repeats, {"measured_at": earlier.get("measured_at"), "cycle_s": earlier.get("cycle_s"),
                                          "outcome": earlier.get("outcome") or earlier.get("error"),
                                          "cut_cable": {k: (earlier.get("cut_cable") or {}).get(k) for k in (
                                              "cycle_s", "extra_s", "outcome", "cut_to_attempt_failed_s",
                                              "attempt_failed_to_retry_start_s", "retry_run_s")}}]
                row[way] = _row(result)
                row[way]["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                row[way]["load_average_before"] = [round(x, 2) for x in load]
                if repeats:
                    row[way]["earlier_runs"] = repeats
                if way == "hosts":
                    row[way].update({k: result[k] for k in ("heartbeat_timeout_s", "worker_concurrency",
                                                            "startup_steps_s", "ran_on")})
                    if result.get("failures"):
                        row[way]["failures"] = result["failures"]
                    if result.get("cut_cycle"):
                        row[way]["cut_cable"] = _cut_summary(result, result["cut_cycle"])
                _print_cycle(n, way, row[way])
                if row[way].get("cut_cable"):
                    c = row[way]["cut_cable"]
                    print(f"{n} tickers, hosts, cable cut: cycle {c['cycle_s']} s vs {c['uncut_cycle_s']} s uncut: "
                          f"+{c['extra_s']} s ({c['outcome']}); the failed attempt ended "
                          f"{c.get('cut_to_attempt_failed_s')} s after the cut, the retry started "
                          f"{c.get('attempt_failed_to_retry_start_s')} s later on {c.get('retry_on')} and ran "
                          f"{c.get('retry_run_s')} s; cut {c['cut']}", flush=True)
                    for t in c["cut"].get("tries", []):
                        print(f"    try {t}", flush=True)
                    for f in c["failures"]:
                        print(f"    failed: {f['dag']}.{f['task']} try {f['try']} on {f['hostname']}: "
                              f"{f['log_tail'][-1500:]}", flush=True)
            for way in ("celery", "hosts"):  # against the embedded row of the same size, when ``way`` ran now
                emb = row.get("embedded", {})
                if way in ways and emb.get("cycle_s") and row.get(way, {}).get("cycle_s"):
                    row[f"{way}_to_embedded"] = round(row[way]["cycle_s"] / emb["cycle_s"], 2)
                    row[f"{way}_to_embedded_ref"] = {"embedded_cycle_s": emb["cycle_s"],
                                                     "embedded_measured_at": emb.get("measured_at")}
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for n, row in sorted(sizes.items(), key=lambda kv: int(kv[0])):
        _print_side_by_side(n, row)
    print(f"\n{'tickers':>8} {'embedded s':>11} {'celery s':>9} {'hosts s':>8} {'celery/emb':>10} {'hosts/emb':>9} "
          f"{'train s emb/hosts':>18} {'batch p99 ms emb/hosts':>23} {'cut cable +s':>12}")
    for n, row in sorted(sizes.items(), key=lambda kv: int(kv[0])):
        emb, cel, hst = row.get("embedded", {}), row.get("celery", {}), row.get("hosts", {})
        train = "/".join(str(((r.get("stages") or {}).get("train") or {}).get("run_s")) for r in (emb, hst))
        p99 = "/".join(str((r.get("batch") or {}).get("p99_ms")) for r in (emb, hst))
        print(f"{n:>8} {emb.get('cycle_s')!s:>11} {cel.get('cycle_s')!s:>9} {hst.get('cycle_s')!s:>8} "
              f"{row.get('celery_to_embedded')!s:>10} {row.get('hosts_to_embedded')!s:>9} {train:>18} {p99:>23} "
              f"{(hst.get('cut_cable') or {}).get('extra_s')!s:>12}")
    big, hundred = sizes.get("421", {}), sizes.get("100", {})
    print(f"goals: 421 embedded <= {GOAL_S:.0f} s: {big.get('embedded', {}).get('cycle_s')}; celery <= "
          f"{GOAL_CELERY_RATIO} x: {big.get('celery_to_embedded')}; hosts at 100 <= {GOAL_HOSTS_RATIO} x: "
          f"{hundred.get('hosts_to_embedded')}; results: {RESULTS}")

if __name__ == "__main__":
    main()
