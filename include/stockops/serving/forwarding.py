"""The proxy's side towards the bentos: kept-alive HTTP/1.1 connections and one request at a time on each.

aiohttp's client built a request object, a response object, a timer and a connection-pool lookup for every
forwarded request: with an answer from memory costing the bento 0.12 ms of CPU, the proxy's client half was the
largest cost of a request at the stable address. Here a request is one write of its bytes and its answer is parsed
from what arrives (the status line, the headers, then ``Content-Length`` bytes or the chunks). What the proxy
needs and nothing else: no redirects, cookies, compression or proxies of its own; the upstreams are the
platform's own bentos.

A connection error (refused, reset, closed before an answer) raises :class:`UpstreamError`, which the proxy answers
by trying the bento's spares. A kept-alive connection the bento closed while it sat idle is noticed (its
``connection_lost``) and dropped; one that closes just as a request is written is retried once on a new
connection, which is safe: the bento answered nothing on it.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

NO_BODY_STATUSES = {204, 304}
MAX_IDLE_PER_UPSTREAM = 256
CONNECT_TIMEOUT_S = 5.0  # an upstream on another host whose network is gone must not hold a request for minutes


class UpstreamError(ConnectionError):
    """The upstream could not be reached, or closed the connection before it answered."""


class Answer:
    __slots__ = ("body", "headers", "keep_alive", "reason", "status")

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, keep_alive: bool):
        self.status, self.reason, self.headers, self.body, self.keep_alive = status, reason, headers, body, keep_alive


class _Connection(asyncio.Protocol):
    transport: asyncio.Transport  # set by connection_made, before the connection is handed out

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.head_only = False
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            try:
                answer = parse_answer(self.buffer, self.head_only)
            except ValueError as exc:
                self.waiter.set_exception(UpstreamError(f"unreadable answer: {exc}"))
                self.transport.close()
                return
            if answer is not None:
                self.waiter.set_result(answer)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(UpstreamError(f"the connection closed before an answer ({exc or 'EOF'})"))

    async def exchange(self, raw: bytes, head_only: bool, timeout: float) -> Answer:
        self.buffer.clear()
        self.head_only = head_only
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        try:
            return await asyncio.wait_for(self.waiter, timeout)
        except BaseException:
            self.transport.close()  # a timed-out or cancelled exchange leaves the connection in an unknown state
            raise


def parse_answer(buffer: bytearray, head_only: bool = False) -> Answer | None:
    """The first whole answer in ``buffer``, or None while it is incomplete; raises ValueError on nonsense."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ValueError(f"status line {lines[0][:80]!r}")
    status = int(code)
    headers = []
    length, chunked, keep_alive = None, False, version != "HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        lowered = name.lower()
        if lowered == "content-length":
            length = int(value)
        elif lowered == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif lowered == "connection":
            keep_alive = "close" not in value.lower() if keep_alive else "keep-alive" in value.lower()
        headers.append((name, value))
    start = end + 4
    if head_only or status in NO_BODY_STATUSES or 100 <= status < 200:
        del buffer[:start]
        return Answer(status, reason, headers, b"", keep_alive)
    if not chunked:
        if length is None:
            raise ValueError("an answer with neither Content-Length nor chunked encoding")
        if len(buffer) < start + length:
            return None
        body = bytes(buffer[start:start + length])
        del buffer[:start + length]
        return Answer(status, reason, headers, body, keep_alive)
    pos, chunks = start, list[bytes]()
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buffer[pos:line_end]).split(b";")[0], 16)
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", line_end)
            if trailer_end < 0:
                return None
            del buffer[:trailer_end + 4]
            return Answer(status, reason, [(k, v) for k, v in headers if k.lower() != "transfer-encoding"],
                          b"".join(chunks), keep_alive)
        if len(buffer) < line_end + 2 + size + 2:
            return None
        chunks.append(bytes(buffer[line_end + 2:line_end + 2 + size]))
        pos = line_end + 2 + size + 2


class UpstreamPool:
    """Kept-alive connections per upstream base URL (``http://host:port``), one request at a time on each."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self._idle: dict[str, list[_Connection]] = {}

    async def request(self, base: str, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes | bytearray) -> Answer:
        """``method target`` with ``headers`` and ``body`` to ``base``; raises :class:`UpstreamError`."""
        parts = urlsplit(base)
        head = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}",
                *(f"{k}: {v}" for k, v in headers)]
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            head.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + bytes(body)
        for attempt in (1, 2):
            connection, reused = self._take(base), True
            if connection is None:
                connection, reused = await self._connect(parts), False
            try:
                answer = await connection.exchange(raw, method == "HEAD", self.timeout)
            except UpstreamError:
                if reused and attempt == 1:
                    continue  # closed by the bento while idle, as the request went out: once more, on a new one
                raise
            if answer.keep_alive and not connection.closed:
                self._give_back(base, connection)
            else:
                connection.transport.close()
            return answer
        raise AssertionError("unreachable")

    def _take(self, base: str) -> _Connection | None:
        idle = self._idle.get(base)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    def _give_back(self, base: str, connection: _Connection) -> None:
        idle = self._idle.setdefault(base, [])
        if len(idle) < MAX_IDLE_PER_UPSTREAM:
            idle.append(connection)
        else:
            connection.transport.close()

    @staticmethod
    async def _connect(parts) -> _Connection:
        try:
            _, connection = await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                _Connection, parts.hostname, parts.port or 80), CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            raise UpstreamError(f"cannot connect within {CONNECT_TIMEOUT_S:.0f} s") from exc
        except OSError as exc:
            raise UpstreamError(f"cannot connect: {exc}") from exc
        return connection

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.transport.close()
        self._idle.clear()
