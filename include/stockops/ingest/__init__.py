"""The daily ingest of a watchlist, as plain steps: plan -> per ticker: fetch -> validate -> (decide) -> publish.

Each step takes and returns a typed contract of :mod:`stockops.contracts` (``IngestRequest`` ->
``Fetched`` -> ``Validated`` -> ``Published`` or ``Rejected``; they travel as JSON XComs through
:func:`stockops.orchestration.xcom.xcom_step`), reads settings from the environment, and works without
Airflow. A ticker's latest outcome is also kept in its ``status.json`` (a :class:`TickerStatus`). Nothing reaches ``snapshots/``
unless the Great Expectations gate passed on exactly those bytes: ``validate`` records the
content hash it judged and ``publish`` refuses anything else. One ticker's bad data stops that
ticker only. An extreme move that the rules cannot settle is *held*: a person approves it
(published, remembered) or rejects it (quarantined) — in Airflow's "Required actions", or with
``python -m stockops decide``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stockops.contracts import (
    ContractError,
    Fetched,
    HeldMove,
    IngestRequest,
    IngestStatus,
    Published,
    Quarantined,
    Rejected,
    TickerStatus,
    Validated,
    WatchlistOutcome,
)
from stockops.core.settings import Settings, get_settings
from stockops.data import store_for

log = logging.getLogger(__name__)

# This module is imported by DAG files, so pandas & co. are imported inside the functions
# (Airflow parses DAG files every few seconds; see tests/dags for the import budget).

# How a ticker's outcome is named (its status.json, the demo's and make run's summary).
PUBLISHED, QUARANTINED, HELD, REJECTED = (IngestStatus.PUBLISHED, IngestStatus.QUARANTINED, IngestStatus.HELD,
                                          IngestStatus.REJECTED)
UNREADABLE = IngestStatus.UNREADABLE  # the status file itself is corrupt (see read_status)


def _day(logical_date: Any) -> str:
    from stockops.data.sources import to_date

    return to_date(logical_date).isoformat()


# ---- status per ticker -----------------------------------------------------------------------
def status_path(settings: Settings, ticker: str) -> Path:
    return settings.ticker_data_dir(ticker) / "status.json"


def read_status(settings: Settings, ticker: str) -> TickerStatus | None:
    """The ticker's latest ingest outcome, None before its first ingest; :class:`CorruptState` if unreadable."""
    import json

    from stockops.data.store import CorruptState

    path = status_path(settings, ticker)
    way_out = (f"It only sums up the last ingest of {ticker}: delete it, or re-ingest {ticker} (stock_ingest with "
               f"tickers={ticker}), which writes it again")
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise CorruptState(path, f"not JSON: {exc}", way_out) from exc
    try:
        return TickerStatus.from_xcom(status)
    except ContractError as exc:
        raise CorruptState(path, f"not an ingest status ({exc}): {str(status)[:200]}", way_out) from exc


def write_status(settings: Settings, ticker: str, logical_date: str, status: IngestStatus, detail: str, *,
                 hash: str | None = None, folder: str | None = None, days: list[str] | None = None) -> None:
    """The ticker's latest ingest outcome; an older day's run never overwrites a newer day's.

    An unreadable status file is replaced (it only sums up the last ingest, and this is the newest one).
    """
    from stockops.data.store import CorruptState, atomic_write_json

    try:
        current = read_status(settings, ticker)
    except CorruptState as exc:
        log.warning("%s is unreadable (%s): this run's outcome replaces it", exc.path, exc.problem)
        current = None
    if current is not None and current.logical_date > logical_date:
        return
    record = TickerStatus(ticker=ticker, logical_date=logical_date, status=status, detail=detail,
                          at=datetime.now(UTC).isoformat(timespec="seconds"), hash=hash, folder=folder,
                          days=list(days or []))
    atomic_write_json(status_path(settings, ticker), record.to_xcom())


def watchlist_status(settings: Settings | None = None) -> list[TickerStatus]:
    """Per watchlist ticker: its latest ingest outcome (``never ingested`` before the first run, ``unreadable``
    with the way out when its status file is corrupt: one bad file never hides the other tickers)."""
    from stockops.data.store import CorruptState

    settings = settings or get_settings()
    rows = []
    for ticker in settings.tickers:
        try:
            rows.append(read_status(settings, ticker)
                        or TickerStatus(ticker=ticker, logical_date="", status=IngestStatus.NEVER_INGESTED))
        except CorruptState as exc:
            log.warning("%s", exc)
            rows.append(TickerStatus(ticker=ticker, logical_date="", status=UNREADABLE, detail=str(exc)))
    return rows


SETTLED = (PUBLISHED, QUARANTINED, HELD, REJECTED)  # outcomes that end a ticker's part of a day's ingest


def day_outcome(settings: Settings, day: str, tickers: list[str], since: str = "") -> dict[str, Any]:
    """Where each of ``tickers`` stands in ``day``'s ingest: ``settled`` (ticker -> its outcome: published,
    quarantined, held for a person, rejected; or superseded by a later day's), ``pending`` (not yet, or never:
    a fetch that failed for good leaves no outcome) and ``new``: the published ones whose snapshot was first
    published at ``since`` (ISO, the run's start) or later (a re-run of a day publishes the same snapshot again).
    What ``stock_ingest``'s ``settled`` task waits on before it tells training and the monitor that the day is
    ingested."""
    from stockops.data.store import CorruptState

    settled, pending, new = {}, [], []
    for ticker in tickers:
        try:
            status = read_status(settings, ticker)
        except CorruptState:
            status = None
        if status is not None and status.logical_date > day:
            settled[ticker] = f"superseded by {status.logical_date}"
        elif status is not None and status.logical_date == day and status.status in SETTLED:
            settled[ticker] = status.status.value
            if status.status is PUBLISHED and _first_published(settings, ticker, status.hash) >= since:
                new.append(ticker)
        else:
            pending.append(ticker)
    return {"day": day, "settled": settled, "pending": pending, "new": new}


def _first_published(settings: Settings, ticker: str, digest: str | None) -> str:
    """When snapshot ``digest`` of ``ticker`` was first published (its manifest entry), "" if it has none."""
    return next((e.published_at for e in store_for(settings, ticker).entries() if e.hash == digest), "")


def format_watchlist(rows: list[TickerStatus]) -> str:
    """A short summary: counts per outcome, then the tickers that need attention."""
    counts: dict[str, list[str]] = {}
    for row in rows:
        counts.setdefault(row.status.value, []).append(row.ticker)
    lines = [f"watchlist: {len(rows)} tickers — " + ", ".join(f"{len(t)} {s}" for s, t in sorted(counts.items()))]
    for status in (QUARANTINED, HELD, REJECTED, UNREADABLE):
        for row in rows:
            if row.status is status:
                lines.append(f"  {row.ticker:<6} {status.value:<11} {row.logical_date}  {row.detail[:150]}")
    return "\n".join(lines)


# ---- the steps -----------------------------------------------------------------------------
def plan_watchlist(logical_date: str, tickers: str | list[str] | None = None) -> list[IngestRequest]:
    """What to ingest for ``logical_date``: one request per watchlist ticker, or none when NYSE is closed.

    ``tickers`` (a list, or comma-separated) narrows the run to some symbols of the watchlist (a
    re-ingest of one ticker, say); empty or None means all. With yfinance, the tickers are downloaded here
    in one batched call (retried) and landed in each ticker's ``raw/``; a ticker the batch did not
    deliver is fetched on its own later.
    """
    from stockops.data.calendar import closed_reason
    from stockops.data.sources import YFinanceSource, get_source, to_date

    settings = get_settings()
    day = _day(logical_date)
    chosen = _chosen_tickers(settings, tickers)
    closed = closed_reason(to_date(day))
    if closed:
        log.info("NYSE is closed on %s (%s): nothing to ingest for the %d tickers of the watchlist; nothing is "
                 "fetched or published, and the run is a green no-op", day, closed, len(chosen))
        return []
    source = get_source(settings)
    delivered = {}  # with yfinance, the whole watchlist in one batched download
    if isinstance(source, YFinanceSource) and len(chosen) > 1:
        delivered = source.fetch_many(chosen, to_date(day))
    requests = []
    for ticker in chosen:
        result = delivered.get(ticker)
        requests.append(IngestRequest(ticker=ticker, logical_date=day,
                                      landed=_land(settings, result) if result is not None else None))
    log.info("ingesting %d tickers for %s from %s: %s", len(requests), day, settings.source, ", ".join(chosen))
    return requests


def _chosen_tickers(settings: Settings, tickers: str | list[str] | None) -> list[str]:
    if tickers is None:  # the Trigger form's field left empty
        tickers = ""
    if isinstance(tickers, str):
        tickers = [t for t in tickers.replace(" ", ",").split(",") if t]
    chosen = [t.strip().upper() for t in tickers] or list(settings.tickers)
    unknown = [t for t in chosen if t not in settings.tickers]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} not in the watchlist (STOCKOPS_TICKERS: {' '.join(settings.tickers)}); "
                         "nothing was ingested")
    return chosen


def _land(settings: Settings, result) -> Fetched:
    """Write what a source delivered to the ticker's ``raw/`` and describe it."""
    day = result.logical_date.isoformat()
    raw_path = store_for(settings, result.ticker).write_raw(result.frame, day)
    log.info("fetched %d rows of %s from %s for %s -> %s", len(result.frame), result.ticker, result.source, day,
             raw_path)
    return Fetched(ticker=result.ticker, logical_date=day, source=result.source,
                   reference_date=result.reference_date.isoformat(), rows=len(result.frame), raw_path=str(raw_path),
                   note=result.note)


def fetch_prices(request: IngestRequest) -> Fetched:
    """Land one ticker's prices up to the request's logical date in ``raw/`` (unless the batch already did)."""
    from stockops.data.sources import get_source, to_date

    if request.landed is not None:
        log.info("%s: landed by the batched download: %s", request.ticker, request.landed.raw_path)
        return request.landed
    settings = get_settings()
    return _land(settings, get_source(settings).fetch(request.ticker, to_date(request.logical_date)))


def validate_raw(fetched: Fetched, dag_run_id: str = "") -> Validated:
    """Run the GX gate on a landed raw file against the ticker's published snapshot.

    Bad data is quarantined and raises :class:`stockops.data.validation.DataValidationError` naming
    every failed expectation and the offending dates; what was published stays untouched. An
    extreme move that only a person can judge comes back ``held_for_review``, with its evidence.
    """
    from stockops.data import decisions
    from stockops.data.sources import to_date
    from stockops.data.store import atomic_write_json, content_hash
    from stockops.data.validation import DataValidationError, validate_prices

    settings = get_settings()
    ticker, day = fetched.ticker, fetched.logical_date
    store = store_for(settings, ticker)
    frame = store.read_raw(Path(fetched.raw_path))
    digest = content_hash(frame)
    latest = store.latest()
    published = store.load(latest) if latest is not None else None
    report = validate_prices(frame, to_date(fetched.reference_date), settings, published=published,
                             decisions=decisions.decided_days(settings, ticker), run_name=f"{ticker}-{day}")
    result_path = store.validations_dir / f"{day}__{digest[:12]}.json"
    report.result_path = str(result_path)
    atomic_write_json(result_path, {"hash": digest, **fetched.to_xcom(), **report.to_dict()})
    log.info("%s validation result: %s; Great Expectations Data Docs: %s", ticker, result_path, report.data_docs_path)
    if report.scope is not None and report.scope.mode == "restated":
        from stockops.core import audit

        audit.record(settings.audit_log, "restatement", ticker=ticker, logical_date=day, hash=digest,
                     previous_hash=latest.hash if latest else None, validation=report.status,
                     dag_run_id=dag_run_id, **(report.scope.restatement or {}))
        log.warning("%s: the source restated published history (%s); every row was validated again, and the "
                    "restatement is recorded in %s", ticker, report.scope.description, settings.audit_log)
    if report.failed:
        folder = store.quarantine(frame, logical_date=day, source=fetched.source, result=report.to_dict())
        message = (f"{ticker} data for {day} from {fetched.source} failed validation and was quarantined in "
                   f"{folder}; nothing was published for {ticker}, the other tickers go on.\n{report.summary()}")
        write_status(settings, ticker, day, QUARANTINED, report.summary().splitlines()[0] + " — "
                     + "; ".join(f.line() for f in report.failures)[:300], folder=str(folder))
        log.error(message)
        raise DataValidationError(message, report)
    validated = Validated(fetched=fetched, hash=digest, validation_path=str(result_path),
                          data_docs_path=report.data_docs_path,
                          scope=report.scope.description if report.scope else "",
                          held_for_review=report.held_for_review,
                          held=[HeldMove.from_xcom(move) for move in report.held])
    if validated.held_for_review:
        decisions.record_request(settings, ticker, report.held, logical_date=day, dag_run_id=dag_run_id)
        write_status(settings, ticker, day, HELD, report.summary(), days=validated.held_days)
        log.warning("%s: %s. Nothing is published until a person decides: Airflow UI > Required actions, or "
                    ".venv/bin/stockops decide %s <day> approve|reject --reason ...", ticker, report.summary(), ticker)
    else:
        log.info("%s data for %s passed: %s", ticker, day, report.summary())
    return validated


def review_request(validated: Validated) -> dict[str, str]:
    """Subject and Markdown body of the question a held ticker puts to a person (Required actions)."""
    ticker = validated.ticker
    held = validated.held
    first = held[0]
    subject = (f"{ticker}: {first.move_pct:+.1f} % on {first.day} — a real move or a feed error?"
               if len(held) == 1 else f"{ticker}: {len(held)} extreme moves — real or feed errors?")
    rows = "\n".join(_evidence_row(h) for h in held)
    body = f"""**{ticker}** closed with an extreme move in the newest session of its data (logical date
{validated.logical_date}, source `{validated.fetched.source}`). The day's own prices and volume back the move,
but no later session can confirm it yet, so the rules do not decide it alone.

| day | previous close | open | high | low | close | move | opening gap | range / move | volume vs 50-session median |
|---|---|---|---|---|---|---|---|---|---|
{rows}

* **Approve** if the move is real (earnings, news, a crash): the data is published and this day is never asked about again.
* **Reject** if it is a feed error: the data is quarantined, and this day stays refused while the feed serves it.

Other tickers are not waiting for this decision. Validation result: `{validated.validation_path}`."""
    return {"subject": subject, "body": body}


def _evidence_row(h: HeldMove) -> str:
    volume = "n/a" if h.volume_ratio is None else f"{h.volume_ratio:.1f} x"
    return (f"| {h.day} | {h.previous_close:.4g} | {h.open:.4g} | {h.high:.4g} | {h.low:.4g} | "
            f"{h.close:.4g} | **{h.move_pct:+.2f} %** | {h.gap_pct:+.2f} % | {h.range_share:.2f} | {volume} |")


def record_review(validated: Validated, approved: bool, by: str, reason: str, dag_run_id: str = "") -> list[dict]:
    """Remember a person's decision on every held day of ``validated`` (per ticker and in the audit log)."""
    from stockops.data import decisions

    return decisions.record_decision(get_settings(), validated.ticker, validated.held_days,
                                     decisions.APPROVED if approved else decisions.REJECTED, by=by, reason=reason,
                                     logical_date=validated.logical_date, dag_run_id=dag_run_id,
                                     evidence=[move.to_xcom() for move in validated.held])


def publish_validated(validated: Validated) -> Published | Rejected:
    """Publish validated data as an immutable snapshot and move ``latest`` (idempotent).

    Held data is published only once a person approved every held day; a rejection quarantines
    it instead (:class:`Rejected`).
    """
    from stockops.data import decisions
    from stockops.data.store import content_hash

    settings = get_settings()
    ticker, day = validated.ticker, validated.logical_date
    store = store_for(settings, ticker)
    raw_path = validated.fetched.raw_path
    frame = store.read_raw(Path(raw_path))
    if content_hash(frame) != validated.hash:
        raise RuntimeError(f"{raw_path} changed after validation (hash {validated.hash[:12]} "
                           "expected); refusing to publish unvalidated data")
    approval = ""
    if validated.held_for_review:
        days = validated.held_days
        decided = decisions.decided_days(settings, ticker)
        if any(decided.get(d) == decisions.REJECTED for d in days):
            folder = store.quarantine(frame, logical_date=day, source=validated.fetched.source,
                                      result={"success": False, "rejected_by_operator": days,
                                              "validation_path": validated.validation_path})
            reason = f"an operator rejected {', '.join(days)}: quarantined"
            write_status(settings, ticker, day, REJECTED, reason, folder=str(folder))
            log.warning("%s: an operator rejected %s; the data is quarantined in %s and nothing was published",
                        ticker, ", ".join(days), folder)
            return Rejected(validated=validated, folder=str(folder), reason=reason)
        undecided = [d for d in days if decided.get(d) != decisions.APPROVED]
        if undecided:
            raise RuntimeError(f"{ticker} data for {day} is held for an operator's decision on {', '.join(undecided)} "
                               "and none was recorded: decide in Airflow's Required actions, or with "
                               f"`.venv/bin/stockops decide {ticker} {undecided[0]} approve|reject --reason ...`; "
                               "nothing was published")
        approval = f" (approved by an operator: {', '.join(days)})"
    entry, new = store.publish(frame, logical_date=day, source=validated.fetched.source,
                               validation_path=validated.validation_path)
    latest = store.latest()
    is_latest = latest is not None and latest.hash == entry.hash
    log.info("%s snapshot %s: %d rows %s..%s -> %s; latest is %s%s", ticker,
             "published" if new else "already published", entry.rows, entry.first_date, entry.last_date, entry.path,
             latest.hash[:12] if latest else None, approval)
    write_status(settings, ticker, day, PUBLISHED, f"{entry.rows} rows up to {entry.last_date}{approval}",
                 hash=entry.hash)
    return Published(validated=validated, entry=entry, new=new, latest=is_latest)


# ---- without Airflow -------------------------------------------------------------------------
def ingest_day(logical_date: str, ticker: str | None = None) -> Published | Validated:
    """Fetch, validate and publish one ticker for one day in-process (what the DAG does, minus Airflow).

    Returns what was published, or the :class:`Validated` data ``held_for_review`` when a person
    must decide first. Raises :class:`stockops.data.validation.DataValidationError` for bad data.
    """
    settings = get_settings()
    request = IngestRequest(ticker=ticker or settings.ticker, logical_date=_day(logical_date))
    validated = validate_raw(fetch_prices(request))
    return validated if validated.held_for_review else _publish_passed(validated)


def ingest_watchlist(logical_date: str, tickers: str | list[str] = "") -> WatchlistOutcome:
    """The whole watchlist for one day in-process: one outcome per ticker, bad data of one never stops another."""
    from stockops.data.validation import DataValidationError

    published: list[Published] = []
    held: list[Validated] = []
    quarantined: list[Quarantined] = []
    for request in plan_watchlist(logical_date, tickers):
        try:
            validated = validate_raw(fetch_prices(request))
        except DataValidationError as exc:
            quarantined.append(Quarantined(ticker=request.ticker, logical_date=request.logical_date,
                                           reason=str(exc).splitlines()[0]))
            continue
        if validated.held_for_review:
            held.append(validated)
            continue
        published.append(_publish_passed(validated))
    return WatchlistOutcome(logical_date=_day(logical_date), published=published, held_for_review=held,
                            quarantined=quarantined)


def _publish_passed(validated: Validated) -> Published:
    """Publish data that passed on the rules alone (nobody was asked, so nothing can be rejected)."""
    outcome = publish_validated(validated)
    assert isinstance(outcome, Published), "only data held for review can be rejected"
    return outcome
