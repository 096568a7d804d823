"""The stable serving address: a small reverse proxy in front of whichever bento is current.

Users call one address (default ``127.0.0.1:3000``). A deploy starts the new bento on a
free port, checks it, then rewrites ``current.json``; the proxy picks the new upstream up
within ``POLL_S`` and sends every later request there, while requests already in flight
finish on the old bento, which the deploy stops only afterwards. A connection error to the
upstream (or no answer within ``UPSTREAM_TIMEOUT_S``: a hung process) is retried on its spares (other processes of the same bento, ``spares`` in
``current.json``; the supervisor keeps one running), then once on the then-current upstream:
a switch under load, or a bento process killed, fails no request.

``GET /-/stockops/upstream`` tells which bento the proxy routes to and whether it answered its
last readiness check; ``GET /-/stockops/health`` is the health check (compose, load balancers):
503 with the reason when a bento is deployed but none of its processes answers ``/readyz``
(checked every ``HEALTH_S``); 200 otherwise (``"ready": false`` before the first deploy, so a
fresh platform can start and train its first model). With nothing deployed yet, every other path answers 503 with the reason.

A request whose ``Host`` header names a host outside ``--allowed-hosts`` (default: loopback
names; the port is not compared) is refused with 400 before it reaches a bento: a web page on
another site cannot use a browser on this machine to reach the endpoint (DNS rebinding). So is one
with more than one ``Host`` header (which one would a check read, and which one the bento?).

Request bodies are held in memory until the bento has answered (a retry on a spare sends the same
bytes again), so what the proxy buffers is bounded: each body to ``MAX_BODY_BYTES`` (413 beyond), all
bodies in flight together to ``--max-buffered-bytes`` (``STOCKOPS_PROXY_BUFFER_BYTES``, default 64 MiB).
A request that would take the total over it is answered 503 with ``Retry-After`` before its body is
read (a declared ``Content-Length`` is reserved up front; a chunked body is counted as it arrives).
Slow uploads then cost a bounded amount of memory, whatever their number.

Run: ``python -m stockops.serving.proxy --state <serving>/current.json --host 127.0.0.1 --port 3000
--log <serving>/logs/proxy.log`` (the log rotates at ``--max-log-bytes``).

**The front proxy** of several serving hosts: ``--fleet-db <records' database URL>`` instead of ``--state``. Its
upstreams are then the stable addresses of the live serving hosts that serve the fleet's version, read from the
agents' heartbeats every ``FLEET_POLL_S`` (:class:`~stockops.serving.fleet.FleetView`), requests going to them in
turn; a host that fails a request's connection passes it to the next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from logging.handlers import RotatingFileHandler
from pathlib import Path

from aiohttp import ClientConnectionError, ClientSession, ClientTimeout, TCPConnector, web
from multidict import CIMultiDict

from stockops.serving.forwarding import UpstreamError, UpstreamPool

POLL_S = 0.1
FLEET_POLL_S = 0.25
UPSTREAM_TIMEOUT_S = 60.0  # a bento's answer (a cold model load included)
FRONT_TIMEOUT_S = 15.0  # a serving host's answer through the front proxy: one cut off is passed over sooner
HEALTH_S = 1.0
MAX_BODY_BYTES = 4 * 1024 * 1024  # one request's body (the bento refuses far less: 256 KiB)
MAX_BUFFERED_BYTES = 64 * 1024 * 1024  # default of all bodies in flight together (STOCKOPS_PROXY_BUFFER_BYTES)
RETRY_AFTER_S = 1
DEFAULT_ALLOWED_HOSTS = ("127.0.0.1", "localhost", "::1")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}
log = logging.getLogger("stockops.serving.proxy")


class Upstream:
    """The current upstream, re-read from the state file when it changes."""

    def __init__(self, state_path: Path):
        self.state_path = state_path
        self.mtime_ns = -1
        self.state: dict = {}

    def read(self) -> dict:  # the file is read by refresh (cheap: a stat), on the event loop
        return self.state

    def suspect(self, url: str) -> None:  # one host: its spares are tried in their order every time
        pass

    def refresh(self) -> None:
        try:
            mtime = self.state_path.stat().st_mtime_ns
        except FileNotFoundError:
            self.state, self.mtime_ns = {}, -1
            return
        if mtime != self.mtime_ns:
            try:
                state = json.loads(self.state_path.read_text())
            except (OSError, ValueError):
                return  # keep the last good state; the writer replaces the file atomically
            if state.get("upstream") != self.state.get("upstream"):
                log.info("upstream -> %s (%s)", state.get("upstream"), state.get("bento_tag"))
            self.state, self.mtime_ns = state, mtime

    @property
    def url(self) -> str | None:
        return self.state.get("upstream")

    @property
    def urls(self) -> list[str]:
        """The primary, then its spares (the same bento, other processes): where a request may go."""
        spares = [s["upstream"] for s in self.state.get("spares", []) if s.get("upstream")]
        return [self.url, *spares] if self.url else []


def host_name(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:3000`` → ``::1``, ``localhost:3000`` → ``localhost``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class BodyRefused(Exception):
    """A request body the proxy will not buffer: the status and why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class BodyBudget:
    """Bytes of request bodies buffered by all requests in flight, held under ``limit`` (one event loop: no lock)."""

    def __init__(self, limit: int, max_body: int = MAX_BODY_BYTES):
        self.limit, self.max_body = limit, max_body
        self.in_use = 0

    def take(self, n: int) -> None:
        if self.in_use + n > self.limit:
            raise BodyRefused(503, f"the proxy already holds {self.in_use} bytes of request bodies in flight; "
                                   f"{n} more would pass its {self.limit}-byte limit (STOCKOPS_PROXY_BUFFER_BYTES): "
                                   f"retry in {RETRY_AFTER_S} s")
        self.in_use += n

    async def read(self, request: web.Request) -> tuple[bytearray, int]:
        """The whole body and the bytes it took from the budget (the caller gives them back with ``release``);
        raises :class:`BodyRefused` (413 over ``max_body``, 503 over the budget) having taken nothing."""
        declared = request.content_length
        if declared is not None and declared > self.max_body:
            raise BodyRefused(413, f"request body of {declared} bytes is over the proxy's {self.max_body}-byte limit")
        taken = declared or 0
        self.take(taken)
        body = bytearray()
        try:
            async for chunk in request.content.iter_any():
                if len(body) + len(chunk) > self.max_body:
                    raise BodyRefused(413, f"request body is over the proxy's {self.max_body}-byte limit")
                if len(body) + len(chunk) > taken:  # chunked, or longer than declared (aiohttp stops that)
                    self.take(len(body) + len(chunk) - taken)
                    taken = len(body) + len(chunk)
                body += chunk
        except BaseException:
            self.release(taken)
            raise
        return body, taken

    def release(self, n: int) -> None:
        self.in_use -= n


BODY_BUDGET = web.AppKey("body_budget", BodyBudget)
SESSION = web.AppKey("session", ClientSession)
POOL = web.AppKey("pool", UpstreamPool)


def make_app(state_path: Path | None, allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS,
             max_buffered_bytes: int = MAX_BUFFERED_BYTES, fleet_db: str | None = None) -> web.Application:
    """The proxy of one host's bentos (``state_path``: its ``current.json``), or the front proxy of a fleet of
    serving hosts (``fleet_db``: the records' database their agents beat into)."""
    if fleet_db:
        from stockops.serving.fleet import FleetView

        upstream: Upstream | FleetView = FleetView(fleet_db)
    elif state_path is not None:
        upstream = Upstream(state_path)
    else:
        raise ValueError("give the state file (--state) or the fleet's records database (--fleet-db)")
    budget = BodyBudget(max_buffered_bytes)
    upstream.refresh()
    allowed = {h.lower() for h in allowed_hosts}
    ready: dict = {"url": None, "ok": False, "reason": "not checked yet"}

    async def check_ready(session: ClientSession) -> None:
        """Ready when any process of the served bento answers ``/readyz`` (the primary first)."""
        urls = upstream.urls
        if not urls:
            ready.update(url=None, ok=False, reason="nothing is deployed")
            return
        problems: list[str] = []
        for base in urls:
            try:
                async with session.get(base + "/readyz", timeout=ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        ready.update(url=upstream.url, ok=True, reason="; ".join(problems))
                        return
                    problems.append(f"{base}/readyz answered {resp.status}")
            except (TimeoutError, ClientConnectionError) as exc:
                problems.append(f"{base} is unreachable: {exc or type(exc).__name__}")
        ready.update(url=upstream.url, ok=False, reason="; ".join(problems))

    @web.middleware
    async def host_check(request: web.Request, handler):
        hosts = request.headers.getall("Host", [])
        if len(hosts) > 1:  # aiohttp's parser refuses this already; kept in case a parser lets it through
            log.warning("refused %d Host headers from %s", len(hosts), request.remote)
            return web.json_response({"error": f"{len(hosts)} Host headers: send exactly one"}, status=400)
        if allowed and host_name(request.headers.get("Host", "")) not in allowed:
            log.warning("refused Host %r from %s", request.headers.get("Host", "")[:100], request.remote)
            return web.json_response({"error": f"Host {request.headers.get('Host', '')[:100]!r} is not allowed "
                                               "(STOCKOPS_ALLOWED_HOSTS)"}, status=400)
        return await handler(request)

    async def poll(app: web.Application):
        async def loop():
            next_health = next_read = 0.0
            while True:
                upstream.refresh()
                if fleet_db and asyncio.get_running_loop().time() >= next_read:
                    next_read = asyncio.get_running_loop().time() + FLEET_POLL_S
                    try:
                        await asyncio.to_thread(upstream.read)
                    except Exception as exc:  # noqa: BLE001 - the database away: route as last read
                        log.warning("could not read the fleet from its records' database: %s", exc)
                now = asyncio.get_running_loop().time()
                if now >= next_health or ready["url"] != upstream.url:
                    next_health = now + HEALTH_S
                    await check_ready(app[SESSION])
                await asyncio.sleep(POLL_S)

        app[SESSION] = ClientSession(connector=TCPConnector(limit=0, keepalive_timeout=30),
                                       timeout=ClientTimeout(total=60), auto_decompress=False)
        app[POOL] = UpstreamPool(timeout=FRONT_TIMEOUT_S if fleet_db else UPSTREAM_TIMEOUT_S)
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        app[POOL].close()
        await app[SESSION].close()

    async def status(_: web.Request) -> web.Response:
        upstream.refresh()
        fresh = ready["url"] == upstream.url
        return web.json_response({"upstream": upstream.url, **upstream.state,
                                  "upstream_ready": fresh and ready["ok"], "upstream_problem": ready["reason"]})

    async def health(_: web.Request) -> web.Response:
        if ready["url"] != upstream.url:
            await check_ready(app[SESSION])
        body = {"upstream": upstream.url, "version": upstream.state.get("version"), "ready": ready["ok"]}
        if ready["ok"] or upstream.url is None:  # nothing deployed yet is a state, not a failure
            return web.json_response(body)
        return web.json_response({**body, "error": ready["reason"]}, status=503)

    async def forward(request: web.Request) -> web.StreamResponse:
        try:
            body, taken = await budget.read(request)
        except BodyRefused as refused:
            log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, refused.message)
            answer = web.json_response({"error": refused.message}, status=refused.status, headers=(
                {"Retry-After": str(RETRY_AFTER_S)} if refused.status == 503 else None))
            answer.force_close()  # the unread body is drained (aiohttp's lingering read), never kept
            return answer
        try:
            return await _forward(request, body)
        finally:
            budget.release(taken)

    async def _forward(request: web.Request, body: bytearray) -> web.StreamResponse:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        candidates = upstream.urls
        if not candidates:
            return web.json_response({"error": "no model is being served yet: none has passed the "
                                               "promotion gate and been deployed"}, status=503)
        errors = []
        for base in [*candidates, None]:
            if base is None:  # every process failed: a switch may have happened meanwhile
                await asyncio.sleep(POLL_S)
                upstream.refresh()
                base = upstream.url
                if base is None or base in candidates:
                    break
            try:
                answer = await request.app[POOL].request(base, request.method, request.raw_path, headers, body)
            except UpstreamError as exc:
                errors.append(f"{base}: {exc}")
                upstream.suspect(base)
                continue
            except TimeoutError:  # hung, or its host cut off: the next one (the endpoints answer, they do not act)
                errors.append(f"{base}: no answer within {request.app[POOL].timeout:.0f} s")
                upstream.suspect(base)
                log.warning("%s %s: no answer from %s within %.0f s: trying the next upstream", request.method,
                            request.path, base, request.app[POOL].timeout)
                continue
            out = CIMultiDict((k, v) for k, v in answer.headers if k.lower() not in HOP_BY_HOP)
            return web.Response(body=answer.body, status=answer.status, reason=answer.reason or None, headers=out)
        return web.json_response({"error": f"the serving bento is unreachable: {'; '.join(errors)}"}, status=502)

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[host_check])
    app[BODY_BUDGET] = budget
    app.cleanup_ctx.append(poll)
    app.router.add_get("/-/stockops/upstream", status)
    app.router.add_get("/-/stockops/health", health)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stockops.serving.proxy", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--state", type=Path, help="this host's current.json (the proxy of one serving host)")
    where.add_argument("--fleet-db", help="the records' database the serving agents beat into (the front proxy of "
                                          "several serving hosts)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--allowed-hosts", default=os.environ.get("STOCKOPS_ALLOWED_HOSTS", ",".join(DEFAULT_ALLOWED_HOSTS)),
                        help="comma-separated Host names answered (empty: any)")
    parser.add_argument("--max-buffered-bytes", type=int,
                        default=int(os.environ.get("STOCKOPS_PROXY_BUFFER_BYTES") or MAX_BUFFERED_BYTES),
                        help="request bodies held in memory at once, all requests together (beyond: 503)")
    parser.add_argument("--log", type=Path, help="log file (rotated); default: stderr")
    parser.add_argument("--max-log-bytes", type=int, default=10 * 1024 * 1024)
    args = parser.parse_args(argv)
    handler = (RotatingFileHandler(args.log, maxBytes=args.max_log_bytes, backupCount=3) if args.log
               else logging.StreamHandler())
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    hosts = tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
    web.run_app(make_app(args.state, hosts, args.max_buffered_bytes, args.fleet_db), host=args.host, port=args.port, access_log=None,
                print=lambda *_: log.info("listening on http://%s:%d", args.host, args.port), loop=_event_loop())


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop (libuv; it comes with uvicorn's standard extras, which BentoML installs): each forwarded
    request costs the proxy about a third less CPU than on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":
    main()
