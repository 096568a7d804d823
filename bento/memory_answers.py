"""Answers kept as bytes: ``/forecast`` and ``/forecast/batch`` from memory, before BentoML's request machinery.

A ticker's forecast changes only when its snapshot (or the market reference's), the online calibration state or the
served model does. Once the service has made a ticker's answer (in its start-up batch, or on a miss),
:class:`MemoryAnswers` keeps it as the JSON bytes it serves, with the *stamps* of the snapshot pointers it was made
from (inode, mtime, size: a publish replaces the pointer), the *common stamp* every answer depends on (the online
calibration state file's, replaced whole too) and the day its staleness was checked. ``RequestGuard`` (``asgi_guard``)
hands it the body of every forecast request: while the stamps and the day still hold (the common stamp is taken once
per request), the answer is those bytes with ``served_at`` filled in and the request's line for the prediction log,
in a few microseconds; anything else (a moved snapshot, a new calibration state, a new day, a ticker written another
way, a body the schema would refuse, a smoke check's header) returns None, and
BentoML answers as before, through the service's checks, which computes and keeps the new answer. So the bytes a
request gets are the bytes the service made for the same snapshot, and every refusal (404, 409, 503, 400) still
comes from the one place that makes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from request_schemas import MAX_BATCH_TICKERS

SMOKE_HEADER = "x-stockops-smoke"  # deploy checks send it: their answers stay out of the prediction log


@dataclass(frozen=True)
class Ready:
    """One ticker's answer, ready to serve while ``stamps``, ``common`` and ``day`` hold."""

    stamps: tuple
    common: Any
    day: date
    head: bytes  # the answer's JSON up to the value of ``served_at`` (its last field)
    log_tail: str  # the prediction log's line after ``"at": "<served_at>", ``


def served_at() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class MemoryAnswers:
    """``/forecast`` and ``/forecast/batch`` answers by ticker, kept as bytes (see the module's docstring).

    ``stamps(ticker)``: the identity of the snapshot pointers the ticker's answer depends on now; ``common()``: the
    identity of what every answer depends on now (the online calibration state file), taken once per request;
    ``log_lines(lines)``: writes answers' prediction-log lines (None: no log); ``counted(n)``: told of every ``n``
    answers served (a Prometheus counter).
    """

    def __init__(self, watchlist: tuple[str, ...], stamps: Callable[[str], tuple], common: Callable[[], Any],
                 log_lines: Callable[[list[str]], None] | None, counted: Callable[[int], None] | None = None):
        self.watchlist = watchlist
        self._stamps = stamps
        self._common = common
        self._log_lines = log_lines
        self._counted = counted
        self._ready: dict[str, Ready] = {}

    def remember(self, ticker: str, stamps: tuple, common: Any, answer: dict[str, Any],
                 log_fields: dict[str, Any]) -> None:
        """Keep ``answer`` (without ``served_at``) for ``ticker``, valid while its pointers keep ``stamps`` and the
        common file ``common``."""
        text = json.dumps({**answer, "served_at": ""})
        self._ready[ticker] = Ready(stamps=stamps, common=common, day=datetime.now(UTC).date(),
                                    head=text[:-2].encode(), log_tail=json.dumps(log_fields)[1:])

    def moved(self) -> bool:
        """Has a snapshot or the common file that an answer depends on moved (or a snapshot appeared for a ticker
        without an answer)?"""
        common = self._common()
        return any(self._stamps(t) != ready.stamps or common != ready.common
                   if (ready := self._ready.get(t)) is not None
                   else self._stamps(t)[0] is not None for t in self.watchlist)

    def answer(self, path: str, body: bytes, logged: bool) -> bytes | None:
        """The answer's bytes for a request ``body`` to ``path``, or None: BentoML answers it."""
        try:
            request = json.loads(body)
        except ValueError:
            return None
        if type(request) is not dict:
            return None
        if path == "/forecast":
            ticker = request.get("ticker")
            return self.forecast(ticker, logged) if len(request) == 1 and type(ticker) is str else None
        tickers = request.get("tickers")
        if set(request) - {"tickers"} or not (tickers is None or type(tickers) is list):
            return None
        return self.forecast_batch(tickers or list(self.watchlist), logged)

    def _current(self, ticker: str, today: date, common: Any) -> Ready | None:
        ready = self._ready.get(ticker)
        if ready is None or ready.day != today or ready.common != common or ready.stamps != self._stamps(ticker):
            return None
        return ready

    def forecast(self, ticker: str, logged: bool) -> bytes | None:
        now = served_at()
        ready = self._current(ticker, date.fromisoformat(now[:10]), self._common())
        if ready is None:
            return None
        self._served([ready], now, logged)
        return ready.head + now.encode() + b'"}'

    def forecast_batch(self, tickers: list, logged: bool) -> bytes | None:
        if len(tickers) > MAX_BATCH_TICKERS or any(type(t) is not str for t in tickers):
            return None
        now = served_at()
        today, common = date.fromisoformat(now[:10]), self._common()
        readies = []
        for ticker in dict.fromkeys(tickers):
            ready = self._current(ticker, today, common)
            if ready is None:
                return None
            readies.append(ready)
        self._served(readies, now, logged)
        tail = now.encode() + b'"}'
        return b"[" + b", ".join(r.head + tail for r in readies) + b"]"

    def _served(self, readies: list[Ready], now: str, logged: bool) -> None:
        if self._counted is not None:
            self._counted(len(readies))
        if logged and self._log_lines is not None:
            head = f'{{"at": "{now}", '
            self._log_lines([head + ready.log_tail for ready in readies])
