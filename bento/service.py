"""The stockops BentoML service: next trading day's close from the promoted LSTM.

One service, ``StockForecast``: strict input checks, the answer's lineage fields, the
served-prediction log, and the model's compiled graph (a TF SavedModel exported by Keras, loaded
with ``tf.saved_model.load``: no eager Keras call per request) behind adaptive batching — the
requests that arrive while a batch runs form the next batch (up to ``MAX_BATCH_SIZE``), so the
batch grows with the load and a lone request waits for nothing.

Why not BentoML's ``batchable`` API: it batches only HTTP calls to that API, so a validated
single-window endpoint needs a second service reached through ``bentoml.depends``. Measured
here under load, that internal hop dropped about 1 % of calls (bentoml/BentoML#4971, a keep-alive
race; fix pending upstream) and left about 1 in 2,000 hanging until the 30 s timeout, even with
retries. In-process batching removes the hop, its failures and its CPU cost.

Which model is packed comes from the build argument ``model_tag`` (``bentoml build --arg`` or
``bentoml.bentos.build(args=...)``); the bento stores it, so ``bentoml serve <bento>`` serves the
same model. ``/livez``, ``/readyz``, ``/metrics`` and the OpenAPI page at ``/`` come with BentoML.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException, InvalidArgument
from pydantic import BaseModel, ConfigDict, Field

ARGS = bentoml.use_arguments()
MODEL_TAG: str = getattr(ARGS, "model_tag", None) or os.environ.get("STOCKOPS_BENTO_MODEL", "goog_lstm:latest")
MAX_CLOSES = 5000  # a request with more closes than this is refused (413-style 400)
MAX_BATCH_SIZE = 64
MAX_BODY_BYTES = 256 * 1024  # bodies above this are refused with 413 before parsing
PREDICT_PATHS = {"/predict"}
SMOKE_HEADER = "x-stockops-smoke"  # deploy checks send it: their answers stay out of the prediction log


class BodyTooLarge(BentoMLException):
    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def _positive_finite_closes() -> type:
    close = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
    return Annotated[list[close], Field(min_length=1, max_length=MAX_CLOSES)]


class ForecastRequest(BaseModel):
    """Recent daily closes, oldest first; the last ``window`` of them are used."""

    model_config = ConfigDict(extra="forbid", strict=True)

    closes: _positive_finite_closes() = Field(  # type: ignore[valid-type]
        description="Daily closes, oldest first: finite numbers > 0, at least the model's window.",
        examples=[[100.0 + i * 0.5 for i in range(60)]])
    as_of: date | None = Field(
        default=None, description="Trading day of the last close (YYYY-MM-DD); echoed and logged for monitoring.")


class SizeAndTypeGuard:
    """ASGI middleware: refuse oversized bodies (413) and non-JSON bodies (415) on the predict path
    before BentoML reads them, with a message that says what is wrong."""

    def __init__(self, app, max_body_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in PREDICT_PATHS or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if content_type != "application/json":
            return await _error(send, 415, f"Content-Type must be application/json, got {content_type or 'none'!r}")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return await _error(send, 413, f"request body of {length.decode('latin-1')} bytes is over the "
                                           f"{self.max_body_bytes}-byte limit")
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise BodyTooLarge(f"request body is over the {self.max_body_bytes}-byte limit")
            return message

        return await self.app(scope, counted_receive, send)


async def _error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class AdaptiveBatcher:
    """Run ``predict_batch`` on whatever requests queued up while the previous batch ran."""

    def __init__(self, predict_batch, max_batch_size: int = MAX_BATCH_SIZE):
        self.predict_batch = predict_batch
        self.max_batch_size = max_batch_size
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def __call__(self, window: np.ndarray) -> float:
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
                    future.set_result(float(value))


BATCH_SIZES = bentoml.metrics.Histogram(name="stockops_batch_size", documentation="Windows per model call",
                                        buckets=(1, 2, 4, 8, 16, 32, 64))


# traffic.timeout: BentoML arms a timer per request for this long and never cancels it, which
# keeps every finished request's objects alive that long (~11k objects/s under load here);
# a forecast takes milliseconds, so 5 s is generous and keeps the heap small.
@bentoml.service(name="stock_forecast", workers=1, traffic={"timeout": 5, "max_concurrency": 512})
class StockForecast:
    """Public API: validate, forecast (batched, compiled), answer with lineage, log the answer."""

    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import tensorflow as tf

        meta = dict(self.model.info.metadata)
        self.window = int(meta["window"])
        self._tf = tf
        self._loaded = tf.saved_model.load(self.model.path_of("saved_model"))  # keeps the variables alive
        self._serve = self._loaded.signatures["serve"]
        probe = self.predict_batch(np.linspace(100.0, 110.0, self.window, dtype="float32")[None, :])  # traces once
        if not np.isfinite(probe).all():
            raise RuntimeError(f"model {self.model.tag} answers {probe} on a probe window: refusing to serve")
        self._batched = AdaptiveBatcher(self.predict_batch)
        # TensorFlow and BentoML leave ~470k long-lived objects; a full GC over them froze the
        # server for 300-550 ms every ~2 s under load (p99 548 ms at 32 clients). Freezing them
        # after start-up takes them out of every later collection (pauses of 15-25 ms).
        gc.collect()
        gc.freeze()
        self.lineage = {
            "model_name": meta.get("model_name", ""),
            "model_version": str(meta.get("registry_version", "")),
            "bento_model": str(self.model.tag),
            "mlflow_run_id": meta.get("mlflow_run_id", ""),
            "snapshot_hash": meta.get("snapshot_hash", ""),
            "trained_through": meta.get("snapshot_last_date", ""),
            "ticker": meta.get("ticker", ""),
        }
        log_path = os.environ.get("STOCKOPS_PREDICTION_LOG")
        if not log_path and os.environ.get("STOCKOPS_HOME"):
            log_path = str(Path(os.environ["STOCKOPS_HOME"]) / "serving" / "predictions.jsonl")
        self._log = None
        if log_path:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "a", buffering=1)  # line-buffered appends

    @bentoml.api(input_spec=ForecastRequest)
    async def predict(self, closes: list[float], ctx: bentoml.Context, as_of: date | None = None) -> dict:
        """Next trading day's close forecast from the last ``window`` closes."""
        if len(closes) < self.window:
            raise InvalidArgument(f"closes has {len(closes)} values; the model needs at least {self.window} "
                                  f"(the last {self.window} are used)")
        window = np.asarray(closes[-self.window:], dtype="float32")
        forecast = await self._batched(window)
        if not math.isfinite(forecast):
            raise RuntimeError(f"the model produced a non-finite forecast ({forecast})")
        answer = {
            "forecast": forecast,
            "last_close": float(closes[-1]),
            "as_of": as_of.isoformat() if as_of else None,
            "forecast_for": _next_business_day(as_of).isoformat() if as_of else None,
            "window": self.window,
            "bento_tag": f"{bentoml.server_context.bento_name}:{bentoml.server_context.bento_version}",
            "served_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            **self.lineage,
        }
        if self._log is not None and SMOKE_HEADER not in ctx.request.headers:
            self._log.write(json.dumps({
                "at": answer["served_at"], "ticker": answer["ticker"], "as_of": answer["as_of"],
                "forecast_for": answer["forecast_for"], "n_closes": len(closes), "last_close": answer["last_close"],
                "forecast": forecast, "model_version": self.lineage["model_version"], "bento_tag": answer["bento_tag"]}) + "\n")
        return answer


    def predict_batch(self, windows: np.ndarray) -> np.ndarray:
        """Price forecasts for close windows ``(n, window)`` through the compiled graph."""
        out = self._serve(closes=self._tf.constant(windows, dtype=self._tf.float32))
        return next(iter(out.values())).numpy().reshape(-1).astype("float64")


def _next_business_day(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


StockForecast.add_asgi_middleware(SizeAndTypeGuard)
