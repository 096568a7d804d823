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

from stockops.processes import http_json, pid_alive

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
    from stockops.ingest import store_for
    from stockops.serving import market_frame, request_body

    return request_body(store_for(settings).load(), market=market_frame(settings), rows=90)


def change_in_child(settings, kind: str, version: str, bentos: dict, kill_at: str = "", timeout: float = 240):
    """A promotion or rollback in a separate process (as an Airflow task runs it); SIGKILLed at ``kill_at``."""
    code = ("import sys; from stockops.config import get_settings; from stockops.serving import deploy\n"
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
    settings, bentos = plane
    before = champion(settings)
    target = other(settings)
    kind = "promotion" if target == "2" else "rollback"
    done = change_in_child(settings, kind, target, bentos, kill_at=step)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    seen = converged(settings)
    # killed before the alias moved: the old champion serves again; after: the new one, with its audit entry
    assert seen["champion"] == (target if step == "aliased" else before)


def test_mlflow_refusing_the_alias_move_switches_back_and_says_so(plane, tmp_path):
    settings, bentos = plane
    before, target = champion(settings), other(settings)
    db = settings.mlflow_tracking_uri.removeprefix("sqlite:///")
    code = ("from stockops.config import get_settings; from stockops.serving import deploy, DeployError\n"
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
    from stockops.champion import RollbackRefused, rollback
    from stockops.serving import runtime, state

    settings, bentos = plane
    record = state.read(state.supervisor_record_path(settings), "")
    os.kill(int(record["pid"]), signal.SIGKILL)
    before, target = champion(settings), other(settings)
    done = change_in_child(settings, "promotion" if target == "2" else "rollback", target, bentos, kill_at="switched")
    assert done.returncode == -signal.SIGKILL
    assert state.current(settings)["version"] == target and champion(settings) == before  # the split
    rollback(version=before, reason="faults: repair the split")
    runtime.ensure_supervisor(settings)
    converged(settings)
    with pytest.raises(RollbackRefused, match="already the champion"):
        rollback(version=before, reason="faults: nothing to repair now")


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
    pid = state.current(settings)["pid"]
    settings.serving_state.write_text('{"upstream": "http://127.0.0.1:')
    with pytest.raises(CorruptState, match="current.json.*reconcile"):
        state.current(settings)
    status, _ = http_json(f"{settings.serve_url}/predict", _body(settings), timeout=30)
    assert status == 200  # the proxy keeps its last good upstream
    converged(settings)
    assert state.current(settings)["pid"] == pid, "the running bento is adopted, not restarted"


def test_a_rollback_on_a_corrupt_snapshot_refuses_and_stops_nothing(plane):
    from stockops.champion import rollback
    from stockops.ingest import store_for
    from stockops.serving import DeployError, state

    settings, _ = plane
    converged(settings)
    serving, warm = state.current(settings), state.standby(settings)
    store = store_for(settings)
    target = store.snapshot_path(store.latest().hash)
    original = target.read_bytes()
    try:
        target.write_bytes(original[: len(original) // 2])
        with pytest.raises(DeployError, match="smoke request") as failure:
            rollback(version=other(settings), reason="faults: corrupt snapshot")
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
        # a process that renamed itself (BentoML's circusd) shows an empty environment: the rest must show it
        envs = [env for env in (p.environ() for p in tree) if env]
        assert envs, f"no readable environment in the {record['role']} tree of pid {record['pid']}"
        assert all(e.get("MLFLOW_DISABLE_TELEMETRY") == "true" and e.get("BENTOML_DO_NOT_TRACK", "").lower() == "true"
                   for e in envs), record  # (BentoML hands its workers "True")
        for proc in tree:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    assert conn.laddr.ip in ("127.0.0.1", "::1"), (proc.cmdline()[:4], conn.laddr)


def test_stop_serving_leaves_no_process_it_started(plane):
    from stockops.serving import runtime, state

    settings, _ = plane
    pids = [p["pid"] for p in state.owned(settings)]
    assert pids
    runtime.stop_serving(settings)
    assert [p for p in pids if pid_alive(p)] == []
