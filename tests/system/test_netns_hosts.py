"""The namespace-hosts harness (``stockops.launch.netns``) that the multi-host system test and the benchmark
stand on: each host has its own hostname, address, loopback and empty folder; PostgreSQL, Redis and the S3
object store on the control host are reached from a worker over the LAN; a pulled cable partitions one host
and only it; ``Network.close`` leaves no namespace and no process behind.

Skipped, with the reason, where network namespaces cannot be made (not root, no ``ip``/``unshare``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from stockops.launch import netns

pytestmark = pytest.mark.integration  # real servers; about 5 s in all, no test past 3 s: not `slow`

_why_not = netns.available()
if _why_not:
    pytest.skip(f"network namespaces unavailable: {_why_not}", allow_module_level=True)

PY = sys.executable


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    """One Network: ``control`` (PostgreSQL, Redis, the object store) and ``worker-a``/``worker-b`` (empty)."""
    with netns.Network() as net:
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        control, worker_a, worker_b = (net.add_host(n) for n in ("control", "worker-a", "worker-b"))
        timings["network"] = time.monotonic() - t0
        # The workers' folders are checked for emptiness first: the services keep their data in control's.
        fresh = {h.name: sorted(p.name for p in h.workdir.iterdir()) for h in (control, worker_a, worker_b)}
        t0 = time.monotonic()
        pg = netns.PostgresServer(control, control.workdir / "pg" / "data").start()
        timings["postgres"] = time.monotonic() - t0
        pg.create_database("stockops")
        t0 = time.monotonic()
        redis = netns.RedisServer(control).start()
        timings["redis"] = time.monotonic() - t0
        t0 = time.monotonic()
        store = netns.object_store_on(control, control.workdir / "s3").start(buckets=["stockops"])
        timings["objectstore"] = time.monotonic() - t0
        print("\nnetns timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
        yield {"net": net, "control": control, "a": worker_a, "b": worker_b, "pg": pg, "redis": redis,
               "store": store, "fresh": fresh}
        store.stop()
        redis.stop()
        pg.stop()


def run_py(host: netns.Host, code: str, env=None, timeout: float = 30) -> str:
    done = host.run([PY, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"on {host.name}: {done.stderr[-2000:]}"
    return done.stdout.strip()


def test_each_host_has_its_own_hostname_address_loopback_and_empty_folder(lan):
    hosts = [lan["control"], lan["a"], lan["b"]]
    assert len({h.ip for h in hosts}) == 3 and len({h.workdir for h in hosts}) == 3
    assert lan["fresh"] == {"control": [], "worker-a": [], "worker-b": []}
    for host in hosts:
        assert run_py(host, "import socket; print(socket.gethostname())") == host.name
    # loopback inside a host is the host's own: a server on worker-a's 127.0.0.1 is not worker-b's
    server = lan["a"].popen([PY, "-c", "import socket, time; s = socket.create_server(('127.0.0.1', 7001)); "
                                       "time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while not lan["a"].connects("127.0.0.1", 7001):
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert not lan["b"].connects("127.0.0.1", 7001)
    finally:
        lan["a"].stop(server)
    # names resolve on the LAN (the per-namespace hosts file), and a relative path lands in the host's folder
    assert run_py(lan["a"], "import socket; print(socket.gethostbyname('control'), socket.getfqdn())") \
        == f"{lan['control'].ip} worker-a"
    run_py(lan["a"], "open('mine.txt', 'w').write('a')")
    assert (lan["a"].workdir / "mine.txt").read_text() == "a"
    assert not (lan["b"].workdir / "mine.txt").exists()
    assert sorted(p.name for p in lan["b"].workdir.iterdir()) == []


def test_worker_reaches_postgres_redis_and_object_store_on_control(lan):
    pg, redis, store = lan["pg"], lan["redis"], lan["store"]
    assert lan["control"].ip in pg.dsn("stockops") and lan["control"].ip in redis.url
    out = run_py(lan["a"], f"""
        import os, psycopg2, redis, boto3
        with psycopg2.connect({pg.dsn("stockops")!r}, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1, current_database(), inet_server_addr()")
            print(*cur.fetchone())
        print(redis.Redis.from_url({redis.url!r}, socket_timeout=5).ping())
        s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        s3.put_object(Bucket="stockops", Key="from/worker-a.txt", Body=b"hello from worker-a")
        print(s3.get_object(Bucket="stockops", Key="from/worker-a.txt")["Body"].read().decode())
        """, env={**_base_env(), **store.env()})
    assert out.splitlines() == [f"1 stockops {lan['control'].ip}", "True", "hello from worker-a"]
    # the object is a file in control's folder, not in the worker's
    assert (store.root / "stockops" / "from" / "worker-a.txt").read_bytes() == b"hello from worker-a"
    assert list(lan["a"].workdir.rglob("worker-a.txt")) == []


def test_pulled_cable_partitions_one_host_until_plugged_back(lan):
    net, control, a, b = lan["net"], lan["control"], lan["a"], lan["b"]
    assert a.connects(control.ip, lan["redis"].port) and b.connects(control.ip, lan["redis"].port)
    net.link_down(a)
    try:
        started = time.monotonic()
        assert not a.connects(control.ip, lan["redis"].port, timeout=1.0)
        assert time.monotonic() - started < 5
        assert b.connects(control.ip, lan["redis"].port)
        assert b.connects(control.ip, lan["pg"].port)
    finally:
        net.link_up(a)
    assert a.connects(control.ip, lan["redis"].port, timeout=3.0)


def test_close_removes_namespaces_and_stops_processes(tmp_path):
    net = netns.Network(base_dir=tmp_path / "small")
    try:
        host = net.add_host("solo")
        # one tracked process and one that ignores SIGTERM and was not started through the harness's popen
        tracked = host.popen([PY, "-c", "import time; time.sleep(60)"])
        stubborn = subprocess.Popen([*host.prefix(), "sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"],
                                    start_new_session=True)
        deadline = time.monotonic() + 10
        while len(host.pids()) < 2:
            assert time.monotonic() < deadline, host.pids()
            time.sleep(0.05)
        inside = host.pids()
        names = {host.namespace, net.switch}
        assert names <= netns.namespaces()
    finally:
        net.close(grace=0.5)
    assert not names & netns.namespaces()
    assert tracked.poll() is not None
    assert stubborn.wait(5) == -9
    assert not any(netns._alive(pid) for pid in inside)
    assert (tmp_path / "small").exists()  # a base folder given is kept ...
    net.close()  # ... and closing twice is harmless


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
