"""The stockops BentoML service: tomorrow's return distribution from the promoted risk forecaster.

One service, ``StockForecast``: strict input checks, the answer's lineage fields, the
served-prediction log, and the network's compiled graph (a TF SavedModel exported by Keras, loaded
with ``tf.saved_model.load``: no eager Keras call per request) behind adaptive batching — the
requests that arrive while a batch runs form the next batch (up to ``MAX_BATCH_SIZE``), so the
batch grows with the load and a lone request waits for nothing.

A request carries raw recent daily OHLCV (and, optionally, the market reference's closes); the
service turns its last ``history`` rows into the network's input with the same code as training
(``stockops.forecaster.feature_matrix``, standardised with the calibration's scalers) and the
network's output into variance, quantiles and a point forecast (``forecast_from_network``). That
code travels in the model (``code/stockops/``, with ``forecaster.json``): outside the project's
environment the service imports it from there.

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
import sys
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import BentoMLException, InvalidArgument
from pydantic import BaseModel, ConfigDict, Field, model_validator

ARGS = bentoml.use_arguments()
MODEL_TAG: str = getattr(ARGS, "model_tag", None) or os.environ.get("STOCKOPS_BENTO_MODEL", "stockops_risk:latest")
MAX_ROWS = 5000  # a request with more days than this is refused (413-style 400)
MAX_BATCH_SIZE = 64
MAX_BODY_BYTES = 256 * 1024  # bodies above this are refused with 413 before parsing
PREDICT_PATHS = {"/predict"}
SMOKE_HEADER = "x-stockops-smoke"  # deploy checks send it: their answers stay out of the prediction log
INTERVALS = {"50": ("q25", "q75"), "90": ("q05", "q95"), "98": ("q01", "q99")}  # central intervals, as prices


def _model_path() -> Path | None:
    try:
        return Path(bentoml.models.get(MODEL_TAG).path)
    except Exception:  # noqa: BLE001 - no model store at hand (e.g. an import to read the OpenAPI spec)
        return None


def _import_forecaster():
    """``stockops.forecaster``: the project's, or else the copy the packed model carries (``code/``)."""
    try:
        import stockops.forecaster as forecaster
    except ImportError:
        path = _model_path()
        if path is None or not (path / "code" / "stockops" / "forecaster.py").exists():
            raise
        sys.path.insert(0, str(path / "code"))
        import stockops.forecaster as forecaster
    return forecaster


fc = _import_forecaster()


def _example_rows() -> int:
    """Rows in the OpenAPI example: enough for the packed model's history (and a few more)."""
    try:
        return int(bentoml.models.get(MODEL_TAG).info.metadata["history"]) + 10
    except Exception:  # noqa: BLE001 - no model at hand: an example for the default window (40 + 23)
        return 100


EXAMPLE = fc.synthetic_ohlcv(_example_rows())
EXAMPLE_MARKET = fc.synthetic_ohlcv(len(EXAMPLE), start=300.0, seed=1)["Close"]


def _column(name: str):
    return [[float(x) for x in EXAMPLE[name]]]


Price = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Prices = Annotated[list[Price], Field(min_length=1, max_length=MAX_ROWS)]
Volumes = Annotated[list[Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]],
                    Field(min_length=1, max_length=MAX_ROWS)]


class ForecastRequest(BaseModel):
    """Recent daily OHLCV, oldest first, one value per day in every field; the last ``history`` days are used."""

    model_config = ConfigDict(extra="forbid", strict=True)

    closes: Prices = Field(description="Daily closes, oldest first: finite numbers > 0, at least the model's "
                                       "history (window + warm-up; see `history` in an answer).",
                           examples=_column("Close"))
    open: Prices = Field(description="Daily opens, the same days as closes: finite numbers > 0.",
                         examples=_column("Open"))
    high: Prices = Field(description="Daily highs, the same days: finite, >= max(open, close) of the day.",
                         examples=_column("High"))
    low: Prices = Field(description="Daily lows, the same days: finite, > 0 and <= min(open, close) of the day.",
                        examples=_column("Low"))
    volume: Volumes = Field(description="Daily volumes, the same days: finite numbers >= 0 (0 where unknown).",
                            examples=_column("Volume"))
    market: Prices | None = Field(
        default=None, description="Optional: the market reference's closes (QQQ) on the same days, as in "
                                  "training; without them the model sees a flat market.",
        examples=[[float(x) for x in EXAMPLE_MARKET]])
    as_of: date | None = Field(
        default=None, description="Trading day of the last row (YYYY-MM-DD); echoed and logged for monitoring.",
        examples=[EXAMPLE["Date"].iloc[-1].date().isoformat()])

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


class BodyTooLarge(BentoMLException):
    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


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
    """Public API: validate, forecast (batched, compiled), answer with lineage, log the answer."""

    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import tensorflow as tf

        meta = dict(self.model.info.metadata)
        self.calibration = fc.Calibration(**json.loads(Path(self.model.path_of("forecaster.json")).read_text()))
        self.window, self.history = self.calibration.window, self.calibration.history
        self._scaler = fc.Forecaster(None, self.calibration)  # its standardise(): the scalers fitted in training
        self._tf = tf
        self._loaded = tf.saved_model.load(self.model.path_of("saved_model"))  # keeps the variables alive
        self._serve = self._loaded.signatures["serve"]
        probe = fc.synthetic_ohlcv(self.history)
        raw = self.predict_batch(self.features(probe, probe["Close"].to_numpy() * 3.0)[None])  # traces once
        if raw.shape != (1, 2) or not np.isfinite(raw).all():
            raise RuntimeError(f"model {self.model.tag} answers {raw} on a probe window: refusing to serve")
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
    async def predict(self, closes: list[float], open: list[float], high: list[float], low: list[float],  # noqa: A002
                      volume: list[float], ctx: bentoml.Context, market: list[float] | None = None,
                      as_of: date | None = None) -> dict:
        """Tomorrow's log-return distribution (point, quantiles, volatility) and the implied close and intervals."""
        if len(closes) < self.history:
            raise InvalidArgument(f"the request has {len(closes)} days; the model needs at least {self.history} "
                                  f"(a window of {self.window} days + {self.history - self.window} days of "
                                  f"warm-up for its features; the last {self.history} are used)")
        n = self.history
        frame = pd.DataFrame({"Open": open[-n:], "High": high[-n:], "Low": low[-n:], "Close": closes[-n:],
                              "Volume": volume[-n:]})
        raw = await self._batched(self.features(frame, None if market is None else np.asarray(market[-n:])))
        result = fc.forecast_from_network(raw[None, :], self.calibration)
        point, variance = float(result["point"][0]), float(result["variance"][0])
        quantiles = {f"q{round(level * 100):02d}": float(q) for level, q in zip(fc.LEVELS, result["quantiles"][0],
                                                                               strict=True)}
        if not all(math.isfinite(x) for x in (point, variance, *quantiles.values())):
            raise RuntimeError(f"the model produced a non-finite forecast (point {point}, variance {variance})")
        last_close = float(closes[-1])
        forecast = last_close * math.exp(point)
        answer = {
            "forecast": forecast,
            "point_return": point,
            "quantiles": quantiles,
            "intervals": {k: [last_close * math.exp(quantiles[lo]), last_close * math.exp(quantiles[hi])]
                          for k, (lo, hi) in INTERVALS.items()},
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
        if self._log is not None and SMOKE_HEADER not in ctx.request.headers:
            self._log.write(json.dumps({
                "at": answer["served_at"], "ticker": answer["ticker"], "as_of": answer["as_of"],
                "forecast_for": answer["forecast_for"], "n_closes": len(closes), "last_close": last_close,
                "forecast": forecast, "q05": quantiles["q05"], "q95": quantiles["q95"],
                "volatility": answer["volatility"], "model_version": self.lineage["model_version"],
                "bento_tag": answer["bento_tag"]}) + "\n")
        return answer

    def features(self, frame: pd.DataFrame, market: np.ndarray | None) -> np.ndarray:
        """The network's input for the newest day of ``history`` OHLCV rows: a standardised (window, 8) window."""
        features = fc.feature_matrix(frame, market)
        window = fc.windows(features, np.array([len(frame) - 1]), self.window)
        return self._scaler.standardise(window)[0]

    def predict_batch(self, windows: np.ndarray) -> np.ndarray:
        """Raw network outputs (n, 2) = [log variance, mean] for standardised windows (n, window, 8)."""
        out = self._serve(features=self._tf.constant(windows, dtype=self._tf.float32))
        return next(iter(out.values())).numpy().astype("float64")


def _next_business_day(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


StockForecast.add_asgi_middleware(SizeAndTypeGuard)
