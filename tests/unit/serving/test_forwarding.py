"""The proxy's upstream connections (``stockops.serving.forwarding``) against real sockets on loopback."""

from __future__ import annotations

import asyncio

import pytest

from stockops.core.processes import free_port
from stockops.serving.forwarding import UpstreamError, UpstreamPool, parse_answer


def test_answers_are_parsed_by_length_chunks_or_status():
    buffer = bytearray(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1")
    answer = parse_answer(buffer)
    assert (answer.status, answer.reason, answer.body, answer.keep_alive) == (200, "OK", b"{}", True)
    assert ("Content-Type", "application/json") in answer.headers and buffer == b"HTTP/1.1"
    chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n"
    for cut in range(len(chunked)):  # every prefix is incomplete, never wrong
        assert parse_answer(bytearray(chunked[:cut])) is None
    answer = parse_answer(bytearray(chunked))
    assert (answer.status, answer.body) == (404, b"abcde") and all(k != "Transfer-Encoding" for k, _ in answer.headers)
    assert parse_answer(bytearray(b"HTTP/1.1 204 No Content\r\n\r\n")).body == b""
    assert parse_answer(bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"), head_only=True).body == b""
    assert not parse_answer(bytearray(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")).keep_alive
    with pytest.raises(ValueError, match="status line"):
        parse_answer(bytearray(b"SSH-2.0-OpenSSH\r\n\r\n"))


async def _server(handler) -> tuple[asyncio.Server, str, list]:
    """A loopback server that reads one request head (and its Content-Length body) per turn and lets ``handler``
    answer; returns the server, its base URL and the requests it saw."""
    seen: list = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            body = await reader.readexactly(length)
            seen.append((head, body))
            if not await handler(writer, len(seen)):
                break
        writer.close()

    port = free_port()
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    return server, f"http://127.0.0.1:{port}", seen


def test_a_request_goes_out_whole_and_its_connection_is_kept():
    async def scenario():
        async def answer(writer, n):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Which: %d\r\n\r\nhello" % n)
            return True

        server, base, seen = await _server(answer)
        pool = UpstreamPool(timeout=5)
        try:
            first = await pool.request(base, "POST", "/forecast?x=1", [("Content-Type", "application/json")],
                                       bytearray(b'{"ticker": "GOOG"}'))
            second = await pool.request(base, "GET", "/readyz", [], b"")
        finally:
            pool.close()
            server.close()
        return first, second, seen

    first, second, seen = asyncio.run(scenario())
    assert (first.status, first.body, ("X-Which", "1") in first.headers) == (200, b"hello", True)
    assert ("X-Which", "2") in second.headers, "the second request reused the first one's connection"
    head, body = seen[0]
    assert head.startswith(b"POST /forecast?x=1 HTTP/1.1\r\nHost: 127.0.0.1:") and body == b'{"ticker": "GOOG"}'
    assert b"Content-Length: 18" in head and b"Content-Length" not in seen[1][0]


def test_a_connection_the_upstream_closed_while_idle_is_replaced():
    async def scenario():
        async def answer_then_close(writer, n):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return False  # closes the kept-alive connection after each answer, as an idle timeout would

        server, base, seen = await _server(answer_then_close)
        pool = UpstreamPool(timeout=5)
        try:
            answers = [await pool.request(base, "GET", "/", [], b"") for _ in range(3)]
            await asyncio.sleep(0.05)
            answers.append(await pool.request(base, "GET", "/", [], b""))
        finally:
            pool.close()
            server.close()
        return answers, seen

    answers, seen = asyncio.run(scenario())
    assert [a.body for a in answers] == [b"ok"] * 4 and len(seen) == 4


def test_an_unreachable_or_silent_upstream_is_an_upstream_error():
    async def scenario():
        pool = UpstreamPool(timeout=5)
        with pytest.raises(UpstreamError, match="cannot connect"):
            await pool.request(f"http://127.0.0.1:{free_port()}", "GET", "/", [], b"")

        async def hang_up(writer, n):
            return False  # closes without an answer

        server, base, _ = await _server(hang_up)
        try:
            with pytest.raises(UpstreamError, match="closed before an answer"):
                await pool.request(base, "POST", "/forecast", [], b"{}")
        finally:
            pool.close()
            server.close()

    asyncio.run(scenario())
