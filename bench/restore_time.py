"""Time to restore: how long a rollback takes to put the old version back on the endpoint, under load.

Why: DORA's time to restore (elite: under one hour) is, for this platform, the time from asking
for a rollback to the old model answering on the stable address — and no request should fail on
the way. The goal (issue): under 60 s and zero failed requests.

What: in a fresh home, two models are trained on a replay snapshot and promoted (v1, then v2
forced), both deployed. Light load runs throughout: 2 clients, each sending a forecast request
every 50 ms (about 40 requests/s) and recording which version answered. Then:
  in-process  ``stockops.serving.rollback.rollback()`` called directly (plan, bento, health-checked
              deploy, champion move): the floor, without Airflow;
  airflow     the ``stock_rollback`` DAG triggered through the REST API of a real
              ``airflow standalone`` on loopback (authentication on), run by its scheduler: what a
              user clicking *Trigger* in the UI gets, scheduling and task start-up included.
Measured per path: seconds from the request to the first answer from the old version, requests
and failed requests in that time, and (airflow) each task's duration.

Then the serving supervisor's healing, under the same load (goal: answering again within 10 s):
  bento killed        SIGKILL to the serving bento's whole process tree (BentoML's workers
                      outlive a killed arbiter and would keep answering): the proxy retries on the spare, the
                      supervisor fails over to it and starts a new spare;
  bento+spare killed  both processes of the served bento killed: a cold restart of the bento
                      (no spare to fail over to);
  proxy killed        SIGKILL to the proxy at the stable address: the supervisor starts a new one.
And with the supervisor itself in trouble (its watcher, ``make run``'s launcher loop
``stockops.launch.components.watch``, runs as it does under ``make run``):
  supervisor killed, then bento+spare   SIGKILL to the supervisor, then at once to the bento and its
                      spare: the watcher starts a new supervisor, which cold-restarts the bento;
  supervisor hung     SIGSTOP to the supervisor (alive, silent): the watcher replaces it when its
                      heartbeat is older than STOCKOPS_SUPERVISOR_STALE_S (10 s); the endpoint
                      answers throughout (reported: seconds until the new supervisor beats);
  MLflow hung, then bento+spare   the supervisor's registry is an ``mlflow server``, SIGSTOPped (every
                      call hangs until its timeout), then the bento and spare are killed: healing
                      must not wait behind MLflow.
Per case: seconds from the kill to answering again, requests and failed requests meanwhile, and
the incident the supervisor recorded (downtime, detection). Results: bench/results/restore_time.json.

    .venv/bin/python bench/restore_time.py              # everything (about 8 minutes)
    .venv/bin/python bench/restore_time.py --heal-only  # the supervisor's cases only (no Airflow)
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "restore_time.json"
GOAL_S = 60.0
HEAL_GOAL_S = 10.0


class Load:
    """Clients sending a request every ``interval`` seconds; every answer is kept as (time, status, version)."""

    def __init__(self, url: str, body: dict, clients: int = 2, interval: float = 0.05):
        self.url, self.body, self.interval = url, body, interval
        self.answers: list[tuple[float, int, str | None]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self) -> None:
        from stockops.core.processes import http_json

        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                status, body = http_json(f"{self.url}/predict", self.body, timeout=10)
                version = body.get("model_version") if isinstance(body, dict) else None
            except Exception:  # noqa: BLE001 - a failed request is what we count
                status, version = 0, None
            self.answers.append((sent, status, version))
            time.sleep(max(0.0, self.interval - (time.monotonic() - sent)))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)

    def until(self, version: str, since: float, timeout: float = 600) -> float:
        """Seconds from ``since`` to the first successful answer from ``version``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [t for t, status, v in list(self.answers) if t >= since and status == 200 and v == version]
            if hits:
                return min(hits) - since
            time.sleep(0.05)
        raise TimeoutError(f"v{version} did not answer within {timeout:.0f} s")

    def window(self, since: float, until: float) -> dict:
        answers = [a for a in list(self.answers) if since <= a[0] <= until]
        return {"requests": len(answers), "failed": sum(1 for _, status, _ in answers if status != 200)}


def restore(load: Load, to_version: str, trigger) -> dict:
    started = time.monotonic()
    details = trigger()
    seconds = load.until(to_version, started)
    time.sleep(1.0)  # the old bento is stopped about a second after the switch: count that too
    return {"restore_s": round(seconds, 2), **load.window(started, time.monotonic()), **(details or {})}


def wait_for_spare(settings, timeout: float = 300) -> dict:
    """The served bento's first ready spare (the supervisor starts one after every deploy)."""
    from stockops.serving import runtime, state

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [s for s in state.current(settings).get("spares", []) if runtime.bento_ready(s["upstream"])]
        if ready:
            return ready[0]
        time.sleep(0.5)
    raise TimeoutError(f"no spare within {timeout:.0f} s")


def tree_of(pid: int) -> list:
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def heal(load: Load, settings, version: str, component: str, settle: bool = True) -> dict:
    """Kill ``component`` under load; seconds until answering again, failures, and the supervisor's incident."""
    import signal

    from stockops.serving import runtime, state
    from stockops.serving.supervisor import incidents

    served = state.current(settings)
    if component == "proxy":
        pids = [runtime.proxy_record(settings)["pid"]]
    else:
        spare = wait_for_spare(settings)
        served = state.current(settings)
        pids = [served["pid"]] + ([spare["pid"]] if component == "bento+spare" else [])
    known = len(incidents(settings))
    if settle:
        time.sleep(2)
    killed = time.monotonic()
    for pid in pids:  # the whole process tree: BentoML's workers outlive a killed arbiter otherwise
        for proc in tree_of(int(pid)):
            proc.send_signal(signal.SIGKILL)
    time.sleep(0.3)  # answers sent before the kill are not "answering again"
    seconds = load.until(version, killed + 0.3) + 0.3
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        closed = [i for i in incidents(settings)[known:] if i["status"] == "recovered"]
        if closed:
            break
        time.sleep(0.5)
    time.sleep(1.0)
    incident = closed[-1] if closed else {}
    return {"answering_again_s": round(seconds, 2), **load.window(killed, time.monotonic()),
            "killed_pids": pids, "incident": {k: incident.get(k) for k in ("cause", "downtime_s", "detection_s",
                                                                            "action")}}


def supervisor_pid(settings) -> int:
    from stockops.serving import state

    return int(state.read(state.supervisor_record_path(settings), "")["pid"])


def new_supervisor(settings, old: int, timeout: float = 120) -> int:
    """The pid of the supervisor that replaced ``old``, once it beats (its start-up grace over)."""
    from stockops.serving import state

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = state.read(state.supervisor_record_path(settings), "")
        if record.get("pid") not in (None, old) and float(record.get("busy_until") or 0) <= time.time():
            return int(record["pid"])
        time.sleep(0.2)
    raise TimeoutError(f"no new supervisor beating within {timeout:.0f} s")


def supervisor_cases(load: Load, settings, version: str) -> dict:
    """The supervisor killed (then bento+spare), hung, and MLflow hung (then bento+spare), with its watcher on."""
    import signal
    import subprocess
    import sys

    from stockops.core.processes import free_port, http_json, stop_pid_tree, venv_bin, wait_until
    from stockops.launch.components import watch

    out: dict = {}
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])  # "Airflow" for watch()
    watcher = threading.Thread(target=watch, args=(settings, stand_in, 1.0), daemon=True)
    watcher.start()
    mlflow = None
    try:
        wait_for_spare(settings)
        first = supervisor_pid(settings)
        os.kill(first, signal.SIGKILL)
        out["supervisor killed, then bento+spare"] = heal(load, settings, version, "bento+spare", settle=False)
        new_supervisor(settings, first)
        print(f"supervisor killed, then bento+spare: {out['supervisor killed, then bento+spare']}", flush=True)

        wait_for_spare(settings)
        hung = supervisor_pid(settings)
        stopped = time.monotonic()
        os.kill(hung, signal.SIGSTOP)
        replaced = new_supervisor(settings, hung)
        seconds = time.monotonic() - stopped
        out["supervisor hung"] = {"new_supervisor_beating_s": round(seconds, 2), "replaced_by": replaced,
                                  **load.window(stopped, time.monotonic())}
        print(f"supervisor hung: {out['supervisor hung']}", flush=True)

        # MLflow as a server the supervisor talks to, then hung
        port = free_port()
        mlflow = subprocess.Popen([venv_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                                   "--backend-store-uri", settings.mlflow_tracking_uri, "--workers", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: http_json(f"http://127.0.0.1:{port}/health")[0] == 200, timeout=120, what="mlflow server")
        os.environ["STOCKOPS_MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"  # what the next supervisor uses
        wait_for_spare(settings)
        old = supervisor_pid(settings)
        os.kill(old, signal.SIGKILL)
        new_supervisor(settings, old)
        wait_for_spare(settings)
        for proc in tree_of(mlflow.pid):
            proc.send_signal(signal.SIGSTOP)
        time.sleep(4)  # a reconcile round is now stuck on MLflow
        out["MLflow hung, then bento+spare"] = heal(load, settings, version, "bento+spare")
        print(f"MLflow hung, then bento+spare: {out['MLflow hung, then bento+spare']}", flush=True)
    finally:
        if mlflow is not None:
            for proc in tree_of(mlflow.pid):
                proc.send_signal(signal.SIGCONT)
            stop_pid_tree(mlflow.pid, grace=5)
        os.environ.pop("STOCKOPS_MLFLOW_TRACKING_URI", None)
        stand_in.kill()
        watcher.join(timeout=10)
    return out


def main() -> None:
    import sys

    from stockops.core.processes import free_port

    heal_only = "--heal-only" in sys.argv[1:]

    home = Path(tempfile.mkdtemp(prefix="stockops-bench-restore-"))
    os.environ.update(STOCKOPS_HOME=str(home / "home"), STOCKOPS_SOURCE="replay", STOCKOPS_TRAIN_PROFILE="small",
                      STOCKOPS_SERVE_PORT=str(free_port()), AIRFLOW_HOME=str(home / "airflow"),
                      MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    from stockops.core.airflow_env import airflow_environment
    from stockops.core.settings import get_settings
    from stockops.data import store_for
    from stockops.ingest import ingest_day
    from stockops.launch.components import stop_process_tree
    from stockops.launch.demo import train_in_process
    from stockops.launch.local import LocalPlatform
    from stockops.serving import market_frame, request_body, stop_serving
    from stockops.serving.rollback import rollback

    settings = get_settings()
    os.environ.update(airflow_environment(settings))
    ingest_day("2026-11-20", settings=settings)
    train_in_process(settings, reason="bench: v1", force_promote=True)  # a rollback needs two promoted versions
    train_in_process(settings, reason="bench: v2", force_promote=True)
    body = request_body(store_for(settings).load(), market=market_frame(settings), rows=90)
    results: dict = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                     "load": {"clients": 2, "interval_s": 0.05}, "goal_s": GOAL_S}
    platform = LocalPlatform(settings, port=free_port(), mlflow_port=free_port())
    proc = None
    try:
        with Load(settings.serve_url, body) as load:
            time.sleep(2)
            def in_process() -> None:
                rollback("1", "bench: in-process rollback", settings=settings)

            results["in_process"] = restore(load, "1", in_process)
            print(f"in-process rollback v2 -> v1: {results['in_process']}", flush=True)
            rollback("2", "bench: back to v2 for the next measurement", settings=settings)

            results["heal"] = {}
            for component in ("bento", "proxy", "bento+spare"):
                results["heal"][component] = heal(load, settings, "2", component)
                print(f"{component} killed: {results['heal'][component]}", flush=True)
            cases = supervisor_cases(load, settings, "2")
            results["heal"].update({k: v for k, v in cases.items() if "answering_again_s" in v})
            results["supervisor_hung"] = cases["supervisor hung"]
            if heal_only:
                return finish(results, heal_only=True)

            proc = platform.start()
            platform.wait_healthy(proc, timeout=240)
            platform.ensure_dags_ready(["stock_rollback"], timeout=180)
            token = platform.api_token()
            time.sleep(2)

            def through_airflow() -> dict:
                run_id = platform.trigger("stock_rollback", token, {"reason": "bench: REST rollback", "version": "1"})
                return {"run_id": run_id}

            measured = restore(load, "1", through_airflow)
            state = platform.wait_for_run("stock_rollback", measured["run_id"], token, timeout=300)
            tasks = platform.api(f"dags/stock_rollback/dagRuns/{measured['run_id']}/taskInstances", token)
            measured["run_state"] = state
            measured["tasks_s"] = {t["task_id"]: t["duration"] for t in tasks["task_instances"]}
            results["airflow_rest"] = measured
            print(f"rollback through Airflow's REST API, v2 -> v1: {measured}", flush=True)
    finally:
        if proc is not None:
            stop_process_tree(proc)
        stop_serving(settings)
    finish(results)


def finish(results: dict, heal_only: bool = False) -> None:
    if heal_only:  # keep the Airflow path's numbers from the last full run
        previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        for key in ("airflow_rest", "ratio_airflow_to_in_process", "goal_met"):
            if key in previous:
                results[key] = previous[key]
        results["airflow_rest_measured_at"] = previous.get("airflow_rest_measured_at", previous.get("measured_at"))
    else:
        results["airflow_rest_measured_at"] = results["measured_at"]
    airflow, floor = results["airflow_rest"], results["in_process"]
    results["ratio_airflow_to_in_process"] = round(airflow["restore_s"] / floor["restore_s"], 2)
    results["goal_met"] = airflow["restore_s"] < GOAL_S and airflow["failed"] == 0 and floor["failed"] == 0
    print(f"\n{'path':<14} {'restore s':>9} {'requests':>9} {'failed':>7}")
    for name in ("in_process", "airflow_rest"):
        r = results[name]
        print(f"{name:<14} {r['restore_s']:>9.2f} {r['requests']:>9} {r['failed']:>7}")
    print(f"airflow / in-process: {results['ratio_airflow_to_in_process']}x; goal (< {GOAL_S:.0f} s, 0 failed): "
          f"{'met' if results['goal_met'] else 'NOT met'}")
    print(f"\n{'killed':<12} {'answering again s':>17} {'requests':>9} {'failed':>7} {'incident downtime s':>19}")
    for name, r in results["heal"].items():
        print(f"{name:<12} {r['answering_again_s']:>17.2f} {r['requests']:>9} {r['failed']:>7} "
              f"{r['incident']['downtime_s'] or float('nan'):>19}")
    results["heal_goal_met"] = {name: r["answering_again_s"] <= HEAL_GOAL_S for name, r in results["heal"].items()}
    print(f"heal goal (answering again <= {HEAL_GOAL_S:.0f} s): {results['heal_goal_met']}")
    hung = results.get("supervisor_hung", {})
    print(f"supervisor hung: replaced after {hung.get('new_supervisor_beating_s')} s, "
          f"{hung.get('failed')} of {hung.get('requests')} requests failed meanwhile")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
