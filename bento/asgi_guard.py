"""``RequestGuard``, the ASGI layer in front of BentoML: the Host check (DNS rebinding), body size and type limits, one
log line per refused request instead of a traceback, an index page without BentoML's third-party tag manager, an
OpenAPI document that is valid 3.0 and states the real minimum rows and the error answers, and the forecasts kept in
memory answered without BentoML's machinery."""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus

from bentoml.exceptions import BentoMLException
from memory_answers import SMOKE_HEADER, MemoryAnswers
from pydantic import (
    ValidationError,
)
from served_code import log, served_settings

MAX_BODY_BYTES = 256 * 1024  # bodies above this are refused with 413 before parsing
PREDICT_PATHS = {"/predict"}
FORECAST_PATHS = {"/forecast", "/forecast/batch"}  # the forecast from the store's snapshot of a ticker
# the service's answers kept as bytes (memory_answers.MemoryAnswers), once it has started: forecast requests whose
# answer is there are answered here, before BentoML's request machinery
MEMORY: list[MemoryAnswers] = []
FROM_MEMORY = [(b"x-stockops-answer", b"memory")]


class BodyTooLarge(BentoMLException):
    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


# A <script>, <noscript> or <iframe> that names another host: BentoML's index page embeds Google
# Tag Manager this way. Local scripts (./static_content/...) never hold "//".
THIRD_PARTY_ELEMENT = re.compile(rb"<(script|noscript|iframe)\b[^>]*>.*?</\1\s*>", re.S | re.I)
PREDICT_ERRORS = {
    "400": "Invalid JSON, a field that fails its check (the message names the field and, for a value, its row "
           "(0 = oldest)), or a Host header that is not allowed",
    "413": f"The body is over {MAX_BODY_BYTES} bytes",
    "415": "Content-Type is not application/json",
    "422": "The request is valid but the model's forecast for it is not a finite number",
}
FORECAST_ERRORS = {
    **{code: PREDICT_ERRORS[code] for code in ("400", "413", "415")},
    "404": "An unknown ticker (not a symbol of the watchlist, which the message lists) or one with no published "
           "snapshot yet (the batch: when no ticker answered; each entry says why)",
    "409": "The ticker's latest snapshot is stale (published more than STOCKOPS_MAX_STALENESS_SESSIONS weekdays "
           "ago: ingest is behind) or holds fewer days than the model needs",
    "422": "The model's forecast for the snapshot's days is not a finite number",
    "503": "The ticker's snapshot pointer or file cannot be read or does not match its hash (the message names "
           "the file)",
}
ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "string", "description": "What is wrong"},
    "detail": {"type": "array", "items": {"type": "object"}, "description": "Field checks: one entry per error"}}}


class RequestGuard:
    """ASGI middleware in front of BentoML, for what BentoML does not do.

    Every path: refuse a Host header outside ``STOCKOPS_ALLOWED_HOSTS``, or more than one (400; a
    DNS-rebinding page would reach the loopback server under its own host name). ``/``: BentoML's page without its
    third-party tag manager. ``/docs.json``: BentoML's document made valid OpenAPI 3.0, with the
    predict and forecast paths' real error answers. Those paths: refuse oversized (413) and non-JSON (415)
    bodies before BentoML reads them, and answer every 4xx as ``{"error": ...}`` with a message that
    names the field, logged in one line (BentoML's traceback per bad request is dropped, see
    ``ClientErrorsWithoutTraceback``). A forecast whose answer the service keeps in memory (``MEMORY``) is answered
    here, after those checks, before BentoML's own middlewares and request handling (``service._guard_outermost``
    puts the guard in front of them).
    """

    def __init__(self, app, max_body_bytes: int = MAX_BODY_BYTES, allowed_hosts: str | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        hosts = allowed_hosts or ",".join(served_settings.ServedSettings.read(log.warning).allowed_hosts)
        self.allowed_hosts = {h.strip().lower() for h in hosts.split(",") if h.strip()}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        hosts = [value for name, value in scope["headers"] if name.lower() == b"host"]
        if len(hosts) > 1:  # uvicorn passes them all on; the check would read one and an app another
            return await _error(scope, send, 400, f"{len(hosts)} Host headers: send exactly one")
        host = headers.get(b"host", b"").decode("latin-1")
        if _host_name(host) not in self.allowed_hosts:
            return await _error(scope, send, 400, f"Host {host!r} is not allowed (allowed: "
                                                  f"{', '.join(sorted(self.allowed_hosts))}; port ignored)")
        if scope["method"] == "GET" and scope["path"] == "/":
            return await self._rewritten(scope, receive, send, _without_third_party_elements)
        if scope["method"] == "GET" and scope["path"] == "/docs.json":
            return await self._rewritten(scope, receive, send, _openapi_30)
        if scope["path"] not in PREDICT_PATHS | FORECAST_PATHS or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if content_type != "application/json":
            return await _error(scope, send, 415,
                                f"Content-Type must be application/json, got {content_type or 'none'!r}")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return await _error(scope, send, 413, f"request body of {length.decode('latin-1')} bytes is over the "
                                                  f"{self.max_body_bytes}-byte limit")
        if scope["path"] in FORECAST_PATHS and MEMORY:
            body = await _whole_body(receive, self.max_body_bytes)
            if body is None:  # the client left, or the body outgrew the limit its Content-Length declared
                return await _error(scope, send, 413, f"request body is over the {self.max_body_bytes}-byte limit")
            answer = MEMORY[0].answer(scope["path"], body, logged=SMOKE_HEADER.encode() not in headers)
            if answer is not None:
                return await _send_json(send, answer, FROM_MEMORY)
            receive = _replayed(body, receive)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise BodyTooLarge(f"request body is over the {self.max_body_bytes}-byte limit")
            return message

        def one_error_shape(status: int, body: bytes) -> bytes:
            if 400 <= status < 500:
                body = _client_error_body(body)
                _log_refused(scope, status, json.loads(body)["error"])
            return body

        return await self._rewritten(scope, counted_receive, send, one_error_shape)

    async def _rewritten(self, scope, receive, send, rewrite) -> None:
        """Run the app, then send its answer with the body ``rewrite(status, body)`` (answers here are small)."""
        start, chunks = {}, []

        async def keep(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, keep)
        body = rewrite(start["status"], b"".join(chunks))
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


async def _whole_body(receive, limit: int) -> bytes | None:
    """The request's body (None past ``limit`` bytes, or when the client disconnected first)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replayed(body: bytes, receive):
    """``receive`` for the app after the guard read the body: the body once, then the client's own messages."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _send_json(send, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})


def _host_name(host: str) -> str:
    """``Host`` without its port: ``[::1]:3000`` -> ``::1``, ``localhost:3000`` -> ``localhost``."""
    if host.startswith("["):
        return host[1:host.find("]")].lower()
    return (host.rsplit(":", 1)[0] if host.count(":") == 1 else host).lower()


def _without_third_party_elements(status: int, page: bytes) -> bytes:
    return THIRD_PARTY_ELEMENT.sub(lambda m: b"" if b"//" in m.group(0) else m.group(0), page)


def _openapi_30(status: int, body: bytes) -> bytes:
    """BentoML's document as valid OpenAPI 3.0: pydantic writes JSON Schema 2020-12 (``anyOf`` with
    ``null``, ``examples``), BentoML lists none of the predict path's 413/415/422 answers, and it leaves
    the request body optional though the service answers a request without one 415."""
    if status != 200:
        return body
    doc = _schema_30(json.loads(body))
    doc["components"]["schemas"]["StockopsError"] = ERROR_SCHEMA
    for paths, errors in ((PREDICT_PATHS, PREDICT_ERRORS), (FORECAST_PATHS, FORECAST_ERRORS)):
        for path in paths:
            if "requestBody" in doc["paths"][path]["post"]:  # BentoML leaves it optional; without one: 415
                doc["paths"][path]["post"]["requestBody"]["required"] = True
            responses = doc["paths"][path]["post"]["responses"]
            responses.update({code: {"description": what, "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/StockopsError"}}}} for code, what in errors.items()})
    return json.dumps(doc).encode()


def _schema_30(node):
    """``anyOf: [X, {type: null}]`` (or a null default) -> X with ``nullable: true``; a schema's ``examples`` list ->
    ``example``."""
    if isinstance(node, list):
        return [_schema_30(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _schema_30(v) for k, v in node.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del node["anyOf"]
        node.update({**rest[0], "nullable": True} if len(rest) == 1 else {"anyOf": rest, "nullable": True})
    if "default" in node and node["default"] is None and "type" in node:  # BentoML drops the null of an
        node["nullable"] = True  # ``X | None = None`` parameter (``tickers``); the service takes a null
    if isinstance(node.get("examples"), list):
        examples = node.pop("examples")
        if examples:
            node["example"] = examples[0]
    return node


def _client_error_body(body: bytes) -> bytes:
    """``{"error": ...}`` for every 4xx. BentoML answers its own errors as a one-item list, and a failed
    field check as ``"N validation errors for ..."``, with the field only in ``detail``: say it up front."""
    try:
        answer = json.loads(body)
    except ValueError:
        return json.dumps({"error": body.decode(errors="replace")}).encode()
    if isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    if isinstance(answer, dict) and isinstance(answer.get("detail"), list):
        errors = [_field_error(e) for e in answer["detail"]]
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        answer["error"] = "; ".join(errors[:10]) + more
    return json.dumps(answer).encode()


def _field_error(error: dict) -> str:
    """``closes row 3: Input should be a finite number`` from pydantic's ``loc`` and ``msg``."""
    where = " ".join(f"row {part}" if isinstance(part, int) else str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _log_refused(scope, status: int, reason: str) -> None:
    log.info("refused %s %s: %d %s", scope["method"], scope["path"], status, " ".join(reason.split())[:200])


async def _error(scope, send, status: int, message: str) -> None:
    _log_refused(scope, status, message)
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ClientErrorsWithoutTraceback(logging.Filter):
    """Drop BentoML's "Exception on /predict" records for client errors: each came with a full
    traceback (a 25 KB bad body wrote 881 KB of log); ``RequestGuard`` logs them in one line.
    Server errors (5xx) keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, ValidationError)
                    or (isinstance(error, BentoMLException) and error.error_code < 500))
