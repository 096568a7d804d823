"""A chunk of tickers as one task: fetch, validate in one Great Expectations run, publish; the day's outcome."""

from __future__ import annotations

import logging

from stockops.contracts import Fetched, IngestChunk, Quarantined, Validated, WatchlistOutcome
from stockops.core.settings import Settings
from stockops.ingest.steps import _day, _publish_passed, _validate_many, fetch_prices, plan_chunks

log = logging.getLogger(__name__)


FETCH_ATTEMPTS = 3  # a ticker's own fetch inside a chunk (the batched yfinance download is retried by its task)


def ingest_chunk(chunk: IngestChunk, dag_run_id: str = "", *, settings: Settings) -> WatchlistOutcome:
    """Fetch, validate (one Great Expectations run) and publish a chunk of tickers; each ticker's outcome.

    One ticker's bad data quarantines that ticker only; a ticker its source could not deliver (after
    ``FETCH_ATTEMPTS`` tries) is named in ``unfetched`` and the others go on; a held ticker waits for a person.
    """
    import time

    from stockops.data.sources import SourceError

    fetched: list[Fetched] = []
    unfetched: dict[str, str] = {}
    for request in chunk.requests:
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                fetched.append(fetch_prices(request, settings=settings))
                break
            except (SourceError, OSError, ValueError) as exc:
                if attempt == FETCH_ATTEMPTS:
                    unfetched[request.ticker] = f"{type(exc).__name__}: {exc}"[:300]
                    log.error("%s: not fetched after %d attempts: %s", request.ticker, attempt, exc)
                else:
                    time.sleep(2 ** attempt)
    frames: dict = {}
    judged = _validate_many(fetched, dag_run_id, settings, frames)
    published, held, quarantined = [], [], []
    for ticker, outcome in judged.items():
        if isinstance(outcome, Exception):
            quarantined.append(Quarantined(ticker=ticker, logical_date=chunk.logical_date,
                                           reason=str(outcome).splitlines()[0]))
        elif outcome.held_for_review:
            held.append(outcome)
        else:  # the frame this task hashed and judged: no second read of raw/
            published.append(_publish_passed(outcome, settings, frames[ticker]))
    result = WatchlistOutcome(logical_date=chunk.logical_date, published=published, held_for_review=held,
                              quarantined=quarantined, unfetched=unfetched)
    log.info("%s, %s:\n%s", chunk.label or chunk.logical_date, chunk.logical_date, outcome_table(result))
    return result


def held_tickers(outcomes: list[WatchlistOutcome]) -> list[Validated]:
    """The day's held tickers (each asked once, all its held days in one question), from the chunks' outcomes."""
    return [validated for outcome in outcomes for validated in outcome.held_for_review]


class IngestProblem(RuntimeError):
    """Some tickers of a day were quarantined or could not be fetched (the others were published)."""


def check_outcomes(outcomes: list[WatchlistOutcome]) -> WatchlistOutcome:
    """The day's outcome over every chunk; raises :class:`IngestProblem` naming each ticker that was quarantined or
    not fetched (what the others published stays published), so the run shows red and the failure alert goes out."""
    merged = WatchlistOutcome.merge(outcomes[0].logical_date if outcomes else "", list(outcomes))
    log.info("%s: %d published, %d held for a person, %d quarantined, %d not fetched\n%s", merged.logical_date,
             len(merged.published), len(merged.held_for_review), len(merged.quarantined), len(merged.unfetched),
             outcome_table(merged))
    if merged.quarantined or merged.unfetched:
        problems = [f"{q.ticker} quarantined: {q.reason[:200]}" for q in merged.quarantined]
        problems += [f"{t} not fetched: {why[:200]}" for t, why in merged.unfetched.items()]
        raise IngestProblem(f"{merged.logical_date}: {len(problems)} ticker(s) not published (the other "
                            f"{len(merged.published)} were; held ones wait for a person):\n  " + "\n  ".join(problems))
    return merged


def outcome_table(outcome: WatchlistOutcome) -> str:
    """One line per ticker: its outcome and what it means (the task log's summary of a chunk)."""
    rows = [(p.ticker, "published" + ("" if p.new else " (unchanged)"),
             f"{p.entry.rows} rows up to {p.entry.last_date}") for p in outcome.published]
    rows += [(v.ticker, "held", f"a person decides {', '.join(v.held_days)} (Required actions)")
             for v in outcome.held_for_review]
    rows += [(q.ticker, "quarantined", q.reason[:160]) for q in outcome.quarantined]
    rows += [(t, "not fetched", why[:160]) for t, why in outcome.unfetched.items()]
    width = max((len(r[0]) for r in rows), default=6)
    return "\n".join(f"  {t:<{width}}  {s:<21} {d}" for t, s, d in sorted(rows))


def ingest_watchlist(logical_date: str, tickers: str | list[str] = "", *, settings: Settings) -> WatchlistOutcome:
    """The whole watchlist for one day in-process, chunk by chunk: one outcome per ticker, bad data of one never
    stops another."""
    chunks = plan_chunks(logical_date, tickers, settings=settings)
    return WatchlistOutcome.merge(_day(logical_date), [ingest_chunk(chunk, settings=settings) for chunk in chunks])
