"""Lead time for changes, measured end to end: a new trading day's ingest → the new champion answering.

Why: DORA's lead time (elite: under one hour) is, for this platform, the time from a new trading
day's data to a model trained on it answering users for every watchlist ticker — or to the
gate's refusal, when the new model is not better. The goal (issue): under 10 minutes on this
2-core machine, for the whole watchlist (18 tickers by default).

What: for each setup, in a fresh home with the default model profile and the default watchlist:
  embedded  ``airflow standalone`` (SQLite, LocalExecutor) and local serving: what ``make run`` runs;
  celery    ``stockops.launch.cluster.CeleryPlatform``: api-server, scheduler, dag-processor, triggerer and
            a Celery worker as separate processes, PostgreSQL metadata DB, Redis broker, MLflow
            server on PostgreSQL, the serving agent (the compose layout, without containers).
The platform starts and runs its first cycle (ingest of every ticker → the first champion); once
it is idle, ``stock_ingest`` is triggered over the REST API for a later trading day. Each
ticker's publish updates its Asset, and ``stock_train`` (any Asset, one run at a time) starts on
the first of them: a day's publishes coalesce into one or more training runs, and only a run
whose ``load_snapshots`` started after the last publish trains on every ticker's new day (the
*complete* run). Measured from the trigger:
  * promoted: until ``/forecast/batch`` (polled every second, a smoke request kept out of the
    prediction log) answers every ticker from a new model version trained on exactly the snapshots
    it serves (the answers' ``training_snapshot_hash`` equals the hash over the served snapshots'
    hashes, as ``stockops.training.load_snapshots`` computes it) — also the first moment any new
    version answered for every ticker, which can be a model of a partial day;
  * refused: until the end of the complete run's ``gate`` task;
and every task's queue wait and run time (mapped tasks: per ticker, summed up per task), the
training share of the lead time, and the CPU that other processes on the machine used meanwhile
(machine busy time minus this run's processes, found by their ``STOCKOPS_HOME``).
The celery setup needs PostgreSQL and Redis on 127.0.0.1 and is skipped (and says so) without them.
With ``--gate promote`` the gate lets any model through (margin −1, tolerance 1), to time the
whole path to a new version answering. Results: bench/results/lead_time.json (default gate),
bench/results/lead_time_promote.json.

    .venv/bin/python bench/lead_time.py [--setups embedded,celery] [--gate default|promote]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "lead_time.json"

GOAL_S = 600.0
POLL_LIMIT_S = 1800.0
DAGS = ["stock_ingest", "stock_train", "stock_monitor"]
TRAINING_TASKS = ("features", "train", "evaluate")  # what a warm start could shorten
PUBLISHING_TASKS = ("chunk", "review")  # stock_ingest's tasks that publish snapshots (a chunk; a person's approval)


def _session_days() -> tuple[str, str]:
    """Logical dates of the first cycle and of the new day.

    On unpause ``stock_ingest``'s own schedule (``0 22 * * 1-5``) runs its latest tick by itself: the
    first cycle triggers that same session at noon (the replay serves both runs the same market day), so
    nothing the scheduler starts on its own can publish the new day early. The new day is the next
    NYSE session, as early on that day as a logical date in the past allows.
    """
    from datetime import timedelta

    from stockops.data.calendar import closed_reason

    now = datetime.now(UTC)
    first = now.date() if now.hour >= 22 else now.date() - timedelta(days=1)
    while closed_reason(first):
        first -= timedelta(days=1)
    new = first + timedelta(days=1)
    while closed_reason(new):
        new += timedelta(days=1)
    if new > now.date():
        raise SystemExit(f"the session after {first} ({new}) has not begun yet: run this bench on a trading day")
    return f"{first}T12:00:00Z", f"{new}T00:05:00Z"  # not 22:00: that run exists, and the day is what counts


def _runs(platform, token, dag_id: str) -> list[dict]:
    return platform.api(f"dags/{dag_id}/dagRuns?order_by=-run_after&limit=20", token)["dag_runs"]


def _task_instances(platform, token, dag_id: str, run_id: str) -> list[dict]:
    return platform.api(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000", token)["task_instances"]


def _queued_asset_events(platform, token, dag_id: str) -> int:
    """Asset events waiting for a run of ``dag_id`` (a run deferred by ``max_active_runs`` is created later)."""
    try:
        return int(platform.api(f"dags/{dag_id}/assets/queuedEvents", token).get("total_entries", 0))
    except Exception:  # noqa: BLE001 - 404 when none are queued
        return 0


def wait_idle(platform, token, timeout: float = 1500, quiet_s: float = 20.0) -> None:
    """Until every stockops DAG has runs, none is queued or running and no asset event waits for a run, for
    ``quiet_s`` on end (the scheduler creates a deferred asset-triggered run a moment after the last one ends)."""
    deadline, quiet_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        states = [r["state"] for d in DAGS for r in _runs(platform, token, d)]
        idle = (_runs(platform, token, "stock_train") and not {"queued", "running"} & set(states)
                and not any(_queued_asset_events(platform, token, d) for d in DAGS[1:]))
        quiet_since = (quiet_since or time.monotonic()) if idle else None
        if quiet_since is not None and time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(3)
    raise TimeoutError("the platform did not become idle")


def served(url: str) -> dict | None:
    """Every watchlist ticker's answer from ``/forecast/batch`` (a smoke request: not in the prediction log):
    the versions answering, and whether that model was trained on exactly the snapshots served now."""
    from stockops.core.processes import http_json

    try:
        status, body = http_json(f"{url}/forecast/batch", {}, timeout=10, headers={"X-Stockops-Smoke": "1"})
    except OSError:
        return None
    if status != 200 or not isinstance(body, list):
        return None
    answered = [e for e in body if "error" not in e]
    combined = hashlib.sha256("".join(f"{e['ticker']}:{e['snapshot_hash']}\n" for e in sorted(
        answered, key=lambda e: e["ticker"])).encode()).hexdigest()
    return {"tickers": len(body), "answered": len(answered), "versions": sorted({e["model_version"] for e in answered}),
            "snapshot_days": sorted({e["snapshot_last_date"] for e in answered}),
            "trained_on_served": bool(answered) and all(e["training_snapshot_hash"] == combined for e in answered)}


class CpuMeter:
    """CPU seconds of this run's processes (this one, its descendants, anything with its ``STOCKOPS_HOME``) and of
    the whole machine, sampled every ``interval`` s; a process is looked at once to decide whether it is ours."""

    def __init__(self, home: str, interval: float = 3.0):
        self.home, self.interval = home, interval
        self.ours: dict[tuple[int, float], float] = {}  # (pid, create time) -> CPU s at the last sample
        self.first: dict[tuple[int, float], float] = {}
        self.verdict: dict[tuple[int, float], bool] = {}
        self.stop = threading.Event()

    def _machine(self) -> float:
        import psutil

        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)

    def _sample(self) -> None:
        import psutil

        me = os.getpid()
        mine = {me, *(p.pid for p in psutil.Process(me).children(recursive=True))}
        for proc in psutil.process_iter(["pid", "create_time"]):
            key = (proc.info["pid"], proc.info["create_time"])
            try:
                if key not in self.verdict:
                    self.verdict[key] = key[0] in mine or proc.environ().get("STOCKOPS_HOME", "") == self.home
                if self.verdict[key]:
                    t = proc.cpu_times()
                    self.ours[key] = t.user + t.system
                    if key not in self.first:  # born during the window: all its CPU counts
                        self.first[key] = self.ours[key] if key[1] < self.t0 else 0.0
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                self.verdict.setdefault(key, False)

    def __enter__(self) -> CpuMeter:
        self.t0, self.machine0, self.clock0 = time.time(), self._machine(), time.monotonic()
        self._sample()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            self._sample()

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()
        self.seconds = time.monotonic() - self.clock0
        self.machine = self._machine() - self.machine0
        self.own = sum(self.ours[k] - self.first[k] for k in self.ours)

    def summary(self) -> dict:
        foreign = max(0.0, self.machine - self.own)
        return {"window_s": round(self.seconds, 1), "machine_busy_cpu_s": round(self.machine, 1),
                "this_run_cpu_s": round(self.own, 1), "other_processes_cpu_s": round(foreign, 1),
                "other_processes_cores": round(foreign / self.seconds, 2) if self.seconds else None,
                "note": "this run's CPU is sampled every few seconds: a process that ended between samples loses "
                        "its last seconds to the 'other processes' column, which is therefore an upper bound"}


def breakdown(platform, token, dag_id: str, run_id: str, t0: datetime, label: str = "") -> list[dict]:
    """Each task instance (mapped ones per ticker): seconds from the trigger to queued and to its end, queue wait,
    run time (API timestamps)."""
    rows = []
    for ti in sorted(_task_instances(platform, token, dag_id, run_id), key=lambda t: t["start_date"] or "9"):
        start = datetime.fromisoformat(ti["start_date"]) if ti["start_date"] else None
        end = datetime.fromisoformat(ti["end_date"]) if ti.get("end_date") else None
        queued = datetime.fromisoformat(ti["queued_when"]) if ti.get("queued_when") else None
        rows.append({"dag": dag_id, "run": label or run_id, "task": ti["task_id"], "map_index": ti.get("map_index", -1),
                     "label": ti.get("rendered_map_index"), "state": ti["state"],
                     "queued_at_s": round((queued - t0).total_seconds(), 1) if queued else None,
                     "start_at_s": round((start - t0).total_seconds(), 1) if start else None,
                     "end_at_s": round((end - t0).total_seconds(), 1) if end else None,
                     "wait_s": round((start - queued).total_seconds(), 1) if start and queued else None,
                     "run_s": round(ti["duration"], 1) if ti["duration"] is not None else None})
    return rows


def by_task(rows: list[dict]) -> list[dict]:
    """Task instances summed up per (run, task): how many, their states, first queued, last end, waits, run times."""
    out: dict[tuple[str, str], dict] = {}
    for r in rows:
        s = out.setdefault((r["run"], r["task"]), {"dag": r["dag"], "run": r["run"], "task": r["task"], "n": 0,
                                                   "states": {}, "first_queued_at_s": None, "last_end_at_s": None,
                                                   "wait": [], "run_s": []})
        s["n"] += 1
        s["states"][r["state"]] = s["states"].get(r["state"], 0) + 1
        if r["queued_at_s"] is not None:
            s["first_queued_at_s"] = min(x for x in (s["first_queued_at_s"], r["queued_at_s"]) if x is not None)
        if r["end_at_s"] is not None:
            s["last_end_at_s"] = max(x for x in (s["last_end_at_s"], r["end_at_s"]) if x is not None)
        if r["wait_s"] is not None:
            s["wait"].append(r["wait_s"])
        if r["run_s"] is not None:
            s["run_s"].append(r["run_s"])
    summary = []
    for s in out.values():
        wait, run = s.pop("wait"), s.pop("run_s")
        summary.append({**s, "wait_mean_s": round(sum(wait) / len(wait), 1) if wait else None,
                        "wait_max_s": max(wait) if wait else None,
                        "run_mean_s": round(sum(run) / len(run), 1) if run else None,
                        "run_max_s": max(run) if run else None, "run_sum_s": round(sum(run), 1) if run else None})
    return summary


@dataclass
class NewDay:
    """What :func:`watch_new_day` saw: how it ended, when (seconds from the trigger), the complete training run."""

    outcome: str | None = None
    end_s: float | None = None
    first_new_s: float | None = None
    complete_id: str | None = None
    last_publish: datetime | None = None
    polls: list[dict] = field(default_factory=list)


def watch_new_day(api, token: str, run_id: str, t0: datetime, clock: float, trains_before: set[str],
                  old_versions: set[str], answer_now) -> NewDay:
    """Poll a new day from its ingest run ``run_id`` until every ticker answers from a new version trained on the
    day's published snapshots, the gate refuses it, or a training run fails (``POLL_LIMIT_S`` at most).

    ``api``: anything with the platforms' ``api(path, token)`` (one machine, Celery, or the namespace hosts'
    relay); ``answer_now()``: the endpoint's :func:`served` answer."""
    seen = NewDay()
    while time.monotonic() - clock < POLL_LIMIT_S and seen.outcome is None:
        now = time.monotonic() - clock
        if seen.last_publish is None:
            ingest = api.api(f"dags/stock_ingest/dagRuns/{run_id}", token)
            if ingest["state"] in ("success", "failed"):
                publishes = [t for t in _task_instances(api, token, "stock_ingest", run_id)
                             if t["task_id"] in PUBLISHING_TASKS and t.get("end_date")]
                seen.last_publish = max((datetime.fromisoformat(t["end_date"]) for t in publishes), default=t0)
        new = [r for r in _runs(api, token, "stock_train") if r["dag_run_id"] not in trains_before]
        answer = answer_now()
        fresh = answer and answer["answered"] == answer["tickers"] and not set(answer["versions"]) & old_versions
        if fresh and seen.first_new_s is None:
            seen.first_new_s = now
            seen.polls.append({"at_s": round(now, 1), "event": "a new version answers for every ticker", **answer})
        if fresh and answer["trained_on_served"] and seen.last_publish is not None:
            seen.outcome, seen.end_s = f"v{','.join(answer['versions'])} answering for every ticker", now
            seen.polls.append({"at_s": round(now, 1), "event": "trained on the served snapshots", **answer})
            break
        for run in new:
            tis = {t["task_id"]: t for t in _task_instances(api, token, "stock_train", run["dag_run_id"])}
            loaded = tis.get("load_snapshots", {}).get("start_date")
            complete = seen.last_publish is not None and loaded and datetime.fromisoformat(loaded) >= seen.last_publish
            if complete:
                seen.complete_id = run["dag_run_id"]
            state = {k: t["state"] for k, t in tis.items()}
            if complete and state.get("gate") == "success" and state.get("build") == "skipped":
                seen.outcome = "gate refused"
                seen.end_s = (datetime.fromisoformat(tis["gate"]["end_date"]) - t0).total_seconds()
            elif run["state"] == "failed":
                seen.outcome = f"training run {run['dag_run_id']} failed"
        time.sleep(1.0)
    if seen.outcome is None:
        seen.outcome = f"nothing after {POLL_LIMIT_S:.0f} s"
    return seen


def settle(api, token: str, complete_id: str | None, limit_s: float = 300) -> None:
    """Let the complete training run end (a deploy's bookkeeping, verify) before it is read."""
    started = time.monotonic()
    while complete_id and time.monotonic() - started < limit_s and api.api(
            f"dags/stock_train/dagRuns/{complete_id}", token)["state"] in ("queued", "running"):
        time.sleep(2)


def measure(setup: str, gate: str, env: dict[str, str] | None = None, days: tuple[str, str] | None = None,
            after=None) -> dict:
    """One setup's lead time in a fresh home. ``env``: settings beside the defaults (another watchlist and source);
    ``days``: the logical dates of the first cycle and of the new day (default: today's sessions, for the replay);
    ``after(settings, platform, token)``: measured while the platform still runs, kept under ``after``."""
    from stockops.core.processes import free_port
    from stockops.core.settings import get_settings
    from stockops.model.gate import PERMISSIVE_ENV

    home = Path(tempfile.mkdtemp(prefix=f"stockops-bench-lead-{setup}-"))
    for name in [k for k in os.environ if k.startswith("STOCKOPS_")]:
        del os.environ[name]  # the default watchlist and settings, whatever the caller's shell holds
    os.environ.update({"STOCKOPS_HOME": str(home / "home"), "AIRFLOW_HOME": str(home / "airflow"),
                       "STOCKOPS_SOURCE": "replay", "STOCKOPS_SERVE_PORT": str(free_port()),
                       "STOCKOPS_TRAIN_PROFILE": "default", **(env or {})})
    if gate == "promote":  # time the whole path to a new version answering: the gate lets any model through
        os.environ.update(PERMISSIVE_ENV)  # every threshold open: the timing covers build, deploy, promote
    settings = get_settings()
    first_day, new_day = days or _session_days()
    if setup == "celery":
        from stockops.launch.cluster import CeleryPlatform, unreachable_services

        missing = unreachable_services()
        if missing:
            return {"skipped": "; ".join(missing)}
        platform = CeleryPlatform(settings, port=free_port(), mlflow_port=free_port())
    else:
        from stockops.launch.local import LocalPlatform

        platform = LocalPlatform(settings, port=free_port(), mlflow_port=free_port())
    started = time.monotonic()
    proc = platform.start()
    try:
        platform.wait_healthy(proc, timeout=300)
        platform.ensure_dags_ready(DAGS, timeout=240)
        token = platform.api_token()
        startup_s = time.monotonic() - started
        clock = time.monotonic()
        # the first cycle: the day the scheduler ingests by itself on unpause (the latest complete interval),
        # triggered too so that it starts now; the replay serves the same market day to both runs
        first = platform.trigger("stock_ingest", token, logical_date=first_day)
        wait_idle(platform, token)
        first_cycle_s = time.monotonic() - clock
        before = served(settings.serve_url)
        print(f"{setup}: started in {startup_s:.0f} s; first cycle (ingest of {len(settings.tickers)} tickers, "
              f"training, first champion) {first_cycle_s:.0f} s; serving before: {before}", flush=True)
        trains_before = {r["dag_run_id"] for r in _runs(platform, token, "stock_train")}
        old_versions = set(before["versions"]) if before else set()

        t0 = datetime.now(UTC)
        clock = time.monotonic()
        with CpuMeter(str(settings.home)) as cpu:
            run_id = platform.trigger("stock_ingest", token, logical_date=new_day)
            seen = watch_new_day(platform, token, run_id, t0, clock, trains_before, old_versions,
                                 lambda: served(settings.serve_url))
        # the run goes on after the endpoint switched (deploy's bookkeeping, verify): let it end before the
        # breakdown is read and the platform stopped (a deploy killed midway leaves a bento no state file names)
        settle(platform, token, seen.complete_id)
        outcome, end_s, first_new_s, complete_id, last_publish, polls = seen.outcome, seen.end_s, seen.first_new_s, \
            seen.complete_id, seen.last_publish, seen.polls
        extra = after(settings, platform, token) if after is not None and end_s else None
        train_runs = sorted((r for r in _runs(platform, token, "stock_train") if r["dag_run_id"] not in trains_before),
                            key=lambda r: r["run_after"])
        tasks = breakdown(platform, token, "stock_ingest", run_id, t0, "ingest")
        for i, run in enumerate(train_runs, 1):
            label = f"train #{i}" + (" (complete)" if run["dag_run_id"] == complete_id else "")
            tasks += breakdown(platform, token, "stock_train", run["dag_run_id"], t0, label)
        summary = by_task(tasks)
        decisive = [s for s in summary if s["run"].endswith("(complete)")]
        training_s = sum(s["run_sum_s"] or 0 for s in decisive if s["task"] in TRAINING_TASKS)
        train_s = sum(s["run_sum_s"] or 0 for s in decisive if s["task"] == "train")
        all_train_runs_s = sum(s["run_sum_s"] or 0 for s in summary if s["dag"] == "stock_train")
        return {"first_day": first_day, "new_day": new_day, "startup_s": round(startup_s, 1), "first_cycle_s": round(first_cycle_s, 1), "first_cycle_run": first,
                "tickers": len(settings.tickers), "served_before": before, "outcome": outcome,
                "lead_time_s": round(end_s, 1) if end_s else None,
                "first_new_version_everywhere_s": round(first_new_s, 1) if first_new_s else None,
                "last_publish_at_s": round((last_publish - t0).total_seconds(), 1) if last_publish else None,
                "train_runs": [{"run_id": r["dag_run_id"], "state": r["state"], "complete": r["dag_run_id"] == complete_id}
                               for r in train_runs],
                "training_share": {
                    "train_task_s": round(train_s, 1), "features_train_evaluate_s": round(training_s, 1),
                    "of_lead_time": round(training_s / end_s, 3) if end_s else None,
                    "train_task_of_lead_time": round(train_s / end_s, 3) if end_s else None,
                    "every_stock_train_task_all_runs_s": round(all_train_runs_s, 1)},
                "cpu": cpu.summary(), "polls": polls, "after": extra, "tasks_summary": summary, "tasks": tasks,
                "goal_met": bool(end_s and end_s < GOAL_S)}
    finally:
        if hasattr(platform, "stop"):
            platform.stop()
        else:
            from stockops.launch.components import stop_process_tree

            stop_process_tree(proc)
        from stockops.serving import stop_serving

        stop_serving(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", default="embedded,celery")
    parser.add_argument("--gate", choices=("default", "promote"), default="default",
                        help="default thresholds (a new day's model is usually refused), or let it through")
    args = parser.parse_args()
    results = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
               "goal_s": GOAL_S, "gate": args.gate}
    for setup in args.setups.split(","):
        results[setup] = measure(setup, args.gate)
        r = results[setup]
        if r.get("skipped"):
            print(f"\n{setup}: skipped: {r['skipped']}", flush=True)
            continue
        share = r["training_share"]
        print(f"\n{setup}: lead time {r['lead_time_s']} s ({r['outcome']}; goal < {GOAL_S:.0f} s: "
              f"{'met' if r['goal_met'] else 'NOT met'}); a new version answered every ticker first at "
              f"{r['first_new_version_everywhere_s']} s; last publish at +{r['last_publish_at_s']} s; "
              f"{len(r['train_runs'])} training run(s)", flush=True)
        print(f"  training (features + train + evaluate of the complete run) {share['features_train_evaluate_s']} s"
              f" = {share['of_lead_time']} of the lead time (train task alone {share['train_task_s']} s); other "
              f"processes used {r['cpu']['other_processes_cores']} cores on average meanwhile", flush=True)
        print(f"  {'run':<18} {'task':<15} {'n':>3} {'states':<20} {'queued at':>9} {'ended at':>9} {'wait mean/max':>14} "
              f"{'run mean/max/sum':>18}")
        for t in r["tasks_summary"]:
            states = ",".join(f"{k}:{v}" for k, v in t["states"].items())
            print(f"  {t['run']:<18} {t['task']:<15} {t['n']:>3} {states:<20} {t['first_queued_at_s']!s:>9} "
                  f"{t['last_end_at_s']!s:>9} {t['wait_mean_s']!s:>6}/{t['wait_max_s']!s:<7} "
                  f"{t['run_mean_s']!s:>6}/{t['run_max_s']!s}/{t['run_sum_s']!s}")
    measured = [s for s in args.setups.split(",") if results[s].get("lead_time_s")]
    if len(measured) == 2:
        results["ratio_celery_to_embedded"] = round(results["celery"]["lead_time_s"]
                                                    / results["embedded"]["lead_time_s"], 2)
        print(f"\ncelery / embedded: {results['ratio_celery_to_embedded']}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    path = RESULTS if args.gate == "default" else RESULTS.with_name(f"lead_time_{args.gate}.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
