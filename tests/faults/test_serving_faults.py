"""Fault drills on the real serving control plane: real bentos, the real proxy and supervisor, on loopback.

One home for the module: v1 trained (small profile), promoted and served; v2 trained and its
bento built. Each drill breaks something on purpose — a deploy or rollback SIGKILLed at each
step, MLflow refusing the alias move, a rollback racing a promotion, the bento or the proxy
killed, ``current.json`` or the snapshot corrupted — and ends with the invariant: the stable
address serves ``@champion``, which is the audit log's last change, and no process the serving
side started is left untracked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from stockops.core.processes import http_json, pid_alive

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

CONVERGE_S = 30  # the supervisor checks every second; a reconcile may start a bento (~10-20 s here)


@pytest.fixture(scope="module")
def plane(model_home, tmp_path_factory):
    """The session's two small models: v1 (champion) served, v2's bento built; everything stopped afterwards."""
    from stockops.serving import serve_champion, stop_serving

    mp = pytest.MonkeyPatch()
    settings = model_home.copy_to(mp, tmp_path_factory.mktemp("faults") / "home")
    try:
        assert serve_champion(settings, reason="faults: serve v1")["version"] == "1"
        yield settings, model_home.bentos
    finally:
        stop_serving(settings)
        mp.undo()


def champion(settings) -> str:
    from stockops import registry

    registry.setup(settings)
    return str(registry.champion_version(settings).version)


def converged(settings, timeout: float = CONVERGE_S) -> dict:
    """The invariant, waited for: served == @champion == last audit change, answering, no orphan process."""
    from stockops.serving import state, verify

    seen = verify(settings, champion(settings), timeout=timeout)
    # A spare the supervisor is starting is owned but named nowhere until it is ready: allow it a bento's start
    # (a real orphan is stopped by the supervisor's sweep within seconds). Under a loaded machine a start took > 30 s.
    deadline = time.monotonic() + max(timeout, settings.serve_ready_timeout_s)
    while state.orphans(settings) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state.orphans(settings) == [], "a process the serving side started is named by no state file"
    status, answer = http_json(f"{settings.serve_url}/predict", _body(settings), timeout=30)
    assert status == 200 and answer["model_version"] == seen["champion"], (status, answer)
    return seen


def _body(settings) -> dict:
    from stockops.data import store_for
    from stockops.serving import market_frame, request_body

    return request_body(store_for(settings).load(), market=market_frame(settings), rows=90)


def change_in_child(settings, kind: str, version: str, bentos: dict, kill_at: str = "", timeout: float = 240):
    """A promotion or rollback in a separate process (as an Airflow task runs it); SIGKILLed at ``kill_at``."""
    code = ("import sys; from stockops.core.settings import get_settings; from stockops.serving import deploy\n"
            f"deploy(get_settings(), {bentos[version]['bento_tag']!r}, {version!r}, kind={kind!r}, "
            f"window={bentos[version]['window']}, reason='faults: {kind} to v{version}')")
    env = {**os.environ, "STOCKOPS_FAULT_KILL_AT": kill_at}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


def other(settings) -> str:
    return "2" if champion(settings) == "1" else "1"


# "started" (the new bento started, not yet health-checked) recovers exactly as "checked" does: the candidate is
# an orphan, the old bento serves on; the drill kills at the later of the two.
@pytest.mark.parametrize("step", ["checked", "switched", "aliased"])
def test_a_change_killed_at_any_step_converges_to_one_truth(plane, step):
    from stockops.serving import deploys

    settings, bentos = plane
    before = champion(settings)
    target = other(settings)
    kind = "promotion" if target == "2" else "rollback"
    recorded = len(deploys(settings))
    done = change_in_child(settings, kind, target, bentos, kill_at=step)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    seen = converged(settings)
    # killed before the alias moved: the old champion serves again; after: the new one, with its audit entry
    assert seen["champion"] == (target if step == "aliased" else before)
    # the killed attempt is in the deploy log (DORA counts it): completed by reconcile, as what it came to
    (attempt,) = _wait(lambda: [d for d in deploys(settings)[recorded:] if d.get("interrupted")], 15,
                       "the killed attempt's record")
    assert attempt["kind"] == kind and attempt["version"] == target
    assert attempt["outcome"] == ("succeeded" if step == "aliased" else "failed"), attempt


def test_mlflow_refusing_the_alias_move_switches_back_and_says_so(plane, tmp_path):
    settings, bentos = plane
    before, target = champion(settings), other(settings)
    db = settings.mlflow_tracking_uri.removeprefix("sqlite:///")
    code = ("from stockops.core.settings import get_settings; from stockops.serving import deploy, DeployError\n"
            "try:\n"
            f"    deploy(get_settings(), {bentos[target]['bento_tag']!r}, {target!r}, kind='promotion', "
            f"window={bentos[target]['window']}, reason='faults: read-only registry')\n"
            "except DeployError as exc:\n    print('REFUSED', exc)\n")
    # the same database, opened read-only (root ignores file modes): every registry write fails
    env = {**os.environ, "STOCKOPS_MLFLOW_TRACKING_URI": f"sqlite:///file:{db}?mode=ro&uri=true"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert "REFUSED" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert "@champion could not be moved" in done.stdout and "switched back" in done.stdout
    assert converged(settings)["champion"] == before


def test_a_rollback_racing_a_promotion_ends_consistent(plane):
    settings, bentos = plane
    target = other(settings)
    results: dict = {}

    def run(kind, version):
        results[kind] = change_in_child(settings, kind, version, bentos)

    threads = [threading.Thread(target=run, args=("promotion" if target == "2" else "rollback", target)),
               threading.Thread(target=run, args=("rollback" if target == "2" else "promotion", champion(settings)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results.values()), {k: r.stderr[-1500:] for k, r in results.items()}
    converged(settings, timeout=10)


def test_a_split_is_repaired_by_stock_rollback_to_the_champion(plane):
    """With the supervisor stopped nothing converges on its own: the rollback form repairs the split."""
    from stockops.serving import runtime, state
    from stockops.serving.rollback import RollbackRefused, rollback

    settings, bentos = plane
    record = state.read(state.supervisor_record_path(settings), "")
    os.kill(int(record["pid"]), signal.SIGKILL)
    before, target = champion(settings), other(settings)
    done = change_in_child(settings, "promotion" if target == "2" else "rollback", target, bentos, kill_at="switched")
    assert done.returncode == -signal.SIGKILL
    assert state.current(settings)["version"] == target and champion(settings) == before  # the split
    rollback(version=before, reason="faults: repair the split", settings=settings)
    runtime.ensure_supervisor(settings)
    converged(settings)
    with pytest.raises(RollbackRefused, match="already the champion"):
        rollback(version=before, reason="faults: nothing to repair now", settings=settings)


def _wait_answering(settings, since: float, timeout: float = 60) -> tuple[float, int]:
    """Seconds from ``since`` until /predict answers 200 again, and the failed requests meanwhile."""
    failed = 0
    body = _body(settings)
    while time.monotonic() - since < timeout:
        try:
            status, _ = http_json(f"{settings.serve_url}/predict", body, timeout=5)
        except OSError:
            status = 0
        if status == 200:
            return time.monotonic() - since, failed
        failed += 1
        time.sleep(0.2)
    raise AssertionError(f"not answering {timeout} s after the kill")


def _incident(settings, component: str) -> dict:
    from stockops.serving.supervisor import incidents

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = [i for i in incidents(settings) if i["component"] == component and i["status"] == "recovered"]
        if done:
            return done[-1]
        time.sleep(0.2)
    raise AssertionError(f"no recovered {component} incident in {settings.incident_log}")


def _spare_ready(settings, timeout: float = 180) -> dict:
    from stockops.serving import runtime, state

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spares = [s for s in state.current(settings).get("spares", []) if runtime.bento_ready(s["upstream"])]
        if spares:
            return spares[0]
        time.sleep(0.5)
    raise AssertionError(f"the supervisor started no spare within {timeout} s")


@pytest.mark.parametrize("component", ["proxy", "bento"])
def test_a_killed_server_is_brought_back_and_becomes_an_incident(plane, component):
    from stockops.serving import runtime, state

    settings, _ = plane
    converged(settings)
    spare = _spare_ready(settings)
    pid = int((runtime.proxy_record(settings) if component == "proxy" else state.current(settings))["pid"])
    import psutil

    root = psutil.Process(pid)
    tree = [root, *root.children(recursive=True)]  # all of it: BentoML's workers outlive a killed arbiter
    killed = time.monotonic()
    for proc in tree:
        proc.send_signal(signal.SIGKILL)
    seconds, failed = _wait_answering(settings, killed)
    incident = _incident(settings, component)
    assert str(pid) in incident["cause"] and incident["recovered_at"] >= incident["detected_at"]
    assert incident["detection_s"] >= 0 and incident["downtime_s"] > 0
    print(f"{component} killed: answering again after {seconds:.1f} s, {failed} failed requests")
    assert seconds <= 10
    if component == "bento":  # the spare took over; a new spare is started behind it
        assert state.current(settings)["pid"] == spare["pid"] and failed == 0
    converged(settings)


def test_corrupt_current_json_names_the_file_and_keeps_serving(plane):
    from stockops.serving import CorruptState, state

    settings, _ = plane
    converged(settings)
    current = state.current(settings)
    running = {current["pid"], *(s.get("pid") for s in current.get("spares", []))}  # the bento and its spares
    settings.serving_state.write_text('{"upstream": "http://127.0.0.1:')
    with pytest.raises(CorruptState, match="current.json.*reconcile"):
        state.current(settings)
    status, _ = http_json(f"{settings.serve_url}/predict", _body(settings), timeout=30)
    assert status == 200  # the proxy keeps its last good upstream
    converged(settings)
    assert state.current(settings)["pid"] in running, "a running bento is adopted, not a new one started"


def test_a_rollback_on_a_corrupt_snapshot_refuses_and_stops_nothing(plane):
    from stockops.data import store_for
    from stockops.serving import DeployError, state
    from stockops.serving.rollback import rollback

    settings, _ = plane
    converged(settings)
    serving, warm = state.current(settings), state.standby(settings)
    store = store_for(settings)
    target = store.snapshot_path(store.latest().hash)
    original = target.read_bytes()
    try:
        target.write_bytes(original[: len(original) // 2])
        with pytest.raises(DeployError, match="smoke request") as failure:
            rollback(version=other(settings), reason="faults: corrupt snapshot", settings=settings)
        assert target.name in str(failure.value)  # the message names the broken file
    finally:
        target.write_bytes(original)
    assert pid_alive(serving["pid"]) and (not warm or pid_alive(warm["pid"])), "a healthy server was stopped"
    converged(settings)


def test_every_serving_process_listens_on_loopback_with_telemetry_off(plane):
    """The proxy, the supervisor and every bento process (workers included) the serving side started."""
    import psutil

    from stockops.serving import state

    settings, _ = plane
    converged(settings)
    owned = [r for r in state.owned(settings) if state.pid_matches(r)]  # (killed ones linger as zombies)
    assert {r["role"] for r in owned} >= {"proxy", "supervisor", "bento"}
    for record in owned:
        root = psutil.Process(record["pid"])
        tree = [root, *root.children(recursive=True)]
        # a process that renamed itself (BentoML's circusd) shows an empty environment: the rest must show it; a
        # short-lived child (a worker's helper) may be gone by the time it is read
        envs = [env for env in (_environ(p) for p in tree) if env]
        assert envs, f"no readable environment in the {record['role']} tree of pid {record['pid']}"
        assert all(e.get("MLFLOW_DISABLE_TELEMETRY") == "true" and e.get("BENTOML_DO_NOT_TRACK", "").lower() == "true"
                   for e in envs), record  # (BentoML hands its workers "True")
        for proc in tree:
            try:
                listening = [c for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
            except psutil.NoSuchProcess:
                continue
            for conn in listening:
                assert conn.laddr.ip in ("127.0.0.1", "::1"), (proc.pid, conn.laddr)


def _environ(proc) -> dict:
    import psutil

    try:
        return proc.environ()
    except psutil.NoSuchProcess:
        return {}


def test_every_file_the_serving_side_writes_is_the_owners_alone(plane):
    settings, _ = plane
    converged(settings)
    exposed = [f"{p} {oct(p.stat().st_mode & 0o777)}" for p in settings.serving_dir.rglob("*")
               if p.is_file() and p.stat().st_mode & 0o077]
    assert exposed == [], "readable by others"
    for log in (settings.audit_log, settings.deploy_log, settings.incident_log):
        assert not log.exists() or log.stat().st_mode & 0o077 == 0, oct(log.stat().st_mode)


# ---- who watches the watcher, corrupt records, copies of a home, racing rollbacks (issue 24) ----------------
class Answers:
    """Requests to the stable address every 50 ms in a thread, each outcome kept: "answered throughout"."""

    def __init__(self, settings):
        self.url, self.body = settings.serve_url, _body(settings)
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                status, _ = http_json(f"{self.url}/predict", self.body, timeout=10)
            except OSError:
                status = 0
            self.statuses.append(status)
            time.sleep(0.05)

    def __enter__(self) -> Answers:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=15)

    @property
    def failed(self) -> int:
        return sum(status != 200 for status in self.statuses)


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def _supervisors(settings) -> list[int]:
    """The live supervisor processes of this home (by their command line and home)."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.cmdline()[-2:] == ["stockops.serving", "supervise"] \
                    and proc.environ().get("STOCKOPS_HOME") == str(settings.home) \
                    and proc.status() not in (psutil.STATUS_ZOMBIE,):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def test_a_killed_or_hung_supervisor_is_replaced_by_its_watcher_and_each_outage_is_an_incident(plane):
    """make run's launcher loop (platform.watch) on a real supervisor: SIGKILL, then SIGSTOP (hung, still alive)."""
    from dataclasses import replace

    from stockops.launch.components import watch
    from stockops.serving import state
    from stockops.serving.supervisor import incidents

    settings, _ = plane
    converged(settings)
    fast = replace(settings, supervisor_stale_s=3.0)
    airflow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # stands in for Airflow
    watcher = threading.Thread(target=watch, args=(fast, airflow, 0.5), daemon=True)
    watcher.start()
    stopped = None
    try:
        first = state.read(state.supervisor_record_path(settings), "")["pid"]
        before = len(incidents(settings))
        with Answers(settings) as answers:
            os.kill(first, signal.SIGKILL)
            second = _wait(lambda: [p for p in _supervisors(settings) if p != first], 20, "a new supervisor")[0]
            _wait(lambda: state.read(state.supervisor_record_path(settings), "").get("pid") == second
                  and state.read(state.supervisor_record_path(settings), "").get("busy_until", 0) < time.time(), 60,
                  "the new supervisor beating")
            os.kill(second, signal.SIGSTOP)  # hung: alive, holding whatever it held, beating no more
            stopped = second
            third = _wait(lambda: [p for p in _supervisors(settings) if p not in (first, second)], 30,
                          "a supervisor in place of the hung one")[0]
        assert not pid_alive(second), "the hung supervisor was left running beside its replacement"
        assert answers.failed == 0, answers.statuses
        def causes() -> list[str]:  # the watcher writes each incident once its new supervisor is started
            return [i["cause"] for i in incidents(settings)[before:] if i["component"] == "supervisor"]

        try:
            _wait(lambda: any(f"pid {first}) is gone" in c for c in causes())
                  and any(f"pid {second}) stopped beating" in c for c in causes()), 10, "both incidents")
        except AssertionError:
            raise AssertionError(f"not both supervisor incidents within 10 s: {causes()}") from None
        assert _supervisors(settings) == [third]
    finally:
        airflow.kill()
        watcher.join(timeout=10)
        if stopped and pid_alive(stopped):
            os.kill(stopped, signal.SIGCONT)
    # the new supervisor heals: a killed bento is answered for by its spare and replaced
    converged(settings)


def test_two_rollbacks_to_the_previous_champion_at_once_make_one(plane):
    """Both planned against the same champion while a deploy holds the lock; the second finds it done."""
    import json

    from stockops.registry.changes import history, previous_champion
    from stockops.serving import deploys, state, verify

    settings, bentos = plane
    converged(settings)
    if previous_champion(settings, champion(settings)) is None:  # (run alone: v1 is the first champion)
        assert change_in_child(settings, "promotion", other(settings), bentos).returncode == 0
        converged(settings)
    before, changes = champion(settings), len(history(settings))
    code = ("import json; from stockops.core.settings import get_settings; from stockops.serving import rollback as c\n"
            "s = get_settings(); plan = c.plan_rollback(None, 'faults: two at once', settings=s)\n"
            "print('PLANNED', flush=True)\n"
            "built = c.rollback_bento(plan, settings=s)\n"
            "done = c.complete_rollback(c.deploy_rollback(built, settings=s), settings=s)\n"
            "print('RESULT', json.dumps(done.to_xcom()))")
    with state.deploy_lock(settings, what="the test, until both rollbacks are planned"):
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        for proc in procs:
            line = proc.stdout.readline()
            assert line.startswith("PLANNED"), line + proc.stderr.read()[-2000:]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    results = [json.loads(out.split("RESULT ", 1)[1]) for out, _ in outs]
    assert sorted(r["outcome"] for r in results) == ["succeeded", "unchanged"], results
    after = champion(settings)
    assert after != before and all(r["version"] == after and r["from_version"] for r in results)
    assert [c["event"] for c in history(settings)[changes:]] == ["rollback"], "two rollbacks for one request"
    assert sorted(d["outcome"] for d in deploys(settings)[-2:]) == ["succeeded", "unchanged"]
    # the requester of the version rolled back is told what happened to it
    with pytest.raises(Exception, match=f"a later rollback .* moved it to v{after}"):
        verify(settings, before, timeout=1)
    converged(settings)


def test_a_rollback_planned_against_a_champion_since_replaced_says_what_really_happened(plane):
    """Its plan named a champion that another change has replaced while it waited: it is re-made in the lock."""
    from stockops.registry.changes import history
    from stockops.serving import deploy, deploys

    settings, bentos = plane
    converged(settings)
    before, target = champion(settings), other(settings)
    stale = "99"  # the champion the plan was made against, no longer the champion
    record = deploy(settings, bentos[target]["bento_tag"], target, kind="rollback", window=bentos[target]["window"],
                    reason="faults: a stale plan", expect_champion=stale)
    assert (record.outcome, record.champion_before) == ("succeeded", before)
    assert deploys(settings)[-1]["replanned_from"] == stale  # the deploy log says it was re-planned
    last = history(settings)[-1]
    assert (last["event"], last["from_version"], last["to_version"], last["replanned_from"]) == (
        "rollback", before, target, stale), last
    converged(settings)


@pytest.mark.parametrize("record", ["proxy", "standby", "supervisor", "processes"])
def test_an_unreadable_record_never_stops_a_healthy_server_and_is_rebuilt(plane, record):
    from stockops.serving import runtime, state

    settings, _ = plane
    converged(settings)
    if record == "standby":  # the previous champion's bento, kept warm by the rollback test above
        assert state.standby(settings).get("bento_tag") not in (None, state.current(settings)["bento_tag"])
    path = {"proxy": state.proxy_record_path(settings), "standby": settings.serving_standby,
            "supervisor": state.supervisor_record_path(settings), "processes": settings.serving_processes}[record]
    running = {"proxy": runtime.proxy_record(settings).get("pid"), "bento": state.current(settings)["pid"],
               "standby": state.standby(settings).get("pid"),
               "supervisor": state.read(state.supervisor_record_path(settings), "")["pid"]}
    with Answers(settings) as answers:
        path.write_text('{"pid": 12')  # torn
        rebuilt = _wait(lambda: _readable(path), 15, f"{path.name} rebuilt")
        time.sleep(4)  # a sweep or two more: nothing may be stopped after the rebuild either
    assert answers.failed == 0 and len(answers.statuses) > 20, answers.statuses
    assert {k: v for k, v in running.items() if v and not pid_alive(v)} == {}, "a healthy server was stopped"
    assert list(path.parent.glob(f"{path.name}.corrupt-*")), "the unreadable file was not kept for evidence"
    if record in ("proxy", "standby", "supervisor"):
        assert rebuilt["pid"] == running[record]
    assert _supervisors(settings) == [running["supervisor"]], "a second supervisor was started"
    converged(settings)


def _readable(path):
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def test_stop_on_a_copy_of_the_home_stops_nothing_of_the_original(plane, tmp_path):
    import shutil

    from stockops.serving import runtime, state

    settings, _ = plane
    converged(settings)
    pids = [r["pid"] for r in state.owned(settings) if state.pid_matches(r)]
    copy = tmp_path / "copy"
    shutil.copytree(settings.serving_dir, copy / "serving", ignore=shutil.ignore_patterns("logs", "*.lock"))
    done = subprocess.run([sys.executable, "-m", "stockops.serving", "stop"], env={**os.environ, "STOCKOPS_HOME": str(copy)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [p for p in pids if not pid_alive(p)] == [], "stop on a copy stopped processes of the original"
    assert runtime.proxy_answers(settings.serve_url)
    converged(settings)


# last: it stops the module's plane
def test_stop_serving_leaves_no_process_it_started(plane):
    from stockops.serving import runtime, state

    settings, _ = plane
    pids = [p["pid"] for p in state.owned(settings)]
    assert pids
    runtime.stop_serving(settings)
    assert [p for p in pids if pid_alive(p)] == []
