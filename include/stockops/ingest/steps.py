"""The ingest's steps for one ticker or a list of them: plan the day, fetch, validate (one Great Expectations run for
all the tickers given), publish; :mod:`stockops.ingest` tells the whole story."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from stockops.contracts import (
    Fetched,
    HeldMove,
    IngestChunk,
    IngestRequest,
    Published,
    Rejected,
    Validated,
)
from stockops.core.settings import Settings
from stockops.data import store_for
from stockops.ingest.status import HELD, PUBLISHED, QUARANTINED, REJECTED, write_status

log = logging.getLogger(__name__)

# This module is imported by DAG files, so pandas & co. are imported inside the functions
# (Airflow parses DAG files every few seconds; see tests/dags for the import budget).


def _day(logical_date: Any) -> str:
    from stockops.data.sources import to_date

    return to_date(logical_date).isoformat()


# ---- the steps -----------------------------------------------------------------------------
def plan_watchlist(logical_date: str, tickers: str | list[str] | None = None, *,
                   settings: Settings) -> list[IngestRequest]:
    """What to ingest for ``logical_date``: one request per watchlist ticker, or none when NYSE is closed.

    ``tickers`` (a list, or comma-separated) narrows the run to some symbols of the watchlist (a
    re-ingest of one ticker, say); empty or None means all. With yfinance, the tickers are downloaded here
    in one batched call (retried) and landed in each ticker's ``raw/``; a ticker the batch did not
    deliver is fetched on its own later.
    """
    from stockops.data.calendar import closed_reason
    from stockops.data.sources import YFinanceSource, get_source, to_date

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
    log.info("ingesting %d tickers for %s from %s: %s", len(requests), day, settings.source,
             " ".join(chosen) if len(chosen) <= 30 else f"{' '.join(chosen[:30])} and {len(chosen) - 30} more")
    return requests


def plan_chunks(logical_date: str, tickers: str | list[str] | None = None, *, settings: Settings) -> list[IngestChunk]:
    """:func:`plan_watchlist` in chunks of ``STOCKOPS_INGEST_CHUNK`` tickers, balanced (421 in chunks of at most
    50: 9 chunks of 46-47), one ``stock_ingest`` task each."""
    requests = plan_watchlist(logical_date, tickers, settings=settings)
    if not requests:
        return []
    count = -(-len(requests) // max(1, settings.ingest_chunk))
    size = -(-len(requests) // count)
    parts = [requests[i:i + size] for i in range(0, len(requests), size)]
    return [IngestChunk(logical_date=part[0].logical_date, requests=part, label=_label(part)) for part in parts]


def _label(part: list[IngestRequest]) -> str:
    return part[0].ticker if len(part) == 1 else f"{part[0].ticker}..{part[-1].ticker} ({len(part)})"


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
    store = store_for(settings, result.ticker)
    raw_path = store.write_raw(result.frame, day)
    _record_adjustment_anomalies(settings, result.ticker, day, result.frame, store.latest())
    log.debug("fetched %d rows of %s from %s for %s -> %s", len(result.frame), result.ticker, result.source, day,
              raw_path)
    return Fetched(ticker=result.ticker, logical_date=day, source=result.source,
                   reference_date=result.reference_date.isoformat(), rows=len(result.frame), raw_path=str(raw_path),
                   note=result.note)


def _record_adjustment_anomalies(settings: Settings, ticker: str, day: str, frame, latest) -> None:
    """The vendor's unexplained adjustment-factor jumps in what was fetched (taken out of the factor by the source,
    see :func:`stockops.data.sources._apply_adjustment`), each recorded once in the audit log: those of a first
    snapshot, then only the ones after the published history."""
    from stockops.core import audit
    from stockops.data.sources import ANOMALIES

    for anomaly in frame.attrs.get(ANOMALIES, []):
        if latest is None or anomaly["day"] > latest.last_date:
            audit.record(settings.audit_log, "adjustment_anomaly", ticker=ticker, logical_date=day, **anomaly)
            log.warning("%s %s: the vendor's adjustment factor jumps %s -> %s while the close moved %+.2f %%: "
                        "not applied (it would publish a %+.1f %% move); recorded in the audit log", ticker,
                        anomaly["day"], anomaly["factor_before"], anomaly["factor_after"], anomaly["close_move_pct"],
                        anomaly["move_avoided_pct"])


def fetch_prices(request: IngestRequest, *, settings: Settings) -> Fetched:
    """Land one ticker's prices up to the request's logical date in ``raw/`` (unless the batch already did)."""
    from stockops.data.sources import get_source, to_date

    if request.landed is not None:
        log.debug("%s: landed by the batched download: %s", request.ticker, request.landed.raw_path)
        return request.landed
    return _land(settings, get_source(settings).fetch(request.ticker, to_date(request.logical_date)))


def validate_raw(fetched: Fetched, dag_run_id: str = "", *, settings: Settings) -> Validated:
    """Run the GX gate on one landed raw file against the ticker's published snapshot (a chunk of one).

    Bad data is quarantined and raises :class:`stockops.data.validation.DataValidationError` naming
    every failed expectation and the offending dates; what was published stays untouched. An
    extreme move that only a person can judge comes back ``held_for_review``, with its evidence.
    """
    (judged,) = _validate_many([fetched], dag_run_id, settings).values()
    if isinstance(judged, Exception):
        raise judged
    return judged


def _validate_many(fetched: list[Fetched], dag_run_id: str, settings: Settings,
                   frames: dict | None = None) -> dict[str, Validated | Exception]:
    """Ticker -> its :class:`Validated` data, or the :class:`DataValidationError` that quarantined it: every
    ticker's new rows judged in one Great Expectations run (:func:`stockops.data.validation.validate_panel`).
    ``frames``, when given, receives each ticker's data as it was hashed (to publish without reading it again)."""
    from stockops.data import decisions
    from stockops.data.sources import to_date
    from stockops.data.store import content_hash
    from stockops.data.validation import PanelItem, validate_panel

    loaded = {}
    items = []
    for one in fetched:
        store = store_for(settings, one.ticker)
        frame = store.read_raw(Path(one.raw_path))
        latest = store.latest()
        digest = content_hash(frame)
        loaded[one.ticker] = (frame, digest, latest)
        if frames is not None:
            frames[one.ticker] = frame
        items.append(PanelItem(one.ticker, frame, to_date(one.reference_date),
                               published=_published(store, latest, digest),
                               decisions=decisions.decided_days(settings, one.ticker)))
    day = fetched[0].logical_date if fetched else ""
    # Data Docs names a run <TICKER>-<day>; a chunk's by its first and last ticker
    name = (fetched[0].ticker + (f"..{fetched[-1].ticker}" if len(fetched) > 1 else "") + f"-{day}") if fetched else ""
    reports = validate_panel(items, settings, run_name=name, compare=_market_rows(settings, fetched)) if items else {}
    return {one.ticker: _settle_validation(one, *loaded[one.ticker], reports[one.ticker], dag_run_id, settings)
            for one in fetched}


def _published(store, latest, digest: str):
    """The latest published frame validation compares a fetch with (None before the first). An unreadable one
    raises ``CorruptState``, except when the fetch is that very data (its way out: re-ingest its day): then the fetch
    is judged whole, as a first one, and its publish writes the snapshot back under the same name."""
    from stockops.core.audit import CorruptState

    if latest is None:
        return None
    try:
        return store.load(latest)
    except CorruptState as exc:
        if latest.hash != digest:
            raise
        log.error("%s; the fetch of %s is that snapshot's data: judged whole and written back", exc,
                  latest.logical_date)
        return None


def _raw_key(store, raw_path: Path) -> str:
    return f"{store.prefix}/raw/{raw_path.name}"


def _share_raw(store, raw_path: Path) -> None:
    """A held day's raw landing into a remote blob store: the review that publishes it may run on another host."""
    if not store.blobs.is_local and raw_path.exists():
        store.blobs.put(_raw_key(store, raw_path), raw_path.read_bytes())


def _fetch_raw(store, raw_path: Path) -> Path:
    """This host's copy of a raw landing another host put into the blob store (checked against the validated hash
    by the caller, like any landing)."""
    from stockops.storage.files import atomic_write_bytes

    local = store.root / "raw" / raw_path.name
    atomic_write_bytes(local, store.blobs.get(_raw_key(store, raw_path)))
    return local


def _market_rows(settings: Settings, fetched: list[Fetched]) -> dict:
    """The market reference's prices up to the chunk's day, when it is in another chunk: a ticker's rows must not
    twin its rows either (the market ETF's prices published under a stock's name). Its landing of the day when there
    is one (no second download), else its source's; nothing when it cannot be read."""
    from stockops.data.sources import get_source, to_date

    market = settings.market
    if not fetched or market is None or market in {f.ticker for f in fetched}:
        return {}
    day = fetched[0].logical_date
    landed = store_for(settings, market).raw_path(day)  # the batched download (yfinance) may have landed it already
    try:
        for path in (landed, landed.with_suffix(".csv")):
            if path.is_file():
                return {market: store_for(settings, market).read_raw(path)}
        return {market: get_source(settings).fetch(market, to_date(day)).frame}
    except Exception as exc:  # noqa: BLE001 (a comparison, not the data: the chunk goes on without it)
        log.warning("the market reference %s could not be read to compare with (%s): twins of it go unchecked",
                    market, exc)
        return {}


def _settle_validation(fetched: Fetched, frame, digest: str, latest, report, dag_run_id: str,
                       settings: Settings) -> Validated | Exception:
    """Keep ``report`` beside the ticker's data and act on it: quarantine bad data (the error is returned),
    ask a person about a held day, record a restatement."""
    from stockops.core import audit
    from stockops.data import decisions
    from stockops.data.validation import DataValidationError
    from stockops.storage.files import atomic_write_json

    ticker, day = fetched.ticker, fetched.logical_date
    store = store_for(settings, ticker)
    result_path = store.validations_dir / f"{day}__{digest[:12]}.json"
    report.result_path = str(result_path)
    atomic_write_json(result_path, {"hash": digest, **fetched.to_xcom(), **report.to_dict()})
    if not store.blobs.is_local:  # evidence every host can read: the records name it where it is kept
        key = f"{store.prefix}/validations/{result_path.name}"
        store.blobs.put(key, result_path.read_bytes())
        report.result_path = f"{store.blobs.url}/{key}"
    if report.scope is not None and report.scope.mode == "restated":
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
        return DataValidationError(message, report)
    validated = Validated(fetched=fetched, hash=digest, validation_path=report.result_path,
                          data_docs_path=report.data_docs_path,
                          scope=report.scope.description if report.scope else "",
                          held_for_review=report.held_for_review,
                          held=[HeldMove.from_xcom(move) for move in report.held])
    if validated.held_for_review:
        _share_raw(store, Path(fetched.raw_path))  # its review may publish it on another host
        decisions.record_request(settings, ticker, report.held, logical_date=day, dag_run_id=dag_run_id)
        write_status(settings, ticker, day, HELD, report.summary(), days=validated.held_days)
        log.warning("%s: %s. Nothing is published until a person decides: Airflow UI > Required actions, or "
                    ".venv/bin/stockops decide %s <day> approve|reject --reason ...", ticker, report.summary(), ticker)
    else:
        log.debug("%s data for %s passed: %s", ticker, day, report.summary())
    return validated


def publish_validated(validated: Validated, *, settings: Settings) -> Published | Rejected:
    """Publish validated data as an immutable snapshot and move ``latest`` (idempotent).

    Held data is published only once a person approved every held day; a rejection quarantines
    it instead (:class:`Rejected`).
    """
    from stockops.data.store import content_hash

    raw_path = validated.fetched.raw_path
    store = store_for(settings, validated.ticker)
    if not Path(raw_path).exists() and not store.blobs.is_local:  # landed on another host (a held day's review)
        raw_path = str(_fetch_raw(store, Path(raw_path)))
    frame = store.read_raw(Path(raw_path))
    if content_hash(frame) != validated.hash:
        raise RuntimeError(f"{raw_path} changed after validation (hash {validated.hash[:12]} "
                           "expected); refusing to publish unvalidated data")
    return _publish(validated, frame, settings)


def _publish(validated: Validated, frame, settings: Settings) -> Published | Rejected:
    """:func:`publish_validated` of ``frame``, the very data hashed ``validated.hash``."""
    from stockops.data import decisions

    ticker, day = validated.ticker, validated.logical_date
    store = store_for(settings, ticker)
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
                               validation_path=validated.validation_path, digest=validated.hash)
    latest = store.latest()
    is_latest = latest is not None and latest.hash == entry.hash
    log.info("%s snapshot %s: %d rows %s..%s -> %s; latest is %s%s", ticker,
             "published" if new else "already published", entry.rows, entry.first_date, entry.last_date, entry.path,
             latest.hash[:12] if latest else None, approval)
    write_status(settings, ticker, day, PUBLISHED, f"{entry.rows} rows up to {entry.last_date}{approval}",
                 hash=entry.hash)
    return Published(validated=validated, entry=entry, new=new, latest=is_latest)


# ---- without Airflow -------------------------------------------------------------------------
def ingest_day(logical_date: str, ticker: str | None = None, *, settings: Settings) -> Published | Validated:
    """Fetch, validate and publish one ticker for one day in-process (what the DAG does, minus Airflow).

    Returns what was published, or the :class:`Validated` data ``held_for_review`` when a person
    must decide first. Raises :class:`stockops.data.validation.DataValidationError` for bad data.
    """
    request = IngestRequest(ticker=ticker or settings.ticker, logical_date=_day(logical_date))
    validated = validate_raw(fetch_prices(request, settings=settings), settings=settings)
    return validated if validated.held_for_review else _publish_passed(validated, settings)


def _publish_passed(validated: Validated, settings: Settings, frame=None) -> Published:
    """Publish data that passed on the rules alone (nobody was asked, so nothing can be rejected)."""
    outcome = _publish(validated, frame, settings) if frame is not None else publish_validated(validated,
                                                                                                settings=settings)
    assert isinstance(outcome, Published), "only data held for review can be rejected"
    return outcome
