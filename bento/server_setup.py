"""How the stockops bento runs inside BentoML's server: its log file, its adaptive batcher, and its request guard's
place in front of BentoML's own middlewares (:mod:`service` uses them; packed into every bento with it)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path

import numpy as np
from asgi_guard import ClientErrorsWithoutTraceback
from served_code import log, served_settings


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
    """Run ``predict_batch`` on whatever requests queued up while the previous batch ran (at most
    ``max_batch_size``); ``observe`` gets each batch's size."""

    def __init__(self, predict_batch, max_batch_size: int, observe: Callable[[int], object]):
        self.predict_batch = predict_batch
        self.max_batch_size = max_batch_size
        self.observe = observe
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
            self.observe(len(batch))
            try:
                # inline: the numpy pass is a few ms; a thread would only trade the GIL with the event loop
                out = self.predict_batch(np.stack([w for w, _ in batch]))
            except Exception as exc:  # every caller of the batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), value in zip(batch, out, strict=True):
                if not future.done():
                    future.set_result(value)


def guard_outermost(guard: type) -> None:
    """Put ``guard`` (``RequestGuard``) in front of BentoML's own middlewares (Prometheus metrics, OpenTelemetry, the access
    log, timeout and concurrency limits), which ``add_asgi_middleware`` puts it behind.

    Those cost about 0.6 ms of CPU per request here, five times what an answer from memory costs (0.12 ms): a
    forecast answered by the guard skips them (it is counted in the prediction log, which the platform monitors,
    and in ``stockops_answers_from_memory``); every other request still passes through all of them, after the
    guard's checks. This replaces BentoML's private ``ServiceAppFactory.middlewares`` (BentoML is pinned); where
    that is gone, the guard stays behind BentoML's middlewares, as ``add_asgi_middleware`` placed it."""
    try:
        from _bentoml_impl.server.app import ServiceAppFactory
        from starlette.middleware import Middleware

        bentoml_middlewares = ServiceAppFactory.middlewares
        if not isinstance(bentoml_middlewares, property):
            raise TypeError(f"ServiceAppFactory.middlewares is a {type(bentoml_middlewares).__name__}")
    except (ImportError, AttributeError, TypeError) as exc:
        log.warning("RequestGuard stays behind BentoML's middlewares: %s", exc)
        return

    def guard_first(factory) -> list[Middleware]:
        middlewares = bentoml_middlewares.fget(factory)
        return sorted(middlewares, key=lambda m: m.cls is not guard)  # stable: the rest keep their order

    ServiceAppFactory.middlewares = property(guard_first)
