"""The serving control plane's branches, with fakes at the process boundary (the real servers: tests/faults)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stockops.core.processes import free_port


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

    from stockops.core.processes import pid_alive
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
        code = ("from stockops.core.settings import get_settings; from stockops.serving import state\n"
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
    from stockops.serving.proxy import host_name

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
    assert check_serving(settings=settings).served is None  # this home never deployed: nothing to check
    from stockops.serving import state

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    state.write(state.proxy_record_path(settings), {"pid": gone.pid, "url": settings.serve_url})
    with pytest.raises(ServingError, match="unhealthy.*does not answer.*the proxy \\(pid 7\\) is gone"):
        check_serving(settings=settings)


def test_the_health_endpoint_tells_nothing_deployed_from_a_dead_bento(settings, tmp_path):
    """The real proxy process: 200 before any deploy, 503 naming the problem when the bento is gone."""
    import time

    from stockops.core.processes import http_json, stop_pid_tree, wait_until

    port, dead = free_port(), free_port()
    state_file = tmp_path / "current.json"
    proc = subprocess.Popen([sys.executable, "-m", "stockops.serving.proxy", "--state", str(state_file), "--port", str(port)])
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

    code = ("import sys, time; from stockops.core.settings import get_settings; from stockops.serving import state\n"
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


# ---- the proxy's buffering and Host checks, on loopback in this process -------------------------------------
async def _proxy_before(upstream_app, tmp_path, **options):
    """A fake upstream and the real proxy app routed to it, both on loopback; returns (runners, proxy port, budget)."""
    from aiohttp import web

    from stockops.serving.proxy import BODY_BUDGET, make_app

    runners, ports = [], []
    upstream_runner = web.AppRunner(upstream_app)
    await upstream_runner.setup()
    site = web.TCPSite(upstream_runner, "127.0.0.1", 0)
    await site.start()
    runners.append(upstream_runner)
    state_file = tmp_path / "current.json"
    state_file.write_text(f'{{"upstream": "http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"}}')
    proxy = make_app(state_file, **options)
    proxy_runner = web.AppRunner(proxy)
    await proxy_runner.setup()
    site = web.TCPSite(proxy_runner, "127.0.0.1", 0)
    await site.start()
    runners.append(proxy_runner)
    ports.append(site._server.sockets[0].getsockname()[1])
    return runners, ports[0], proxy[BODY_BUDGET]


async def _stop(runners) -> None:
    """Stop the servers once the proxy's connections, which the clients closed, are gone (a shutdown during
    aiohttp's lingering read of a refused body waits out its 10 s)."""
    import asyncio

    for _ in range(100):
        if not runners[-1].server.connections:
            break
        await asyncio.sleep(0.02)
    for runner in reversed(runners):
        await runner.cleanup()


async def _answer(reader) -> tuple[int, dict, bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 answer with a Content-Length."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    headers = {k.lower(): v for k, v in headers.items()}
    return int(head[0].split()[1]), headers, await reader.readexactly(int(headers.get("content-length", 0)))


def _echo_length_app():
    from aiohttp import web

    async def echo(request):
        return web.json_response({"received": len(await request.read()), "host": request.headers.get("Host")})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def test_the_proxy_bounds_the_request_bodies_it_buffers(tmp_path):
    """Two slow 600 KB uploads under a 1 MiB budget: the second is refused at once (503, Retry-After, the reason)
    while the first, half sent, holds its bytes; the first still goes through, and then the second does. A chunked
    body is counted as it arrives; one over the proxy's per-body limit is a 413 before it is read."""
    import asyncio
    import json

    from aiohttp.test_utils import make_mocked_request

    from stockops.serving.proxy import MAX_BODY_BYTES, BodyBudget, BodyRefused

    body = b"x" * 600_000

    def request_head(length: int | None = None, path: str = "/predict") -> bytes:
        framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
                .encode())

    async def drill():
        runners, port, budget = await _proxy_before(_echo_length_app(), tmp_path, max_buffered_bytes=1024 * 1024)
        try:
            slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)
            slow_w.write(request_head(len(body)) + body[:1000])
            await slow_w.drain()
            for _ in range(100):
                if budget.in_use:
                    break
                await asyncio.sleep(0.01)
            assert budget.in_use == len(body), "a declared length is reserved as the body starts"

            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(request_head(len(body)) + body)
            await w.drain()
            status, headers, answer = await asyncio.wait_for(_answer(r), 5)
            w.close()
            assert status == 503 and headers["retry-after"] == "1"
            assert "1048576-byte limit (STOCKOPS_PROXY_BUFFER_BYTES)" in json.loads(answer)["error"]

            slow_w.write(body[1000:])
            await slow_w.drain()
            status, _, answer = await asyncio.wait_for(_answer(slow_r), 5)
            slow_w.close()
            assert status == 200 and json.loads(answer)["received"] == len(body)
            assert budget.in_use == 0, "the bytes are given back once the answer is sent"

            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(request_head(len(body)) + body)
            status, _, answer = await asyncio.wait_for(_answer(r), 5)
            w.close()
            assert status == 200 and json.loads(answer)["received"] == len(body)

            r, w = await asyncio.open_connection("127.0.0.1", port)  # chunked: no length to reserve up front
            w.write(request_head() + b"".join(b"%x\r\n%s\r\n" % (300_000, body[:300_000]) for _ in range(4))
                    + b"0\r\n\r\n")
            status, headers, answer = await asyncio.wait_for(_answer(r), 5)
            w.close()
            assert status == 503 and headers["retry-after"] == "1" and budget.in_use == 0
        finally:
            await _stop(runners)

    asyncio.run(drill())
    # one body over the per-body limit: 413 before a byte is read (a client that sends no body is answered at once,
    # and aiohttp then lingers 10 s for the body it declared, hence no server here)
    budget = BodyBudget(1024 * 1024)
    request = make_mocked_request("POST", "/predict", headers={"Content-Length": str(MAX_BODY_BYTES + 1)})
    with pytest.raises(BodyRefused, match="4194305 bytes is over the proxy's 4194304-byte limit") as refused:
        asyncio.run(budget.read(request))
    assert refused.value.status == 413 and budget.in_use == 0


def test_the_proxy_refuses_more_than_one_host_header(tmp_path):
    """Which Host would the check read, and which the bento? Refused (400) before the upstream is asked."""
    import asyncio
    import json

    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request
    from multidict import CIMultiDict

    from stockops.serving.proxy import make_app

    async def drill():
        runners, port, _ = await _proxy_before(_echo_length_app(), tmp_path)
        try:
            for hosts in ((b"evil.example", b"127.0.0.1"), (b"127.0.0.1", b"evil.example"), (b"localhost", b"localhost")):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"GET /readyz HTTP/1.1\r\n" + b"".join(b"Host: %s\r\n" % h for h in hosts) + b"\r\n")
                status, _, _ = await asyncio.wait_for(_answer(r), 5)
                w.close()
                assert status == 400, hosts
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /readyz HTTP/1.1\r\nHost: localhost:3000\r\n\r\n")
            status, _, answer = await asyncio.wait_for(_answer(r), 5)
            w.close()
            assert status == 200 and json.loads(answer)["host"].startswith("127.0.0.1:"), "one Host, the upstream's"
        finally:
            await _stop(runners)

        # aiohttp's own parser refuses a repeated Host already; the proxy's check holds if a parser lets one through
        app = make_app(tmp_path / "none.json")
        request = make_mocked_request("GET", "/predict", headers=CIMultiDict([("Host", "localhost"),
                                                                                ("Host", "evil.example")]), app=app)

        async def never(_):
            raise AssertionError("a request with two Host headers reached the handler")

        answer = await app.middlewares[0](request, never)
        assert answer.status == 400 and "2 Host headers" in json.loads(answer.body)["error"]
        assert isinstance(answer, web.Response)

    asyncio.run(drill())


def test_a_starter_killed_between_a_start_and_its_record_leaves_nothing_running_unnamed(settings):
    """The leak seen under load: a supervisor killed after it started a spare and before it recorded the pid. The
    start's intent (recorded first, with the token the process carries) makes the process an orphan to stop."""
    import os

    from stockops.core.processes import tokens_alive
    from stockops.serving import runtime, state

    code = ("import sys; from stockops.core.settings import get_settings; from stockops.serving import runtime\n"
            "runtime._spawn(get_settings(), [sys.executable, '-c', 'import time; time.sleep(120)'], 'x.out', 'bento')\n")
    starter = subprocess.run([sys.executable, "-c", code], env={**os.environ, "STOCKOPS_FAULT_KILL_AT": "spawned"},
                             timeout=120)
    assert starter.returncode == -9, "the starter was killed right after the start"
    [record] = state.owned(settings)
    assert record["intent"] and record["pid"] is None and record["token"] in tokens_alive(), record
    assert [r["token"] for r in state.orphans(settings)] == [record["token"]]
    runtime.stop_orphans(settings)
    assert record["token"] not in tokens_alive(), "the unnamed process was stopped by its token"
    assert state.owned(settings) == []
