"""The daily ingest, as three plain steps: fetch -> validate -> publish.

Each step takes and returns small JSON-able dicts (they travel as Airflow XComs), reads
settings from the environment, and works without Airflow. Nothing reaches ``snapshots/``
unless the Great Expectations gate passed on exactly those bytes: ``validate`` records the
content hash it judged and ``publish`` refuses anything else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from stockops.config import Settings, get_settings

if TYPE_CHECKING:
    from stockops.data.store import SnapshotStore

log = logging.getLogger(__name__)

# This module is imported by DAG files, so pandas & co. are imported inside the functions
# (Airflow parses DAG files every few seconds; see tests/dags for the import budget).


def store_for(settings: Settings) -> SnapshotStore:
    from stockops.data.store import SnapshotStore

    return SnapshotStore(settings.data_dir, settings.ticker)


def fetch_prices(logical_date: str) -> dict:
    """Fetch prices up to ``logical_date`` from the configured source and land them in ``raw/``."""
    from stockops.data.sources import get_source, to_date

    settings = get_settings()
    day = to_date(logical_date).isoformat()
    result = get_source(settings).fetch(settings.ticker, to_date(day))
    raw_path = store_for(settings).write_raw(result.frame, day)
    log.info("fetched %d rows of %s from %s for %s -> %s", len(result.frame), settings.ticker, result.source,
             day, raw_path)
    return {"ticker": settings.ticker, "source": result.source, "logical_date": day,
            "reference_date": result.reference_date.isoformat(), "rows": len(result.frame),
            "raw_path": str(raw_path), "note": result.note}


def validate_raw(fetched: dict) -> dict:
    """Run the GX gate on a landed raw file; on failure quarantine it and raise.

    Raises :class:`stockops.validation.DataValidationError` naming every failed
    expectation and the offending dates. What was published before stays untouched.
    """
    from stockops.data.sources import to_date
    from stockops.data.store import atomic_write_json, content_hash
    from stockops.validation import DataValidationError, validate_prices

    settings = get_settings()
    store = store_for(settings)
    frame = store.read_raw(Path(fetched["raw_path"]))
    digest = content_hash(frame)
    report = validate_prices(frame, to_date(fetched["reference_date"]), settings)
    result_path = store.validations_dir / f"{fetched['logical_date']}__{digest[:12]}.json"
    report.result_path = str(result_path)
    atomic_write_json(result_path, {"hash": digest, **fetched, **report.to_dict()})
    log.info("validation result: %s; Great Expectations Data Docs: %s", result_path, report.data_docs_path)
    if not report.success:
        folder = store.quarantine(frame, logical_date=fetched["logical_date"], source=fetched["source"],
                                  result=report.to_dict())
        message = (f"{settings.ticker} data for {fetched['logical_date']} from {fetched['source']} failed "
                   f"validation and was quarantined in {folder}; nothing was published.\n{report.summary()}")
        log.error(message)
        raise DataValidationError(message, report)
    log.info("%s data for %s passed: %s", settings.ticker, fetched["logical_date"], report.summary())
    return {**fetched, "hash": digest, "validation_path": str(result_path),
            "data_docs_path": report.data_docs_path}


def publish_validated(validated: dict) -> dict:
    """Publish the validated raw file as an immutable snapshot and move ``latest`` (idempotent)."""
    from stockops.data.store import content_hash

    settings = get_settings()
    store = store_for(settings)
    frame = store.read_raw(Path(validated["raw_path"]))
    if content_hash(frame) != validated["hash"]:
        raise RuntimeError(f"{validated['raw_path']} changed after validation (hash {validated['hash'][:12]} "
                           "expected); refusing to publish unvalidated data")
    entry, new = store.publish(frame, logical_date=validated["logical_date"], source=validated["source"],
                               validation_path=validated["validation_path"])
    latest = store.latest()
    log.info("%s snapshot %s: %d rows %s..%s -> %s; latest is %s", "published" if new else "already published",
             entry.hash[:12], entry.rows, entry.first_date, entry.last_date, entry.path,
             latest.hash[:12] if latest else None)
    return {"hash": entry.hash, "rows": entry.rows, "first_date": entry.first_date, "last_date": entry.last_date,
            "path": entry.path, "new": new, "ticker": entry.ticker}


def ingest_day(logical_date: str) -> dict:
    """Fetch, validate and publish one logical date in-process (what the DAG does, minus Airflow)."""
    return publish_validated(validate_raw(fetch_prices(logical_date)))
