"""The stable serving address: a small reverse proxy in front of whichever bento is current.

Users call one address (default ``127.0.0.1:3000``). A deploy starts the new bento on a
free port, checks it, then rewrites ``current.json``; the proxy picks the new upstream up
within ``POLL_S`` and sends every later request there, while requests already in flight
finish on the old bento, which the deploy stops only afterwards. A connection error to the
upstream (the old one went away mid-switch) is retried once on the then-current upstream,
so a switch under load fails no request.

``GET /-/stockops/upstream`` tells which bento the proxy routes to. With nothing deployed
yet, every other path answers 503 with the reason.

Run: ``python -m stockops.proxy --state <serving>/current.json --host 127.0.0.1 --port 3000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from aiohttp import ClientConnectionError, ClientSession, ClientTimeout, TCPConnector, web

POLL_S = 0.1
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}
log = logging.getLogger("stockops.proxy")


class Upstream:
    """The current upstream, re-read from the state file when it changes."""

    def __init__(self, state_path: Path):
        self.state_path = state_path
        self.mtime_ns = -1
        self.state: dict = {}

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


def make_app(state_path: Path) -> web.Application:
    upstream = Upstream(state_path)
    upstream.refresh()

    async def poll(app: web.Application):
        async def loop():
            while True:
                upstream.refresh()
                await asyncio.sleep(POLL_S)

        app["session"] = ClientSession(connector=TCPConnector(limit=0, keepalive_timeout=30),
                                       timeout=ClientTimeout(total=60), auto_decompress=False)
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        await app["session"].close()

    async def status(_: web.Request) -> web.Response:
        upstream.refresh()
        return web.json_response({"upstream": upstream.url, **upstream.state})

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        for attempt in (1, 2):
            base = upstream.url
            if base is None:
                return web.json_response({"error": "no model is being served yet: none has passed the "
                                                   "promotion gate and been deployed"}, status=503)
            try:
                async with request.app["session"].request(request.method, base + request.path_qs,
                                                          data=body, headers=headers) as resp:
                    payload = await resp.read()
                    out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
                    return web.Response(body=payload, status=resp.status, headers=out)
            except ClientConnectionError as exc:
                if attempt == 2:
                    return web.json_response({"error": f"the serving bento at {base} is unreachable: {exc}"},
                                             status=502)
                await asyncio.sleep(POLL_S)
                upstream.refresh()
        raise AssertionError("unreachable")

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.cleanup_ctx.append(poll)
    app.router.add_get("/-/stockops/upstream", status)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stockops.proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    web.run_app(make_app(args.state), host=args.host, port=args.port, access_log=None,
                print=lambda *_: log.info("listening on http://%s:%d", args.host, args.port))


if __name__ == "__main__":
    main()
