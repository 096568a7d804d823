"""
### stock_ingest — daily prices into immutable, validated snapshots

Every weekday after the US close: **fetch** the ticker's daily OHLCV up to the logical date
(source from `STOCKOPS_SOURCE`: `replay` offline, `yfinance` live, or `csv`), land it in
`raw/`, **validate** it with the Great Expectations suite in `great_expectations/`, and only
then **publish** a content-hashed Parquet snapshot and move the `latest` pointer.

* Bad data fails `validate` with each failed expectation and the offending dates in the log;
  it is kept in `quarantine/` and nothing is published.
* Re-running a day is harmless: same data, same hash, no new manifest entry.
* `publish` updates the prices **Asset**; `stock_train` is scheduled on it.

Logic lives in `stockops.ingest`; this file only wires it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, dag, task

from stockops.config import get_settings
from stockops.ingest import fetch_prices, publish_validated, validate_raw

settings = get_settings()
PRICES = Asset(name=settings.asset_name, uri=settings.asset_uri, group="stockops")


@dag(
    dag_id="stock_ingest",
    schedule="0 22 * * 1-5",  # weekdays, after the US close (22:00 UTC)
    start_date=datetime(2000, 1, 1),  # early, so backfills of historical days get tasks; catchup is off
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["stockops", "data", settings.ticker],
    default_args={
        "owner": "stockops",
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    },
)
def stock_ingest():
    fetched = task(fetch_prices, task_id="fetch")(logical_date="{{ (dag_run.logical_date or dag_run.run_after) | ds }}")
    # Bad data does not get better by retrying: fail at once, with the reasons.
    validated = task(validate_raw, task_id="validate", retries=0)(fetched)
    task(publish_validated, task_id="publish", outlets=[PRICES])(validated)


stock_ingest()
