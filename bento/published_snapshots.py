"""What the bento reads from the platform's home besides its model: the published snapshots (a ticker's latest
pointer, its parquet checked against its hash, refused when stale) that ``/forecast`` answers from, and the online
calibration state that corrects every answer."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from served_code import (
    MAX_STALENESS_SESSIONS,
    TICKER_PATTERN,
    log,
    online_calibration,
    served_settings,
    snapshot,
    state_view,
)

HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# the pointer's name in the records' database: Settings.online_calibration_path under the home, without ".json"
ONLINE_STATE = "monitoring/" + online_calibration.FILE_NAME.removesuffix(".json")


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
    """The platform's snapshot store, read-only: the pointer ``data/<TICKER>/latest`` in the records' database ->
    the blob ``data/<TICKER>/snapshots/<hash>.parquet``.

    The layout is ``stockops.data.store``'s, read here without importing it (the bento carries only the
    forecaster's code: :mod:`stockops.model.portable.state_view`). Each request looks at the pointers (kept in
    memory while the database says nothing changed); the parquet is read, checked against its hash (the blob's
    name, the store's ``content_hash``) and kept per ticker until the pointer names another hash, so a batch of the
    whole watchlist reads no parquet twice.

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

    def __init__(self, pointers: Any, blobs: Any, watchlist: tuple[str, ...], market: str | None,
                 max_staleness_sessions: int = MAX_STALENESS_SESSIONS):
        self.pointers = pointers  # a state_view.PointerView
        self.blobs = blobs  # a state_view.BlobReader
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
        return cls(*stores(env), watchlist, market, env.max_staleness_sessions)

    def known(self, ticker: str) -> str:
        """``ticker`` upper-cased if it is a symbol of the watchlist; else 404."""
        symbol = ticker.strip().upper()
        if not TICKER_PATTERN.match(symbol) or symbol not in self.watchlist:
            raise SnapshotProblem(HTTPStatus.NOT_FOUND, f"unknown ticker {ticker!r}: the watchlist is "
                                                        f"{', '.join(self.watchlist)}")
        return symbol

    def stamp(self, ticker: str) -> int | None:
        """The version of ``ticker``'s snapshot pointer now (None without one, or when the database cannot be read):
        a publish moves the pointer, so an unchanged version means an unchanged snapshot."""
        try:
            return self.pointers.version(snapshot.pointer_name(ticker))
        except OSError:
            return None

    async def latest(self, ticker: str, role: str = "", missing_ok: bool = False) -> Snapshot | None:
        """``ticker``'s latest published snapshot: 404 if none (None with ``missing_ok``), 409 if stale, 503 if
        the pointer or the file cannot be read or does not match its hash."""
        name = snapshot.pointer_name(ticker)
        try:
            found = self.pointers.get(name)
        except OSError as exc:
            raise self._corrupt(name, str(exc), ticker) from exc
        if found is None:
            if missing_ok:
                return None
            raise SnapshotProblem(HTTPStatus.NOT_FOUND, f"no published snapshot for {ticker}{role} yet")
        pointer = found[1]
        try:
            digest, last_date = str(pointer["hash"]), date.fromisoformat(pointer["last_date"])
            published_at = datetime.fromisoformat(pointer["published_at"])
            if not HASH_PATTERN.match(digest):
                raise ValueError(f"hash {digest[:80]!r} is not a SHA-256")
        except (KeyError, TypeError, ValueError) as exc:
            raise self._corrupt(name, f"not a snapshot pointer: {type(exc).__name__}: {exc}", ticker) from exc
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
            frame = await asyncio.to_thread(self._read, snapshot.snapshot_key(ticker, digest), digest, ticker,
                                            pointer.get("file_sha256"))
            self._frames[ticker] = cached = (digest, frame)
        return Snapshot(ticker, digest, last_date, published_at, cached[1])

    def _read(self, key: str, digest: str, ticker: str, file_sha256: str | None = None) -> pd.DataFrame:
        path: Path | str = key
        try:  # checked against its hash (the file's own SHA-256 when the pointer has it), as the platform's store reads
            path = self.blobs.path(key, file_sha256 or digest)
            frame = snapshot.read_snapshot(path, digest, file_sha256)
        except snapshot.HashMismatch as exc:
            raise self._corrupt(path, str(exc), ticker) from exc
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same answer: 503 naming it
            raise self._corrupt(path, f"{type(exc).__name__}: {exc}", ticker) from exc
        missing = [c for c in snapshot.COLUMNS if c not in frame.columns]
        if missing:
            raise self._corrupt(path, f"it lacks the column(s) {', '.join(missing)}", ticker)
        frame = frame[list(snapshot.COLUMNS)].copy()
        frame["Date"] = pd.to_datetime(frame["Date"])
        return frame.reset_index(drop=True)

    @staticmethod
    def _corrupt(path: Path | str, problem: str, ticker: str) -> SnapshotProblem:
        return SnapshotProblem(HTTPStatus.SERVICE_UNAVAILABLE, (
            f"{path} cannot be used: {problem}. Restore it, or re-ingest {ticker} (stock_ingest with "
            f"tickers={ticker}), which writes it back"))


def stores(env: Any) -> tuple[Any, Any]:
    """The records' pointers and the blobs the platform's settings name (``STOCKOPS_STATE_DB``, ``STOCKOPS_BLOB_URL``;
    unset: SQLite and the folder of the home), as ``stockops.core.settings.Settings.state_url``/``blobs_url``."""
    home = Path(env.home).absolute()
    state_url = env.state_db or f"sqlite:///{home / 'state.db'}"
    return (state_view.PointerView(state_url),
            state_view.BlobReader(env.blob_url or str(home), cache_dir=home / "cache" / "blobs"))


def weekdays_between(after: date, until: date) -> int:
    """Weekdays in ``(after, until]`` (negative when ``until`` is before ``after``)."""
    return int(np.busday_count(after + timedelta(days=1), until + timedelta(days=1)))


@dataclass(frozen=True)
class OnlineCalibration:
    """The online calibration the answers apply, as read from the state file with ``stamp`` (None: no file):
    ``state`` (an ``OnlineState`` for the served version), or None and the ``reason`` none applies."""

    stamp: int | None
    state: Any = None
    reason: str = ""

    def adjust(self, result: dict[str, np.ndarray], tickers: list[str | None],
               ) -> tuple[dict[str, np.ndarray], list[dict]]:
        """The model's ``result`` (arrays of one row per ticker; None: rows of no known ticker, the market-wide part
        only) corrected, and each row's ``online_calibration`` answer field. Without a state ``result`` is returned
        as it is, so an uncorrected answer is the model's own bits."""
        if self.state is None:
            return result, [{"applied": False, "reason": self.reason} for _ in tickers]
        return self.state.adjust(result, tickers), [self.state.lineage(t) | {"applied": True} for t in tickers]


class OnlineCalibrationFile:
    """The champion's online calibration state, the pointer ``monitoring/online_calibration`` of the records' database
    (``Settings.online_calibration_path`` names it): a promotion seeds it, the monitor replaces it whole each day.
    Parsed once per version (kept in memory while the database says nothing changed); applied only when it is for
    the served model version; an unusable one is logged once and answered without, never refused."""

    def __init__(self, view: Any, served_version: str):
        self.view = view  # a state_view.PointerView, None without a platform home
        self.served_version = served_version
        self._read: OnlineCalibration | None = None

    @classmethod
    def from_environment(cls, served_version: str) -> OnlineCalibrationFile:
        """From the home's records (``STOCKOPS_HOME``, ``STOCKOPS_STATE_DB``); nothing to read where no home is set
        (no platform: no monitor)."""
        env = served_settings.ServedSettings.read(log.warning)
        if "home" not in env.model_fields_set:
            return cls(None, served_version)
        home = Path(env.home).absolute()
        return cls(state_view.PointerView(env.state_db or f"sqlite:///{home / 'state.db'}", ONLINE_STATE),
                   served_version)

    def stamp(self) -> int | None:
        """The state's version now (what the kept answers are compared with)."""
        if self.view is None:
            return None
        try:
            return self.view.version(ONLINE_STATE)
        except OSError:
            return None

    def current(self) -> OnlineCalibration:
        """The calibration to apply now: the last one read while the state keeps its version, else read again. The
        stamp is taken before the read, so a state replaced meanwhile only shows as a change."""
        stamp = self.stamp()
        if self._read is None or self._read.stamp != stamp:
            self._read = self._load(stamp)
        return self._read

    def _load(self, stamp: int | None) -> OnlineCalibration:
        if self.view is None:
            return OnlineCalibration(None, reason="STOCKOPS_HOME is not set: no online calibration state to read")
        missing = OnlineCalibration(None, reason=f"no online calibration state yet ({ONLINE_STATE})")
        try:
            found = self.view.get(ONLINE_STATE)
        except OSError as exc:
            log.warning("the online calibration state cannot be read, answering without it: %s", exc)
            return OnlineCalibration(stamp, reason=f"the online calibration state ({ONLINE_STATE}) cannot be read: "
                                                   "answered without it (the bento's log says why)")
        if found is None:
            return missing
        try:
            state = online_calibration.OnlineState.from_json(found[1])  # numbers checked: finite, within bounds
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("online calibration state %s is unusable, answering without it: %s", ONLINE_STATE, exc)
            return OnlineCalibration(stamp, reason=f"the online calibration state ({ONLINE_STATE}) is unreadable: "
                                                   "answered without it (the bento's log says why)")
        if str(state.model_version) != self.served_version:
            return OnlineCalibration(stamp, reason=f"the online calibration state is for model version "
                                                   f"{state.model_version} while v{self.served_version} is served")
        return OnlineCalibration(stamp, state)
