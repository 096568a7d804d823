"""The ingest contracts: a ticker's prices fetched, validated, then published, held for a person, or quarantined;
and the published snapshot itself (:class:`SnapshotEntry`, which training reads)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stockops.contracts.base import Contract, ContractError, enum_by_value, field_names


@dataclass(frozen=True)
class SnapshotEntry(Contract):
    """One published snapshot, as the store's manifest records it."""

    hash: str
    ticker: str
    rows: int
    first_date: str
    last_date: str
    source: str
    logical_date: str
    path: str
    validation_path: str
    published_at: str
    file_sha256: str | None = None  # the parquet file's bytes: a fast check of a read (older entries: none)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SnapshotEntry:
        """From a manifest line (which may carry more than these fields)."""
        return cls.from_xcom({k: data[k] for k in field_names(cls) if k in data})


class IngestStatus(enum.StrEnum):
    """How a ticker's latest ingest outcome is named in its ``status.json`` and in the watchlist summary."""

    PUBLISHED = "published"
    HELD = "held"  # an extreme move waits for a person's decision
    REJECTED = "rejected"  # a person rejected the held move: quarantined
    QUARANTINED = "quarantined"  # failed validation
    NEVER_INGESTED = "never ingested"
    UNREADABLE = "unreadable"  # the status file itself is corrupt

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        return enum_by_value(source, handler)


@dataclass(frozen=True)
class Fetched(Contract):
    """One ticker's daily prices up to ``logical_date``, landed in its ``raw/`` as ``raw_path``."""

    ticker: str
    logical_date: str
    source: str
    reference_date: str  # the day the data should be current to: freshness is judged against it
    rows: int
    raw_path: str
    note: str = ""


@dataclass(frozen=True)
class IngestRequest(Contract):
    """One ticker to ingest for ``logical_date``; ``landed``: the watchlist's batched download already fetched it."""

    ticker: str
    logical_date: str
    landed: Fetched | None = None


@dataclass(frozen=True)
class IngestChunk(Contract):
    """Some tickers of one day's ingest, fetched, validated (one Great Expectations run) and published together by
    one task; ``label`` names it in the grid (first and last symbol, and how many)."""

    logical_date: str
    requests: list[IngestRequest]
    label: str = ""

    @property
    def tickers(self) -> list[str]:
        return [r.ticker for r in self.requests]


@dataclass(frozen=True)
class HeldMove(Contract):
    """An extreme move only a person can judge, with its evidence (:func:`stockops.data.validation.held_moves`)."""

    day: str
    previous_close: float
    open: float
    high: float
    low: float
    close: float
    volume: float
    move_pct: float
    gap_pct: float
    range_share: float
    volume_ratio: float | None  # None: too few sessions to compare the volume with


@dataclass(frozen=True)
class Validated(Contract):
    """``fetched`` judged by the Great Expectations gate, on exactly the bytes hashed ``hash``.

    ``held_for_review``: an extreme move (``held``, one per day) waits for a person's decision, and
    nothing is published before it; otherwise the data passed on the rules alone.
    """

    fetched: Fetched
    hash: str
    validation_path: str
    data_docs_path: str
    scope: str  # which rows were judged, and why
    held_for_review: bool
    held: list[HeldMove] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.held_for_review != bool(self.held):
            raise ContractError(f"Validated.held_for_review: {self.held_for_review} with {len(self.held)} held "
                                "move(s); data is held for review exactly when a move is held")

    @property
    def ticker(self) -> str:
        return self.fetched.ticker

    @property
    def logical_date(self) -> str:
        return self.fetched.logical_date

    @property
    def held_days(self) -> list[str]:
        return [move.day for move in self.held]


class _OfValidated:
    """A later outcome of one ticker's day: its ticker and logical date are its ``validated``'s."""

    validated: Validated

    @property
    def ticker(self) -> str:
        return self.validated.ticker

    @property
    def logical_date(self) -> str:
        return self.validated.logical_date


@dataclass(frozen=True)
class Published(_OfValidated, Contract):
    """``validated`` as the immutable snapshot ``entry``; ``new``: this call wrote it (a re-run finds it),
    ``latest``: the ticker's ``latest`` names it (a backfill of an older day leaves ``latest`` on newer data)."""

    validated: Validated
    entry: SnapshotEntry
    new: bool
    latest: bool


@dataclass(frozen=True)
class Rejected(_OfValidated, Contract):
    """Held data a person rejected: quarantined in ``folder``, nothing published."""

    validated: Validated
    folder: str
    reason: str


@dataclass(frozen=True)
class Quarantined(Contract):
    """Data that failed validation (quarantined, nothing published); ``reason``: the failure's first line."""

    ticker: str
    logical_date: str
    reason: str


@dataclass(frozen=True)
class WatchlistOutcome(Contract):
    """Each ticker's outcome for ``logical_date`` (a chunk's, or the whole watchlist's: none on a day NYSE is closed);
    ``unfetched``: ticker -> why its prices could not be fetched (no outcome for it: a re-run fetches it again)."""

    logical_date: str
    published: list[Published] = field(default_factory=list)
    held_for_review: list[Validated] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    unfetched: dict[str, str] = field(default_factory=dict)

    @classmethod
    def merge(cls, logical_date: str, outcomes: list[WatchlistOutcome]) -> WatchlistOutcome:
        """The chunks' outcomes as one."""
        return cls(logical_date=logical_date, published=[p for o in outcomes for p in o.published],
                   held_for_review=[v for o in outcomes for v in o.held_for_review],
                   quarantined=[q for o in outcomes for q in o.quarantined],
                   unfetched={t: why for o in outcomes for t, why in o.unfetched.items()})

    @property
    def statuses(self) -> dict[str, IngestStatus]:
        """Ticker -> how its outcome is named."""
        return ({o.ticker: IngestStatus.PUBLISHED for o in self.published}
                | {o.ticker: IngestStatus.HELD for o in self.held_for_review}
                | {o.ticker: IngestStatus.QUARANTINED for o in self.quarantined})


@dataclass(frozen=True)
class TickerStatus(Contract):
    """A ticker's latest ingest outcome: its ``status.json`` (parsed once, when read) and a row of the watchlist
    summary. ``detail`` sums the outcome up in a line; ``hash`` names what was published, ``folder`` the
    quarantine, ``days`` the held days."""

    ticker: str
    logical_date: str
    status: IngestStatus
    detail: str = ""
    at: str = ""
    hash: str | None = None
    folder: str | None = None
    days: list[str] = field(default_factory=list)
