"""The stockops BentoML service: tomorrow's return distribution from the promoted risk forecaster.

One service, ``StockForecast``: strict input checks, the answer's lineage fields, the
served-prediction log, and the packed model of either kind (``forecaster.json`` names it; every answer
carries ``model_kind``): the LSTM's forward pass in numpy (``network.npz``, the portable core's
``NumpyNetwork``: a window's answer has the same bits in any batch, the pyfunc's and the monitor's; no
TensorFlow) behind adaptive batching — the requests that arrive while a batch runs form the next batch (up to
``MAX_BATCH_SIZE``), so the batch grows with the load and a lone request waits for nothing — or the classical
baseline HARX-GKO (the champion while no LSTM has passed the gate): its per-ticker fit in numpy.

A request carries raw recent daily OHLCV (and, optionally, the market reference's closes); the
service turns its last ``history`` rows into the network's input with the same code as training
(``stockops.model.portable.forecaster.feature_matrix``, standardised with the calibration's scalers) and the
network's output into variance, quantiles and a point forecast (``forecast_from_network``). That
code travels in the model (``code/stockops/model/portable/``, with ``forecaster.json``): outside the project's
environment the service imports it from there.

``/forecast`` (one ticker) and ``/forecast/batch`` (several, default the watchlist) take no prices:
they read the ticker's latest published snapshot from the platform's store
(:class:`PublishedSnapshots`) and its last ``history`` days, with the market reference's closes
aligned on them as ``stockops.serving.request_body`` does, go through the same path as
``/predict`` (``_forecast``). Their answers add the snapshot's lineage; a ticker that cannot be
answered gets 404 (unknown, or no snapshot), 409 (stale) or 503 (a corrupt file, named).

Why not BentoML's ``batchable`` API: it batches only HTTP calls to that API, so a validated
single-window endpoint needs a second service reached through ``bentoml.depends``. Measured
here under load, that internal hop dropped about 1 % of calls (bentoml/BentoML#4971, a keep-alive
race; fix pending upstream) and left about 1 in 2,000 hanging until the 30 s timeout, even with
retries. In-process batching removes the hop, its failures and its CPU cost.

Which model is packed comes from the build argument ``model_tag`` (``bentoml build --arg`` or
``bentoml.bentos.build(args=...)``); the bento stores it, so ``bentoml serve <bento>`` serves the
same model. ``/livez``, ``/readyz``, ``/metrics`` and the OpenAPI page at ``/`` come with BentoML.

``RequestGuard``, the ASGI layer in front of BentoML, holds what BentoML does not: the Host check
(DNS rebinding), body size and type limits, one log line per refused request instead of a
traceback, an index page without BentoML's third-party tag manager, and an OpenAPI document that
is valid 3.0 and states the real minimum rows and the 400/413/415/422 answers. Start-up moves
the service's logs from stdout into a size-capped rotating file (``STOCKOPS_BENTO_LOG``,
``STOCKOPS_LOG_MAX_BYTES``).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import importlib
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import BentoMLException
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from starlette.responses import JSONResponse

ARGS = bentoml.use_arguments()
MODEL_TAG: str = getattr(ARGS, "model_tag", None) or os.environ.get("STOCKOPS_BENTO_MODEL", "stockops_risk:latest")
MAX_ROWS = 5000  # a request with more days than this is refused (413-style 400)
MAX_BATCH_SIZE = 64
MAX_BODY_BYTES = 256 * 1024  # bodies above this are refused with 413 before parsing
PREDICT_PATHS = {"/predict"}
FORECAST_PATHS = {"/forecast", "/forecast/batch"}  # the forecast from the store's snapshot of a ticker
MAX_TICKER_CHARS = 32  # longer is refused with 400; a symbol has at most 15 (stockops.core.settings.TICKER_PATTERN)
MAX_BATCH_TICKERS = 256
HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")
SNAPSHOT_COLUMNS = ("Date", "Open", "High", "Low", "Close", "Volume")
SMOKE_HEADER = "x-stockops-smoke"  # deploy checks send it: their answers stay out of the prediction log
INTERVALS = {"50": ("q25", "q75"), "90": ("q05", "q95"), "98": ("q01", "q99")}  # central intervals, as prices
# Finite inputs can still break the features: a close of 5e-324 after 100 makes c / prev_close
# infinite, 1e308 gives log-ratio features in the tens of thousands, and 3.5e38 is past float32
# (the network's type). Within these bounds every log ratio stays under ~35, and they hold every
# listed stock's prices and volumes with room to spare.
MIN_PRICE, MAX_PRICE = 1e-6, 1e9
MAX_VOLUME = 1e15
EARLIEST_AS_OF, LATEST_AS_OF = date(1900, 1, 1), date(2199, 12, 31)  # the next business day stays a date
log = logging.getLogger("bentoml.stock_forecast")  # under "bentoml": BentoML's level and format apply


def _model_path() -> Path | None:
    try:
        return Path(bentoml.models.get(MODEL_TAG).path)
    except Exception:  # noqa: BLE001 - no model store at hand (e.g. an import to read the OpenAPI spec)
        return None


def _import_served(name: str, package: str = "stockops.model.portable"):
    """``<package>.<name>``: the project's, or else the copy the packed model carries (``code/``)."""
    module = f"{package}.{name}"
    try:
        return importlib.import_module(module)
    except ImportError:
        path = _model_path()
        if path is None or not (path / "code" / (module.replace(".", "/") + ".py")).exists():
            raise
        if str(path / "code") not in sys.path:
            sys.path.insert(0, str(path / "code"))
        return importlib.import_module(module)


fc = _import_served("forecaster")
risk_inputs = _import_served("risk_inputs")  # align_market: the one alignment rule of training and serving
prediction_log = _import_served("prediction_log")  # the served-prediction log's layout: bounded, counted exactly
# The STOCKOPS_* variables read here (ServedSettings.read), declared once with the platform's settings.
served_settings = _import_served("served_settings", "stockops.core")
MAX_STALENESS_SESSIONS: int = served_settings.ServedSettings.model_fields["max_staleness_sessions"].default
TICKER_PATTERN = served_settings.TICKER_PATTERN


def _history() -> int:
    """Days the packed model needs (its calibration's ``history``): the request model's minimum rows.

    Without a model at hand (an import to read the OpenAPI spec) nothing is served: the minimum
    is then the fewest rows that give one complete feature row.
    """
    path = _model_path()
    if path is None:
        return fc.WARMUP + 1
    return fc.read_calibration(path).history


HISTORY = _history()
EXAMPLE = fc.synthetic_ohlcv(HISTORY + 10)
EXAMPLE_MARKET = fc.synthetic_ohlcv(len(EXAMPLE), start=300.0, seed=1)["Close"]


def _example(values) -> dict:
    """An OpenAPI 3.0 ``example`` (3.0 has no JSON-Schema ``examples`` list)."""
    return {"example": [float(x) for x in values]}


def _within(low: float, high: float) -> AfterValidator:
    """Every value in [low, high]; the message names the first row outside (the field comes with it)."""
    def check(values: list[float]) -> list[float]:
        v = np.asarray(values, dtype=np.float64)
        outside = (v < low) | (v > high)
        if outside.any():
            i = int(np.argmax(outside))
            raise ValueError(f"row {i} (0 = oldest) is {values[i]!r}; values must be between {low:g} and {high:g}")
        return values
    return AfterValidator(check)


def _series(low: float, high: float):
    """One value per day, finite and in [low, high]; documented with the model's real minimum rows."""
    return Annotated[list[Annotated[float, Field(strict=True, allow_inf_nan=False)]],
                     Field(max_length=MAX_ROWS, json_schema_extra={
                         "minItems": HISTORY, "items": {"type": "number", "minimum": low, "maximum": high}}),
                     _within(low, high)]


def _enough_days(closes: list[float]) -> list[float]:
    if len(closes) < HISTORY:
        raise ValueError(f"{len(closes)} days; the model needs at least {HISTORY} (a window + {fc.WARMUP} days of "
                         f"warm-up for its features; the last {HISTORY} are used)")
    return closes


Prices = _series(MIN_PRICE, MAX_PRICE)
Volumes = _series(0.0, MAX_VOLUME)


class ForecastRequest(BaseModel):
    """Recent daily OHLCV, oldest first, one value per day in every field; the last ``history`` days are used."""

    model_config = ConfigDict(extra="forbid", strict=True)

    closes: Annotated[Prices, AfterValidator(_enough_days)] = Field(
        description=f"Daily closes, oldest first: at least {HISTORY} days (the model's window + warm-up), "
                    f"prices between {MIN_PRICE:g} and {MAX_PRICE:g}.", json_schema_extra=_example(EXAMPLE["Close"]))
    open: Prices = Field(description="Daily opens, the same days as closes, in the same price range.",
                         json_schema_extra=_example(EXAMPLE["Open"]))
    high: Prices = Field(description="Daily highs, the same days: >= max(open, close) of the day.",
                         json_schema_extra=_example(EXAMPLE["High"]))
    low: Prices = Field(description="Daily lows, the same days: <= min(open, close) of the day.",
                        json_schema_extra=_example(EXAMPLE["Low"]))
    volume: Volumes = Field(description=f"Daily volumes, the same days: between 0 (where unknown) and "
                                        f"{MAX_VOLUME:g}.", json_schema_extra=_example(EXAMPLE["Volume"]))
    market: Prices | None = Field(
        default=None, description="Optional: the market reference's closes (QQQ) on the same days, as in "
                                  "training; without them the model sees a flat market.",
        json_schema_extra=_example(EXAMPLE_MARKET))
    as_of: date | None = Field(
        default=None, description=f"Trading day of the last row (YYYY-MM-DD, {EARLIEST_AS_OF} to {LATEST_AS_OF}); "
                                  "echoed and logged for monitoring.",
        json_schema_extra={"example": EXAMPLE["Date"].iloc[-1].date().isoformat()})

    @field_validator("as_of")
    @classmethod
    def _a_plausible_day(cls, day: date | None) -> date | None:
        if day is not None and not EARLIEST_AS_OF <= day <= LATEST_AS_OF:
            raise ValueError(f"{day} is outside {EARLIEST_AS_OF} to {LATEST_AS_OF}")
        return day

    @model_validator(mode="after")
    def _one_value_per_day(self) -> ForecastRequest:
        days = len(self.closes)
        for name in ("open", "high", "low", "volume", "market"):
            values = getattr(self, name)
            if values is not None and len(values) != days:
                raise ValueError(f"{name} has {len(values)} values but closes has {days}: every field holds one "
                                 "value per day, the same days")
        o, h, lo, c = (np.asarray(v, dtype=np.float64) for v in (self.open, self.high, self.low, self.closes))
        for bad, what in ((h < np.maximum(o, c), "high is below max(open, close)"),
                          (lo > np.minimum(o, c), "low is above min(open, close)")):
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"row {i} (0 = oldest): {what} (open {o[i]}, high {h[i]}, low {lo[i]}, "
                                 f"close {c[i]})")
        return self


class TickerRequest(BaseModel):
    """A watchlist ticker whose latest published snapshot the forecast is made from."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ticker: str = Field(min_length=1, max_length=MAX_TICKER_CHARS, json_schema_extra={"example": "GOOG"},
                        description="A symbol of the watchlist (STOCKOPS_TICKERS), e.g. GOOG; case does not matter.")


class TickersRequest(BaseModel):
    """Several watchlist tickers (none: the whole watchlist)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tickers: list[Annotated[str, Field(min_length=1, max_length=MAX_TICKER_CHARS)]] | None = Field(
        default=None, max_length=MAX_BATCH_TICKERS, json_schema_extra={"example": ["GOOG", "MSFT"]},
        description=f"Symbols of the watchlist (at most {MAX_BATCH_TICKERS}); left out, null or empty: every "
                    "ticker of the watchlist.")


class SnapshotProblem(Exception):
    """Why a ticker cannot be forecast from the store: the HTTP status and a message that says which."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = HTTPStatus(status), message


@dataclass(frozen=True)
class Snapshot:
    """A ticker's latest published snapshot: its pointer's facts and its rows (Date, OHLCV; oldest first)."""

    ticker: str
    hash: str
    last_date: date
    published_at: datetime
    frame: pd.DataFrame


class PublishedSnapshots:
    """The platform's snapshot store, read-only: ``<home>/data/<TICKER>/latest.json`` -> ``snapshots/<hash>.parquet``.

    The layout is ``stockops.data.store``'s, read here without importing it (the bento carries only
    the forecaster's code). Each request reads the small pointer; the parquet is read, checked against
    its hash (the file's name, the store's ``content_hash``) and kept per ticker until the pointer names
    another hash, so a batch of the whole watchlist reads no parquet twice.

    **Staleness.** Validation refuses data whose newest row is more than ``max_staleness_sessions``
    NYSE sessions behind the day it should be current to (the logical date for a live source, the
    replay clock's market day for the replay), so a snapshot was fresh when it was published. What
    can go stale after that is the ingest: a snapshot is stale when it was published more than
    ``STOCKOPS_MAX_STALENESS_SESSIONS`` (default 5, the validation's setting) weekdays ago (its
    pointer's ``published_at`` against today, UTC). Its market dates cannot be compared with today:
    the replay publishes 2009 market days under 2026 logical dates. Weekdays, not NYSE sessions (the
    calendar library is not in the bento): an exchange holiday counts as a day behind, so the check
    is at most a day or two stricter than the validation's.
    """

    def __init__(self, data_dir: Path, watchlist: tuple[str, ...], market: str | None,
                 max_staleness_sessions: int = MAX_STALENESS_SESSIONS):
        self.data_dir = data_dir
        self.watchlist = watchlist
        self.market = market if market in watchlist else None  # as stockops.core.settings: no reference outside it
        self.max_staleness_sessions = max_staleness_sessions
        self._frames: dict[str, tuple[str, pd.DataFrame]] = {}  # ticker -> (hash, frame) of the last read

    @classmethod
    def from_environment(cls, metadata: dict) -> PublishedSnapshots:
        """From the serving process's environment (as ``stockops.core.settings.get_settings`` reads it); the watchlist
        and market the model was built with (its metadata) where the environment names none."""
        env = served_settings.ServedSettings.read(log.warning)  # a value that does not parse: warned, default used
        raw = (",".join(env.tickers) if "tickers" in env.model_fields_set
               else metadata.get("watchlist", "") or metadata.get("ticker", ""))
        watchlist = tuple(dict.fromkeys(served_settings.split_symbols(raw)))
        market = env.market if "market" in env.model_fields_set else str(metadata.get("market") or env.market).upper()
        return cls(env.home / "data", watchlist, market, env.max_staleness_sessions)

    def known(self, ticker: str) -> str:
        """``ticker`` upper-cased if it is a symbol of the watchlist; else 404."""
        symbol = ticker.strip().upper()
        if not TICKER_PATTERN.match(symbol) or symbol not in self.watchlist:
            raise SnapshotProblem(HTTPStatus.NOT_FOUND, f"unknown ticker {ticker!r}: the watchlist is "
                                                        f"{', '.join(self.watchlist)}")
        return symbol

    async def latest(self, ticker: str, role: str = "", missing_ok: bool = False) -> Snapshot | None:
        """``ticker``'s latest published snapshot: 404 if none (None with ``missing_ok``), 409 if stale, 503 if
        the pointer or the file cannot be read or does not match its hash."""
        pointer_path = self.data_dir / ticker / "latest.json"
        try:
            pointer = json.loads(pointer_path.read_text())
        except FileNotFoundError:
            if missing_ok:
                return None
            raise SnapshotProblem(HTTPStatus.NOT_FOUND, f"no published snapshot for {ticker}{role} yet") from None
        except (OSError, ValueError) as exc:
            raise self._corrupt(pointer_path, f"{type(exc).__name__}: {exc}", ticker) from exc
        try:
            digest, last_date = str(pointer["hash"]), date.fromisoformat(pointer["last_date"])
            published_at = datetime.fromisoformat(pointer["published_at"])
            if not HASH_PATTERN.match(digest):
                raise ValueError(f"hash {digest[:80]!r} is not a SHA-256")
        except (KeyError, TypeError, ValueError) as exc:
            raise self._corrupt(pointer_path, f"not a snapshot pointer: {type(exc).__name__}: {exc}", ticker) from exc
        if published_at.tzinfo is None:
            published_at = published_at.replace(tzinfo=UTC)
        behind = weekdays_between(published_at.astimezone(UTC).date(), datetime.now(UTC).date())
        if behind > self.max_staleness_sessions:
            raise SnapshotProblem(HTTPStatus.CONFLICT, (
                f"{ticker}'s{role} latest snapshot ends {last_date} and was published {published_at:%Y-%m-%d}, "
                f"{behind} weekdays ago: older than {self.max_staleness_sessions} days "
                f"(STOCKOPS_MAX_STALENESS_SESSIONS): ingest is behind"))
        cached = self._frames.get(ticker)
        if cached is None or cached[0] != digest:
            path = self.data_dir / ticker / "snapshots" / f"{digest}.parquet"
            frame = await asyncio.to_thread(self._read, path, digest, ticker)
            self._frames[ticker] = cached = (digest, frame)
        return Snapshot(ticker, digest, last_date, published_at, cached[1])

    def _read(self, path: Path, digest: str, ticker: str) -> pd.DataFrame:
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same answer: 503 naming it
            raise self._corrupt(path, f"{type(exc).__name__}: {exc}", ticker) from exc
        missing = [c for c in SNAPSHOT_COLUMNS if c not in frame.columns]
        if missing:
            raise self._corrupt(path, f"it lacks the column(s) {', '.join(missing)}", ticker)
        canonical = frame.to_csv(index=False, date_format="%Y-%m-%d", float_format="%.10g", lineterminator="\n")
        if hashlib.sha256(canonical.encode()).hexdigest() != digest:
            raise self._corrupt(path, f"its data does not match its hash {digest}: it was modified", ticker)
        frame = frame[list(SNAPSHOT_COLUMNS)].copy()
        frame["Date"] = pd.to_datetime(frame["Date"])
        return frame.reset_index(drop=True)

    @staticmethod
    def _corrupt(path: Path, problem: str, ticker: str) -> SnapshotProblem:
        return SnapshotProblem(HTTPStatus.SERVICE_UNAVAILABLE, (
            f"{path} cannot be used: {problem}. Restore it, or re-ingest {ticker} (stock_ingest with "
            f"tickers={ticker}), which writes it back"))


def weekdays_between(after: date, until: date) -> int:
    """Weekdays in ``(after, until]`` (negative when ``until`` is before ``after``)."""
    return int(np.busday_count(after + timedelta(days=1), until + timedelta(days=1)))


class BodyTooLarge(BentoMLException):
    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnusableForecast(BentoMLException):
    """The model's forecast for a valid request is not a finite number: the input's fault, not the server's."""

    error_code = HTTPStatus.UNPROCESSABLE_ENTITY


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
    ``ClientErrorsWithoutTraceback``).
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


def log_to_rotating_file() -> Path:
    """Send the service's logs (root, ``bentoml``, ``uvicorn`` and every other logger that wrote to a
    console) to one size-capped rotating file instead of stdout: the stdout file (which
    ``start_bento`` never rotates) then only gets start-up output. BentoML's format is kept."""
    env = served_settings.ServedSettings.read(log.warning)
    path = env.bento_log or env.home / "serving" / "logs" / f"bento-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(path, maxBytes=env.log_max_bytes,
                                  backupCount=3, encoding="utf-8")
    loggers = [logging.getLogger(), logging.getLogger("bentoml"), logging.getLogger("uvicorn"),
               *(x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    for logger in dict.fromkeys(loggers):
        consoles = [h for h in logger.handlers if type(h) is logging.StreamHandler]
        for console in consoles:
            handler.setFormatter(console.formatter)
            for f in console.filters:
                if f not in handler.filters:
                    handler.addFilter(f)
            logger.removeHandler(console)
        if consoles or logger is logging.getLogger() or not logger.propagate:
            logger.addHandler(handler)
    logging.getLogger("bentoml._internal.server.http_app").addFilter(ClientErrorsWithoutTraceback())
    return path


class AdaptiveBatcher:
    """Run ``predict_batch`` on whatever requests queued up while the previous batch ran."""

    def __init__(self, predict_batch, max_batch_size: int = MAX_BATCH_SIZE):
        self.predict_batch = predict_batch
        self.max_batch_size = max_batch_size
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def __call__(self, window: np.ndarray) -> np.ndarray:
        if self._worker is None:  # created in the server's event loop, on first use
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((window, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(w, f) for w, f in batch if not f.done()]  # skip callers that gave up
            if not batch:
                continue
            BATCH_SIZES.observe(len(batch))
            try:
                out = await asyncio.to_thread(self.predict_batch, np.stack([w for w, _ in batch]))
            except Exception as exc:  # every caller of the batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), value in zip(batch, out, strict=True):
                if not future.done():
                    future.set_result(value)


BATCH_SIZES = bentoml.metrics.Histogram(name="stockops_batch_size", documentation="Windows per model call",
                                        buckets=(1, 2, 4, 8, 16, 32, 64))


# traffic.timeout: BentoML arms a timer per request for this long and never cancels it, which
# keeps every finished request's objects alive that long (~11k objects/s under load here);
# a forecast takes milliseconds, so 5 s is generous and keeps the heap small.
@bentoml.service(name="stock_forecast", workers=1, traffic={"timeout": 5, "max_concurrency": 512})
class StockForecast:
    """Public API: validate, forecast (batched), answer with lineage, log the answer."""

    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        log.info("logging to %s", log_to_rotating_file())
        meta = dict(self.model.info.metadata)
        self.calibration = fc.read_calibration(Path(self.model.path_of("forecaster.json")).parent)
        self.window, self.history = self.calibration.window, self.calibration.history
        self.kind = self.calibration.kind if isinstance(self.calibration, fc.HarxCalibration) else fc.LSTM
        probe = fc.synthetic_ohlcv(self.history)
        if isinstance(self.calibration, fc.HarxCalibration):
            # the classical baseline: a handful of multiplications per forecast, numpy only (no TensorFlow)
            self.baseline: fc.HarxForecaster | None = fc.HarxForecaster(self.calibration)
            check = self.baseline.predict_windows(self.features(probe, None)[None])["variance"]
        else:
            self.baseline = None
            # the portable core's numpy forward pass (network.npz): the same bits as the pyfunc and the monitor for a
            # window, whatever else is in the batch; no TensorFlow
            self._lstm = fc.Forecaster.load(Path(self.model.path_of("forecaster.json")).parent)
            check = self.predict_batch(self.features(probe, probe["Close"].to_numpy() * 3.0)[None])
            if check.shape != (1, 2):
                raise RuntimeError(f"model {self.model.tag} answers {check} on a probe window: refusing to serve")
            self._batched = AdaptiveBatcher(self.predict_batch)
        if not np.isfinite(check).all():
            raise RuntimeError(f"model {self.model.tag} answers {check} on a probe window: refusing to serve")
        # TensorFlow and BentoML leave ~470k long-lived objects; a full GC over them froze the
        # server for 300-550 ms every ~2 s under load (p99 548 ms at 32 clients). Freezing them
        # after start-up takes them out of every later collection (pauses of 15-25 ms).
        gc.collect()
        gc.freeze()
        self.lineage = {
            "model_kind": self.kind,
            "model_description": fc.KIND_DESCRIPTIONS.get(self.kind, self.kind),
            "model_name": meta.get("model_name", ""),
            "model_version": str(meta.get("registry_version", "")),
            "bento_model": str(self.model.tag),
            "mlflow_run_id": meta.get("mlflow_run_id", ""),
            "snapshot_hash": meta.get("snapshot_hash", ""),
            "trained_through": meta.get("snapshot_last_date", ""),
            "ticker": meta.get("ticker", ""),
        }
        self.store = PublishedSnapshots.from_environment(meta)
        env = served_settings.ServedSettings.read(log.warning)
        self._log = env.prediction_log or (env.home / "serving" / "predictions.jsonl"
                                           if "home" in env.model_fields_set else None)
        self._log_max_bytes = env.log_max_bytes  # then it rotates
        if self._log is not None:
            self._log.parent.mkdir(parents=True, exist_ok=True)

    @bentoml.api(input_spec=ForecastRequest)
    async def predict(self, closes: list[float], open: list[float], high: list[float], low: list[float],  # noqa: A002
                      volume: list[float], ctx: bentoml.Context, market: list[float] | None = None,
                      as_of: date | None = None) -> dict:
        """Tomorrow's log-return distribution (point, quantiles, volatility) and the implied close and intervals."""
        n = self.history
        frame = pd.DataFrame({"Open": open[-n:], "High": high[-n:], "Low": low[-n:], "Close": closes[-n:],
                              "Volume": volume[-n:]})
        answer = await self._forecast(frame, None if market is None else np.asarray(market[-n:]), as_of)
        self._log_answer(answer, len(closes), ctx)
        return answer

    @bentoml.api(route="/forecast", input_spec=TickerRequest)
    async def forecast(self, ticker: str, ctx: bentoml.Context) -> dict:
        """Tomorrow's forecast for one watchlist ticker from its latest published snapshot (answer as /predict's,
        plus the snapshot's lineage); 404 unknown ticker or no snapshot, 409 stale, 503 corrupt."""
        try:
            return await self._forecast_ticker(ticker, ctx)
        except SnapshotProblem as problem:
            return self._refuse(problem, ctx)

    @bentoml.api(route="/forecast/batch", input_spec=TickersRequest)
    async def forecast_batch(self, ctx: bentoml.Context, tickers: list[str] | None = None) -> list[dict]:
        """One entry per ticker (default: the whole watchlist), in order; a ticker that cannot be answered gets
        ``{"ticker", "status", "error"}`` inline. 200 if at least one answered, else the worst status."""
        asked = list(dict.fromkeys(t.strip().upper() for t in tickers)) if tickers else list(self.store.watchlist)

        async def one(ticker: str) -> dict:
            try:
                return await self._forecast_ticker(ticker, ctx)
            except SnapshotProblem as problem:
                return {"ticker": ticker, "status": problem.status, "error": problem.message}
            except UnusableForecast as exc:
                return {"ticker": ticker, "status": int(exc.error_code), "error": str(exc)}

        entries = list(await asyncio.gather(*(one(t) for t in asked)))
        if any("error" not in e for e in entries):
            return entries
        status = max(e["status"] for e in entries)
        return self._refuse(SnapshotProblem(status, "no ticker answered: " + "; ".join(
            f"{e['ticker']}: {e['error']}" for e in entries)), ctx, results=entries)

    async def _forecast_ticker(self, ticker: str, ctx: bentoml.Context) -> dict:
        """The /forecast answer for ``ticker``: its snapshot's last ``history`` days (and the market reference's
        closes on those days) through the same path as /predict; raises :class:`SnapshotProblem`."""
        ticker = self.store.known(ticker)
        snapshot = await self.store.latest(ticker)
        if len(snapshot.frame) < self.history:
            raise SnapshotProblem(HTTPStatus.CONFLICT, f"{ticker}'s latest snapshot holds {len(snapshot.frame)} days; "
                                                       f"the model needs at least {self.history}")
        rows = snapshot.frame.iloc[-self.history:]
        market_snapshot = None
        market = None
        if self.store.market is not None:
            market_snapshot = snapshot if self.store.market == ticker else await self.store.latest(
                self.store.market, role=" (the market reference)", missing_ok=True)
        if market_snapshot is not None:
            market = risk_inputs.align_market(rows["Date"], market_snapshot.frame)  # as training aligns it
        as_of = snapshot.last_date
        answer = await self._forecast(rows[["Open", "High", "Low", "Close", "Volume"]].reset_index(drop=True),
                                      market, as_of, ticker)
        answer.update({
            "ticker": ticker, "snapshot_hash": snapshot.hash, "snapshot_last_date": as_of.isoformat(),
            "snapshot_published_at": snapshot.published_at.isoformat(),
            "training_snapshot_hash": self.lineage["snapshot_hash"],
            "market": self.store.market if market is not None else None,
            "market_snapshot_hash": market_snapshot.hash if market is not None else None,
        })
        self._log_answer(answer, len(rows), ctx)
        return answer

    def _refuse(self, problem: SnapshotProblem, ctx: bentoml.Context, **extra) -> JSONResponse:
        """``{"error": ...}`` with the problem's status, past the endpoint's 200 schema; a 5xx is logged here in
        one line (RequestGuard logs the 4xx)."""
        ctx.response.status_code = int(problem.status)
        if problem.status >= 500:
            log.warning("answered %d: %s", problem.status, problem.message)
        return JSONResponse({"error": problem.message, **extra}, status_code=int(problem.status))

    async def _forecast(self, frame: pd.DataFrame, market: np.ndarray | None, as_of: date | None,
                        ticker: str | None = None) -> dict:
        """The answer for ``history`` OHLCV rows (and the market's closes on them), lineage added: the LSTM's network
        batched; the baseline's fit for ``ticker`` (its pooled fit for rows of no known ticker, as /predict's)."""
        if self.baseline is not None:
            result = self.baseline.predict_windows(self.features(frame, market)[None], np.array([ticker]))
        else:
            raw = await self._batched(self.features(frame, market))
            result = fc.forecast_from_network(raw[None, :], self.calibration)
        point, variance = float(result["point"][0]), float(result["variance"][0])
        quantiles = {f"q{round(level * 100):02d}": float(q) for level, q in zip(fc.LEVELS, result["quantiles"][0],
                                                                               strict=True)}
        last_close = float(frame["Close"].iloc[-1])
        prices = implied_prices(last_close, point, variance, quantiles)
        return {
            "forecast": prices["point"],
            "point_return": point,
            "quantiles": quantiles,
            "intervals": {k: [prices[lo], prices[hi]] for k, (lo, hi) in INTERVALS.items()},
            "variance": variance,
            "volatility": math.sqrt(variance),
            "last_close": last_close,
            "as_of": as_of.isoformat() if as_of else None,
            "forecast_for": _next_business_day(as_of).isoformat() if as_of else None,
            "window": self.window,
            "history": self.history,
            "bento_tag": f"{bentoml.server_context.bento_name}:{bentoml.server_context.bento_version}",
            "served_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            **self.lineage,
        }

    def _log_answer(self, answer: dict, n_closes: int, ctx: bentoml.Context) -> None:
        """One line in the served-prediction log (deploy smoke checks stay out); it rotates at its size cap."""
        if self._log is None or SMOKE_HEADER in ctx.request.headers:
            return
        prediction_log.append(self._log, json.dumps({
            "at": answer["served_at"], "ticker": answer["ticker"], "as_of": answer["as_of"],
            "forecast_for": answer["forecast_for"], "n_closes": n_closes, "last_close": answer["last_close"],
            "forecast": answer["forecast"], "q05": answer["quantiles"]["q05"], "q95": answer["quantiles"]["q95"],
            "volatility": answer["volatility"], "model_version": self.lineage["model_version"],
            "model_kind": self.kind,
            "bento_tag": answer["bento_tag"]}), max_bytes=self._log_max_bytes)

    def features(self, frame: pd.DataFrame, market: np.ndarray | None) -> np.ndarray:
        """The model's input for the newest day of ``history`` OHLCV rows: a (window, 8) window of the features,
        standardised for the network (the baseline reads them raw)."""
        features = fc.feature_matrix(frame, market)
        window = fc.windows(features, np.array([len(frame) - 1]), self.window)
        return window[0] if self.baseline is not None else self._lstm.standardise(window)[0]

    def predict_batch(self, windows: np.ndarray) -> np.ndarray:
        """Raw network outputs (n, 2) = [log variance, mean] for standardised windows (n, window, 8)."""
        return self._lstm.forward(windows)


def implied_prices(last_close: float, point: float, variance: float, quantiles: dict[str, float]) -> dict[str, float]:
    """``last_close * exp(return)`` for the point (key ``point``) and each quantile.

    A model can answer a valid but extreme request with a non-finite or overflowing number: that
    is no forecast to serve, and no server fault either (422, not 500).
    """
    returns = {"point": point, **quantiles}
    with np.errstate(over="ignore", invalid="ignore"):
        prices = dict(zip(returns, (last_close * np.exp(np.array(list(returns.values())))).tolist(), strict=True))
    if not np.isfinite([variance, *returns.values(), *prices.values()]).all():
        raise UnusableForecast(f"the model's forecast for this input is not a finite number (point return {point}, "
                               f"variance {variance}): check the request for extreme or broken prices")
    return prices


def _next_business_day(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


StockForecast.add_asgi_middleware(RequestGuard)
