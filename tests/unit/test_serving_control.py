"""The serving control plane's branches, with fakes at the process boundary (the real servers: tests/faults)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stockops.processes import free_port


def test_a_corrupt_state_file_names_itself_and_the_way_out(settings):
    from stockops.serving import CorruptState, state

    settings.serving_dir.mkdir(parents=True)
    settings.serving_state.write_text('{"upstream": "http://127.0.0.1:')
    with pytest.raises(CorruptState, match=r"current\.json is unreadable .*reconcile"):
        state.current(settings)
    assert state.current_or_empty(settings) == {}
    settings.serving_state.write_text("[1, 2]")
    with pytest.raises(CorruptState, match="not an object"):
        state.current(settings)


def test_orphans_are_owned_live_processes_no_state_file_names(settings):
    from stockops.serving import state

    named = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        for proc in (named, orphan, gone):  # started by this test process: being started, not orphans
            state.own(settings, proc.pid, "bento", bento_tag="goog_forecast:v1", port=1)
        state.write(settings.serving_state, {"pid": named.pid, "upstream": "http://127.0.0.1:1", "spares": []})
        assert state.orphans(settings) == [], "a process its live starter is still starting was taken for an orphan"
        for proc in (named, orphan, gone):  # now as if started by a process that died (a killed deploy)
            state.own(settings, proc.pid, "bento", bento_tag="goog_forecast:v1", port=1, starter=gone.pid)
        assert [r["pid"] for r in state.orphans(settings)] == [orphan.pid]
        from stockops.serving.runtime import stop_orphans

        assert [r["pid"] for r in stop_orphans(settings, starting=frozenset({orphan.pid}))] == []
        assert [r["pid"] for r in stop_orphans(settings)] == [orphan.pid]
        assert orphan.wait(timeout=10) is not None and named.poll() is None
        assert {r["pid"] for r in state.owned(settings)} == {named.pid}
    finally:
        for proc in (named, orphan):
            proc.kill()


def test_children_that_outlive_a_killed_parent_in_sessions_of_their_own_are_still_stopped(settings):
    """As BentoML's workers do when their arbiter is SIGKILLed: found by the token they inherited."""
    import os
    import signal
    import time

    from stockops.processes import pid_alive
    from stockops.serving import runtime, state

    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
            "print(child.pid, flush=True); time.sleep(120)")
    settings.serving_dir.mkdir(parents=True)
    parent, _ = runtime._spawn(settings, [sys.executable, "-c", code], "parent.out", "bento")
    out = settings.serving_logs_dir / "parent.out"
    deadline = time.monotonic() + 30
    while not out.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(out.read_text().split()[0])
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert pid_alive(child) and os.getsid(child) == child  # re-parented, in a session of its own
    assert [r["pid"] for r in state.orphans(settings)] == [parent.pid]  # its record lives on through the child
    runtime.stop_orphans(settings)
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(child) and state.owned(settings) == []


def test_a_reused_pid_is_not_taken_for_the_recorded_process(settings):
    from stockops.serving import state

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = state.own(settings, proc.pid, "proxy")
        assert state.pid_matches(record)
        assert not state.pid_matches({**record, "create_time": record["create_time"] - 3600})
    finally:
        proc.kill()


def test_the_deploy_lock_is_free_or_busy_without_waiting(settings):
    from stockops.serving import state

    with state.deploy_lock(settings):
        code = ("from stockops.config import get_settings; from stockops.serving import state\n"
                "with state.try_deploy_lock(get_settings()) as free: print(free)")
        busy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert busy.stdout.strip() == "False", busy.stderr[-2000:]
    with state.try_deploy_lock(settings) as free:
        assert free is True


def test_a_change_survives_its_trip_through_an_agent_request():
    from stockops.serving import Change

    change = Change(kind="rollback", version="3", bento_tag="goog_forecast:v3-abc", reason="bad fit", window=20,
                    audit_fields={"forced": True})
    assert Change.from_dict({**change.to_dict(), "requested_at": "x"}) == change
    assert change.moves_champion and not Change("heal", "3", "t", "r").moves_champion


@pytest.mark.parametrize(("header", "host"), [("127.0.0.1:3000", "127.0.0.1"), ("LOCALHOST", "localhost"),
                                             ("[::1]:3000", "::1"), ("evil.example:3000", "evil.example"),
                                             ("::1", "::1")])
def test_the_proxy_reads_the_host_part_of_a_host_header(header, host):
    from stockops.proxy import host_name

    assert host_name(header) == host


class FakeSupervisor:
    """The supervisor's incident bookkeeping around fake checks: ``faults`` are the answers of the check."""

    def __init__(self, settings, faults: list[str | None], heal_fails: int = 0):
        from stockops.serving.supervisor import Supervisor

        self.supervisor = Supervisor(settings)
        self.faults, self.heal_fails = list(faults), heal_fails

    def fault(self):
        return self.faults.pop(0) if self.faults else None

    def heal(self):
        if self.heal_fails:
            self.heal_fails -= 1
            raise RuntimeError("port still taken")
        return "restarted it"

    def round(self):
        self.supervisor._check("proxy", self.fault, self.heal)


def test_an_outage_is_one_incident_from_detection_to_recovery(settings):
    from stockops.serving.supervisor import incidents

    fake = FakeSupervisor(settings, faults=[None, "the proxy (pid 7) is gone", None])
    for _ in range(3):
        fake.round()
    records = incidents(settings)
    assert [r["status"] for r in records] == ["open", "recovered"]
    assert records[1]["cause"] == "the proxy (pid 7) is gone" and records[1]["action"] == "restarted it"
    assert records[1]["downtime_s"] >= 0 and records[1]["detected_at"] == records[0]["detected_at"]


def test_an_outage_that_does_not_heal_is_recorded_unrecovered_and_turns_the_health_check_red(settings):
    from stockops.serving import check_serving
    from stockops.serving.runtime import ServingError
    from stockops.serving.supervisor import MAX_ATTEMPTS, incidents

    fake = FakeSupervisor(settings, faults=["the proxy (pid 7) is gone"] * (MAX_ATTEMPTS * 2),
                          heal_fails=MAX_ATTEMPTS)
    for _ in range(MAX_ATTEMPTS):
        fake.round()
    assert [r["status"] for r in incidents(settings)] == ["open", "unrecovered"]
    assert check_serving().served is None  # this home never deployed: nothing to check
    from stockops.serving import state

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    state.write(state.proxy_record_path(settings), {"pid": gone.pid, "url": settings.serve_url})
    with pytest.raises(ServingError, match="unhealthy.*does not answer.*the proxy \\(pid 7\\) is gone"):
        check_serving()


def test_the_health_endpoint_tells_nothing_deployed_from_a_dead_bento(settings, tmp_path):
    """The real proxy process: 200 before any deploy, 503 naming the problem when the bento is gone."""
    import time

    from stockops.processes import http_json, stop_pid_tree, wait_until

    port, dead = free_port(), free_port()
    state_file = tmp_path / "current.json"
    proc = subprocess.Popen([sys.executable, "-m", "stockops.proxy", "--state", str(state_file), "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_json(f"{url}/-/stockops/upstream", timeout=2)[0] == 200, timeout=30, interval=0.1)
        assert http_json(f"{url}/-/stockops/health")[0] == 200
        assert http_json(f"{url}/predict", {"closes": [1.0]})[0] == 503
        state_file.write_text(f'{{"upstream": "http://127.0.0.1:{dead}", "version": "3"}}')
        time.sleep(0.5)
        status, body = http_json(f"{url}/-/stockops/health")
        assert status == 503 and "unreachable" in body["error"] and body["version"] == "3"
        status, body = http_json(f"{url}/predict", {"closes": [1.0]})
        assert status == 502 and "unreachable" in body["error"]
        assert http_json(f"{url}/-/stockops/upstream", headers={"Host": "evil.example"})[0] == 400
    finally:
        stop_pid_tree(proc.pid, grace=5)


def test_a_lock_wait_times_out_naming_the_holder_and_what_it_does(settings):
    """A deploy behind a hung holder (the probe: a SIGSTOPped supervisor) gives up with a message, not silence."""
    import time

    from stockops.serving import state

    code = ("import sys, time; from stockops.config import get_settings; from stockops.serving import state\n"
            "with state.deploy_lock(get_settings(), what='a hung heal'):\n"
            "    print('HELD', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().startswith("HELD")
        started = time.monotonic()
        with pytest.raises(state.LockTimeout) as waited:
            with state.deploy_lock(settings, what="a rollback", timeout=1.5):
                pass
        assert 1.5 <= time.monotonic() - started < 5
        message = str(waited.value)
        assert f"pid {holder.pid} (a hung heal, since" in message and "a rollback waited" in message
        assert "nothing was changed" in message
        with state.try_deploy_lock(settings) as free:
            assert free is False
    finally:
        holder.kill()
        holder.wait()
    with state.deploy_lock(settings, what="the next deploy", timeout=5):  # the kernel dropped it with the holder
        assert state.lock_holder(settings)["what"] == "the next deploy"
