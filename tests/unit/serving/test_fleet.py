"""Several serving hosts behind one front proxy: the fleet's records, the front proxy process, the shared lock.

The hosts here are homes (and agent names) sharing one records' database, the way serving hosts share PostgreSQL;
the whole deployment on real hosts is tests/system/test_multi_host.py.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from stockops.core.processes import free_port, http_json, stop_pid_tree, wait_until


def _agent(store, host: str, version: str | None, url: str = "", age_s: float = 0.0) -> None:
    from stockops.serving import fleet

    store.put(fleet.AGENTS + host, {"host": host, "url": url or f"http://{host}:3000", "version": version,
                                    "bento_tag": f"goog_forecast:v{version}", "beat": time.time() - age_s})


def test_the_front_routes_to_the_live_hosts_that_serve_the_champion(settings):
    from stockops.serving import fleet
    from stockops.storage import state_store

    store = state_store(settings)
    view = fleet.FleetView(settings.state_url)
    assert view.read()["upstream"] is None and view.urls == []  # nothing beats yet: nothing to route to
    _agent(store, "a", "2")
    _agent(store, "b", "1")
    _agent(store, "c", "2", age_s=fleet.STALE_S + 1)  # gone: its heartbeat is old
    fleet.note_champion(settings, "2")
    state = view.read()
    assert state["routed"] == ["a"] and state["version"] == "2" and state["champion"] == "2"
    assert {h["host"]: h["live"] for h in state["hosts"]} == {"a": True, "b": True, "c": False}
    _agent(store, "b", "2")  # b switched: both in turn
    view.read()
    turns = [view.urls for _ in range(4)]
    assert {tuple(t) for t in turns} == {("http://a:3000", "http://b:3000"), ("http://b:3000", "http://a:3000")}
    fleet.note_champion(settings, "3")  # @champion moved, no host serves it (yet): the live ones still answer
    assert sorted(view.read()["routed"]) == ["a", "b"]
    assert fleet.live_hosts(settings) == ["a", "b"]


def test_each_host_takes_the_requests_that_name_it_once_and_closed_ones_never(settings):
    from stockops.core import audit
    from stockops.serving.agent import pending_requests

    a, b = replace(settings, serving_name="a"), replace(settings, serving_name="b")
    request = {"kind": "promotion", "version": "2", "bento_tag": "t:v2", "reason": "r", "request_id": "r1",
               "hosts": ["a", "b"]}
    audit.append(settings.deploy_requests_log, request)
    audit.append(settings.deploy_requests_log, {**request, "request_id": "r2", "hosts": []})  # nobody beat: anyone
    assert [r["request_id"] for r in pending_requests(a, set())] == ["r1", "r2"]
    audit.record(settings.deploy_log, "deploy", host="a", request_id="r1", outcome="succeeded", kind="promotion")
    audit.record(settings.deploy_log, "deploy", host="a", request_id="r2", outcome="succeeded", kind="promotion")
    assert pending_requests(a, set()) == []
    assert [r["request_id"] for r in pending_requests(b, set())] == ["r1"], "b still owes r1; r2 was anyone's"
    assert pending_requests(b, {"r1"}) == []
    audit.append(settings.deploy_requests_log, {"request_id": "r1", "closed": "now"})
    assert pending_requests(b, set()) == [], "a closed request is not taken up later"
    assert pending_requests(replace(settings, serving_name="c"), set()) == []


def test_the_requester_reports_every_host_and_fails_only_when_none_switched():
    from stockops.serving.agent import _result
    from stockops.serving.change import Change, DeployError

    change = Change(kind="promotion", version="2", bento_tag="t:v2", reason="r", request_id="r1")
    line = {"at": "2026-12-05T00:00:00+00:00", "version": "2", "bento_tag": "t:v2", "previous_version": "1",
            "seconds": 3.0}
    promoted = {**line, "host": "a", "kind": "promotion", "outcome": "succeeded"}
    followed = {**line, "host": "b", "kind": "follow", "outcome": "succeeded"}
    failed = {**line, "host": "b", "kind": "promotion", "outcome": "failed", "error": "failed its health check"}
    record = _result(change, {"b": followed, "a": promoted}, {})
    assert record.kind == "promotion" and "a (promotion, succeeded), b (follow, succeeded)" in record.note
    partial = _result(change, {"a": promoted, "b": failed}, {"c": "its agent stopped beating before it finished"})
    assert "not switched: b: failed its health check; c: its agent stopped beating" in partial.note
    assert _result(change, {None: promoted}, {}).note == "", "one agent: its record as it is"
    with pytest.raises(DeployError, match="no serving host deployed t:v2: b: failed its health check; c: no outcome"):
        _result(change, {"b": failed}, {"c": "no outcome within 240 s"})
    with pytest.raises(DeployError, match="the serving agent could not deploy t:v2: failed its health check"):
        _result(change, {"b": failed}, {})


def test_a_change_of_champion_on_one_host_holds_every_host_off_but_healing_does_not(settings, tmp_path):
    """The deploy lock of a change of champion is the records' database's (every serving host shares
    @champion and the audit log); a host's own lock, which healing takes, is its own."""
    from stockops.serving import state

    other_home = tmp_path / "other-host"
    code = ("import time; from stockops.core.settings import get_settings; from stockops.serving import state\n"
            "with state.deploy_lock(get_settings(), what='a promotion on the other host', shared=True):\n"
            "    print('HELD', flush=True); time.sleep(60)\n")
    env = {**os.environ, "STOCKOPS_HOME": str(other_home), "STOCKOPS_STATE_DB": settings.state_url,
           "STOCKOPS_SERVING_NAME": "other"}
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().startswith("HELD")
        with state.try_deploy_lock(settings, shared=True) as free:
            assert free is False, "the other host's change of champion holds the shared lock"
        with state.try_deploy_lock(settings) as free:
            assert free is True, "this host's own lock (healing) is free"
        with pytest.raises(state.LockTimeout, match="'host': 'other'.*a promotion on the other host"):
            with state.deploy_lock(settings, what="a rollback", timeout=1, shared=True):
                pass
    finally:
        holder.kill()
        holder.wait()
    with state.try_deploy_lock(settings, shared=True) as free:
        assert free is True, "the lock went with its holder"


class _Named(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = self.server.name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _upstream(name: str) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Named)
    server.name = name  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_front_proxy_spreads_requests_over_the_hosts_and_passes_a_dead_ones_to_the_other(settings):
    """The real front proxy process, reading two hosts' heartbeats from the records' database."""
    import urllib.request

    from stockops.serving import fleet
    from stockops.storage import state_store

    store = state_store(settings)
    a, b = _upstream("a"), _upstream("b")
    _agent(store, "a", "2", url=f"http://127.0.0.1:{a.server_port}")
    _agent(store, "b", "2", url=f"http://127.0.0.1:{b.server_port}")
    fleet.note_champion(settings, "2")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stockops.serving.proxy", "--fleet-db", settings.state_url,
                             "--port", str(port)])
    url = f"http://127.0.0.1:{port}"

    def who() -> str:
        with urllib.request.urlopen(f"{url}/who", timeout=10) as resp:
            return resp.read().decode()

    try:
        wait_until(lambda: http_json(f"{url}/-/stockops/upstream", timeout=2)[1].get("routed") == ["a", "b"],
                   timeout=30, interval=0.1, what="the front proxy reads the fleet")
        assert sorted(who() for _ in range(6)) == ["a"] * 3 + ["b"] * 3
        assert http_json(f"{url}/-/stockops/health")[0] == 200
        b.shutdown()
        b.server_close()  # b's process is gone (its heartbeat still fresh): its requests go to a
        assert [who() for _ in range(4)] == ["a"] * 4
        _agent(store, "a", "1", url=f"http://127.0.0.1:{a.server_port}")  # a not switched to the champion yet:
        _agent(store, "b", "2", url=f"http://127.0.0.1:{free_port()}", age_s=fleet.STALE_S + 1)  # b gone
        wait_until(lambda: http_json(f"{url}/-/stockops/upstream", timeout=2)[1].get("version") == "1",
                   timeout=10, interval=0.1, what="the front proxy sees the hosts change")
        assert who() == "a", "the only live host answers, with its own version, rather than nothing"
    finally:
        stop_pid_tree(proc.pid, grace=5)
        a.shutdown()


def test_a_host_that_failed_a_request_is_tried_last_for_a_while(settings):
    from stockops.serving import fleet
    from stockops.storage import state_store

    store = state_store(settings)
    _agent(store, "a", "2")
    _agent(store, "b", "2")
    fleet.note_champion(settings, "2")
    view = fleet.FleetView(settings.state_url)
    view.read()
    view.suspect("http://a:3000")
    assert [view.urls for _ in range(3)] == [["http://b:3000", "http://a:3000"]] * 3, "a is still the last resort"
    view._suspect["http://a:3000"] = time.monotonic() - 1  # SUSPECT_S later
    assert {view.urls[0] for _ in range(4)} == {"http://a:3000", "http://b:3000"}, "in turn again"
