"""The daily ingest of a watchlist, as plain steps: plan chunks of tickers -> per chunk: fetch, validate (ONE Great
Expectations run for the chunk), publish -> (a person decides the held tickers).

Each step takes and returns a typed contract of :mod:`stockops.contracts` (``IngestChunk`` of ``IngestRequest`` ->
``Fetched`` -> ``Validated`` -> ``Published``, ``Quarantined`` or held; a chunk's outcomes as a ``WatchlistOutcome``;
they travel as JSON XComs through :func:`stockops.orchestration.xcom.xcom_step`), receives its ``settings``, and
works without Airflow. A ticker's latest outcome is also kept as its status (``data/<T>/status``, a :class:`TickerStatus`).
Nothing reaches ``snapshots/`` unless the Great Expectations gate passed on exactly those bytes: validation
records the content hash it judged and ``publish`` refuses anything else. One ticker's bad data stops that
ticker only. An extreme move that the rules cannot settle is *held*: a person approves it
(published, remembered) or rejects it (quarantined) — in Airflow's "Required actions", or with
``python -m stockops decide``.
"""

from __future__ import annotations

from stockops.ingest.chunk import (
    IngestProblem,
    check_outcomes,
    held_tickers,
    ingest_chunk,
    ingest_watchlist,
    outcome_table,
)
from stockops.ingest.review import record_review, review_request
from stockops.ingest.status import (
    HELD,
    PUBLISHED,
    QUARANTINED,
    REJECTED,
    SETTLED,
    UNREADABLE,
    day_outcome,
    format_watchlist,
    read_status,
    status_path,
    watchlist_status,
    write_status,
)
from stockops.ingest.steps import (
    fetch_prices,
    ingest_day,
    plan_chunks,
    plan_watchlist,
    publish_validated,
    validate_raw,
)

__all__ = [
    "HELD", "PUBLISHED", "QUARANTINED", "REJECTED", "SETTLED", "UNREADABLE", "IngestProblem", "check_outcomes",
    "day_outcome", "fetch_prices", "format_watchlist", "held_tickers", "ingest_chunk", "ingest_day",
    "ingest_watchlist", "outcome_table", "plan_chunks", "plan_watchlist", "publish_validated", "read_status",
    "record_review", "review_request", "status_path", "validate_raw", "watchlist_status", "write_status",
]
