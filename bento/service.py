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

Every answer is corrected by the champion's online calibration state, when there is one for the served model version
(``<home>/monitoring/online_calibration.json``, ``stockops.model.portable.online_calibration``: seeded by a
promotion, replaced whole each day by the monitor from the outcomes just realised): its variance scale (market-wide,
and the ticker's own on ``/forecast``) and quantile offsets are applied to the model's forecast before the answer
(prices, intervals, volatility) is built, and the answer's ``online_calibration`` says which state it used (its
lineage and ``"applied": true``), or ``{"applied": false, "reason": ...}``: none yet, one for another version, or an
unreadable file (logged; the answer is the model's own, never refused for it).

``/forecast`` (one ticker) and ``/forecast/batch`` (several, default the watchlist) take no prices:
they read the ticker's latest published snapshot from the platform's store
(:class:`PublishedSnapshots`) and its last ``history`` days, with the market reference's closes
aligned on them as ``stockops.serving.request_body`` does, go through the same path as
``/predict`` (``_answer``). A ticker's answer is kept by (snapshot hash, market snapshot hash, calibration state's
stamp): the whole watchlist is computed in one model call as the server starts and again when a snapshot or the
state moved, so a request reads the pointer and answers from memory (a miss is computed in a worker thread). Their
answers add the snapshot's lineage; a ticker that cannot be answered gets 404 (unknown, or no snapshot), 409 (stale)
or 503 (a corrupt file, named).

Why not BentoML's ``batchable`` API: it batches only HTTP calls to that API, so a validated
single-window endpoint needs a second service reached through ``bentoml.depends``. Measured
here under load, that internal hop dropped about 1 % of calls (bentoml/BentoML#4971, a keep-alive
race; fix pending upstream) and left about 1 in 2,000 hanging until the 30 s timeout, even with
retries. In-process batching removes the hop, its failures and its CPU cost.

Which model is packed comes from the build argument ``model_tag`` (``bentoml build --arg`` or
``bentoml.bentos.build(args=...)``); the bento stores it, so ``bentoml serve <bento>`` serves the
same model. ``/livez``, ``/readyz``, ``/metrics`` and the OpenAPI page at ``/`` come with BentoML.

Beside it (packed into every bento with it): ``request_schemas`` (the request bodies), ``published_snapshots``
(what ``/forecast`` reads, and the calibration state), ``memory_answers`` (the answers kept as bytes),
``served_code`` (the portable core, from the project or the model's ``code/``), ``server_setup`` (the log file,
the adaptive batcher, the guard's place in front of BentoML's middlewares) and
``asgi_guard``: ``RequestGuard``, the ASGI layer in front of BentoML, holds what BentoML does not: the Host check
(DNS rebinding), body size and type limits, one log line per refused request instead of a
traceback, an index page without BentoML's third-party tag manager, and an OpenAPI document that
is valid 3.0 and states the real minimum rows and the 400/413/415/422 answers. Start-up moves
the service's logs from stdout into a size-capped rotating file (``STOCKOPS_BENTO_LOG``,
``STOCKOPS_LOG_MAX_BYTES``).
"""
from __future__ import annotations

import asyncio
import gc
import json
import math
import sys
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd
from bentoml.exceptions import BentoMLException
from starlette.responses import JSONResponse

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules, however this file is loaded
import asgi_guard  # noqa: E402
from asgi_guard import RequestGuard  # noqa: E402
from memory_answers import SMOKE_HEADER, MemoryAnswers  # noqa: E402
from published_snapshots import (  # noqa: E402
    OnlineCalibration,
    OnlineCalibrationFile,
    PublishedSnapshots,
    Snapshot,
    SnapshotProblem,
)
from request_schemas import ForecastRequest, TickerRequest, TickersRequest  # noqa: E402
from served_code import MODEL_TAG, fc, log, prediction_log, risk_inputs, served_settings  # noqa: E402
from server_setup import AdaptiveBatcher, guard_outermost, log_to_rotating_file  # noqa: E402

INTERVALS = {"50": ("q25", "q75"), "90": ("q05", "q95"), "98": ("q01", "q99")}  # central intervals, as prices
MAX_BATCH_SIZE = 64
WATCH_S = 1.0  # how often the snapshot pointers and the calibration state are compared with the kept answers


class UnusableForecast(BentoMLException):
    """The model's forecast for a valid request is not a finite number: the input's fault, not the server's."""

    error_code = HTTPStatus.UNPROCESSABLE_ENTITY


FROM_MEMORY = bentoml.metrics.Counter(name="stockops_answers_from_memory",
                                     documentation="Forecasts answered from memory by RequestGuard, before BentoML")
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
            self._batched = AdaptiveBatcher(self.predict_batch, MAX_BATCH_SIZE, BATCH_SIZES.observe)
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
        self.online = OnlineCalibrationFile.from_environment(self.lineage["model_version"])
        # ticker -> ((its snapshot's hash, the market reference's, the calibration state's stamp), the answer without
        # per-request fields): a forecast changes only when those (or this model) do, so /forecast answers from here
        self._table: dict[str, tuple[tuple, dict]] = {}
        self._refresh_task: asyncio.Task | None = None
        env = served_settings.ServedSettings.read(log.warning)
        self._log = env.prediction_log or (env.home / "serving" / "predictions.jsonl"
                                           if "home" in env.model_fields_set else None)
        self._log_max_bytes = env.log_max_bytes  # then it rotates
        if self._log is not None:
            self._log.parent.mkdir(parents=True, exist_ok=True)
        # the answers as bytes, for RequestGuard to serve before BentoML's machinery while their snapshots and the
        # calibration state hold
        self.memory = MemoryAnswers(self.store.watchlist, self._stamps, self.online.stamp,
                                    None if self._log is None else self._log_lines,
                                    counted=lambda n: FROM_MEMORY.inc(n))
        asgi_guard.MEMORY[:] = [self.memory]

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

    @bentoml.on_startup
    async def _warm(self) -> None:
        """Every watchlist ticker's forecast computed in one batch as the server starts (a deployed model), in the
        background: /forecast answers from the table the moment it is filled (and computes a miss itself). Then,
        every ``WATCH_S``, the snapshot pointers and the calibration state's file are compared with those the answers
        were made from: a publish or a new state is answered in one batch within a second, before requests find it."""
        self._schedule_refresh()
        self._watch_task = asyncio.create_task(self._watch_snapshots())

    async def _watch_snapshots(self) -> None:
        """(Answers never depend on this loop: a request checks its own ticker's pointers; it only saves requests
        the compute after a publish.)"""
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                if self.memory.moved():
                    self._schedule_refresh()
            except Exception:  # noqa: BLE001 - keep watching; the next turn tries again
                log.exception("comparing the snapshot pointers and the calibration state failed")

    def _schedule_refresh(self) -> None:
        """Recompute, in one batch, every ticker whose snapshot or calibration state moved since its answer was made
        (one at a time)."""
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        inputs, stamps = [], {}
        calibration = self.online.current()  # read before the pointers, as the stamps
        for ticker in self.store.watchlist:
            stamps[ticker] = self._stamps(ticker)  # before the pointers are read: a later publish shows as a change
            try:
                snapshot, market_snapshot = await self._snapshots(ticker)
            except SnapshotProblem:
                continue  # asked for, it answers its 404/409/503 then
            cached = self._table.get(ticker)
            if cached is None or cached[0] != self._key(snapshot, market_snapshot, calibration):
                inputs.append((ticker, snapshot, market_snapshot))
            else:
                self._remember(ticker, stamps[ticker], calibration, cached[1])
        if not inputs:
            return
        try:
            answers = await asyncio.to_thread(self._answers, inputs, calibration)
        except Exception:  # noqa: BLE001 - the table stays as it was; each ticker computes on its own when asked
            log.exception("refreshing the forecasts of %d tickers failed", len(inputs))
            return
        for (ticker, snapshot, market_snapshot), answer in zip(inputs, answers, strict=True):
            self._table[ticker] = (self._key(snapshot, market_snapshot, calibration), answer)
            self._remember(ticker, stamps[ticker], calibration, answer)
        log.info("forecasts of %d tickers computed in one batch", len(inputs))

    def _stamps(self, ticker: str) -> tuple:
        """What ``ticker``'s answer depends on in the store: its snapshot pointer's and the market reference's."""
        market = self.store.market
        return self.store.stamp(ticker), (self.store.stamp(market) if market is not None else None)

    def _remember(self, ticker: str, stamps: tuple, calibration: OnlineCalibration, answer: dict) -> None:
        self.memory.remember(ticker, stamps, calibration.stamp, answer, self._log_fields(answer, self.history))

    @staticmethod
    def _key(snapshot: Snapshot, market_snapshot: Snapshot | None, calibration: OnlineCalibration) -> tuple:
        """What a kept answer was made from: the snapshots' hashes and the calibration state file's stamp."""
        return snapshot.hash, market_snapshot.hash if market_snapshot is not None else None, calibration.stamp

    async def _snapshots(self, ticker: str):
        """``ticker``'s latest snapshot (raises :class:`SnapshotProblem`) and the market reference's (None without)."""
        snapshot = await self.store.latest(ticker)
        if len(snapshot.frame) < self.history:
            raise SnapshotProblem(HTTPStatus.CONFLICT, f"{ticker}'s latest snapshot holds {len(snapshot.frame)} days; "
                                                       f"the model needs at least {self.history}")
        market_snapshot = None
        if self.store.market is not None:
            market_snapshot = snapshot if self.store.market == ticker else await self.store.latest(
                self.store.market, role=" (the market reference)", missing_ok=True)
        return snapshot, market_snapshot

    async def _forecast_ticker(self, ticker: str, ctx: bentoml.Context) -> dict:
        """The /forecast answer for ``ticker``: from the table when its snapshot (and the market reference's) and the
        calibration state are the ones it was made from, else computed now (off the event loop) and kept; raises
        :class:`SnapshotProblem`. Either way the model's forecast is /predict's on the snapshot's last ``history``
        days; the correction adds the ticker's own part of the calibration state to /predict's market-wide one."""
        ticker = self.store.known(ticker)
        stamps = self._stamps(ticker)
        calibration = self.online.current()
        snapshot, market_snapshot = await self._snapshots(ticker)
        key = self._key(snapshot, market_snapshot, calibration)
        cached = self._table.get(ticker)
        if cached is not None and cached[0] == key:
            answer = cached[1]
        else:
            (answer,) = await asyncio.to_thread(self._answers, [(ticker, snapshot, market_snapshot)], calibration)
            self._table[ticker] = (key, answer)
            self._schedule_refresh()  # a snapshot or the state moved: the others are recomputed together
        self._remember(ticker, stamps, calibration, answer)
        answer = {**answer, "served_at": datetime.now(UTC).isoformat(timespec="milliseconds")}
        self._log_answer(answer, self.history, ctx)
        return answer

    def _answers(self, inputs: list, calibration: OnlineCalibration) -> list[dict]:
        """The answers for (ticker, snapshot, market snapshot) inputs, in one model call: the rows and the market's
        aligned closes as training aligns them, each ticker's forecast corrected by ``calibration``, then the same path
        as /predict (``_answer``)."""
        frames, markets, windows = [], [], []
        for _, snapshot, market_snapshot in inputs:
            rows = snapshot.frame.iloc[-self.history:]
            market = None if market_snapshot is None else risk_inputs.align_market(rows["Date"], market_snapshot.frame)
            frame = rows[["Open", "High", "Low", "Close", "Volume"]].reset_index(drop=True)
            frames.append(frame)
            markets.append(market)
            windows.append(self.features(frame, market))
        tickers = [t for t, _, _ in inputs]
        results, corrections = calibration.adjust(self._predict_windows(np.stack(windows), tickers), tickers)
        answers = []
        for i, (ticker, snapshot, market_snapshot) in enumerate(inputs):
            answer = self._answer({k: v[i:i + 1] for k, v in results.items()}, frames[i], snapshot.last_date,
                                  corrections[i])
            answer.update({
                "ticker": ticker, "snapshot_hash": snapshot.hash, "snapshot_last_date": snapshot.last_date.isoformat(),
                "snapshot_published_at": snapshot.published_at.isoformat(),
                "training_snapshot_hash": self.lineage["snapshot_hash"],
                "market": self.store.market if markets[i] is not None else None,
                "market_snapshot_hash": market_snapshot.hash if markets[i] is not None else None,
            })
            answers.append(answer)
        return answers

    def _predict_windows(self, windows: np.ndarray, tickers: list[str | None]) -> dict[str, np.ndarray]:
        """The model's forecasts for stacked windows (the baseline's per-ticker fit for known tickers)."""
        if self.baseline is not None:
            return self.baseline.predict_windows(windows, np.array(tickers))
        return fc.forecast_from_network(self.predict_batch(windows), self.calibration)

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
        batched; the baseline's fit for ``ticker`` (its pooled fit for rows of no known ticker, as /predict's); the
        calibration state's correction for ``ticker`` (its market-wide part for rows of no known ticker)."""
        calibration = self.online.current()
        if self.baseline is not None:
            result = self.baseline.predict_windows(self.features(frame, market)[None], np.array([ticker]))
        else:
            raw = await self._batched(self.features(frame, market))
            result = fc.forecast_from_network(raw[None, :], self.calibration)
        result, (correction,) = calibration.adjust(result, [ticker])
        answer = self._answer(result, frame, as_of, correction)
        answer["served_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        return answer

    def _answer(self, result: dict[str, np.ndarray], frame: pd.DataFrame, as_of: date | None,
                correction: dict) -> dict:
        """One window's forecast (``result``: arrays of one row, already corrected) as the answer, lineage and the
        ``online_calibration`` field (``correction``) added (no ``served_at``)."""
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
            **self.lineage,
            "online_calibration": correction,
        }

    def _log_answer(self, answer: dict, n_closes: int, ctx: bentoml.Context) -> None:
        """One line in the served-prediction log (deploy smoke checks stay out); it rotates at its size cap."""
        if self._log is None or SMOKE_HEADER in ctx.request.headers:
            return
        self._log_lines([json.dumps({"at": answer["served_at"], **self._log_fields(answer, n_closes)})])

    def _log_fields(self, answer: dict, n_closes: int) -> dict:
        """An answer's line in the prediction log, less ``at`` (when it was served)."""
        return {"ticker": answer["ticker"], "as_of": answer["as_of"], "forecast_for": answer["forecast_for"],
                "n_closes": n_closes, "last_close": answer["last_close"], "forecast": answer["forecast"],
                "q05": answer["quantiles"]["q05"], "q95": answer["quantiles"]["q95"],
                "volatility": answer["volatility"], "model_version": self.lineage["model_version"],
                "model_kind": self.kind, "bento_tag": answer["bento_tag"],
                "calibration_through": answer["online_calibration"].get("through")}

    def _log_lines(self, lines: list[str]) -> None:
        """Write answers' lines to the prediction log (one write), before the answer goes out: a client that has its
        answer finds it in the log."""
        if self._log is not None:
            prediction_log.append_lines(self._log, lines, max_bytes=self._log_max_bytes)

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
guard_outermost(RequestGuard)
