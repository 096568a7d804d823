"""
### stock_ingest — the watchlist's daily prices into immutable, validated snapshots, in chunks of tickers

Every weekday after the US close (`STOCKOPS_INGEST_SCHEDULE`, default `0 22 * * 1-5` UTC).
`watchlist` checks the NYSE calendar (a day the market is closed is a green no-op that says so),
with yfinance downloads the whole watchlist in one batched call (the *Trigger* form's `tickers`
narrows a run to some symbols), and splits the watchlist into balanced **chunks** of at most
`STOCKOPS_INGEST_CHUNK` tickers (50; the grid labels each `FIRST..LAST (n)`). One mapped `chunk`
task per chunk:

* **fetches** each ticker's daily OHLCV up to the logical date (`replay` offline, `yfinance` live,
  or `csv`) into `raw/` (a ticker its source cannot deliver is tried three times, then named);
* **validates** the chunk in **one** Great Expectations run (the suite in `great_expectations/`) over
  a panel of every ticker's new rows with its published history as context (all rows when the
  source restated history, which is then recorded). A failed expectation is traced back to its
  tickers: bad data quarantines **that ticker only** (into `quarantine/`, each failed expectation
  and the offending dates in the log), the others publish;
* **publishes** a content-hashed Parquet snapshot per passing ticker, moves its `latest` pointer and
  updates the ticker's own Asset `stockops_prices_<TICKER>` (through the AssetAlias `stockops_prices`).
  The task log ends with the chunk's outcome table, one line per ticker; its XCom holds the same.

**review**, one mapped task per **held** ticker (none on most days): an extreme move that the rules
cannot settle (in the newest session: no later session can confirm it yet) asks a person under
**Required actions**, every held day of the ticker in one question, then carries the answer out
(Approve publishes and updates the Asset, Reject quarantines; kept in the audit log, never asked again).
Nobody else waits for it.

**settled**, once every chunk is done: one event of the Asset `stockops_watchlist_day` (its extra: the
day and each ticker's outcome), which `stock_train` and `stock_monitor` follow — a day's training
never starts on part of it, and never waits for a held ticker. No event on a closed day or a re-run
that published nothing new. **outcomes** then fails (red, with an alert) when any ticker was
quarantined or could not be fetched, naming each: the rest of the day is already published.

Logic lives in `stockops.ingest` and `stockops.data.validation`; this file only wires it, through
`STEPS` (task id -> function: `watchlist` runs `plan_chunks`, `chunk` `ingest_chunk_task` below, which
calls `ingest_chunk`, `held` `held_tickers`, `outcomes` `check_outcomes`). Steps pass typed contracts
(`stockops.contracts`: `IngestChunk` → `WatchlistOutcome` of `Published`, held `Validated` and
`Quarantined`), stored as JSON XComs (`stockops.orchestration.wiring`); `review` is an operator that
reads one held ticker's `Validated`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import AssetAlias, Param, dag

from stockops.contracts import IngestChunk, WatchlistOutcome
from stockops.core.airflow_env import PRICES_ALIAS
from stockops.core.settings import Settings, get_settings
from stockops.ingest import check_outcomes, held_tickers, ingest_chunk, plan_chunks
from stockops.orchestration.alerts import notify_failure
from stockops.orchestration.operators import HeldDayReview, WatchlistSettled, emit_prices
from stockops.orchestration.wiring import step_tasks

settings = get_settings()
PRICES = AssetAlias(PRICES_ALIAS, group="stockops")
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"


def ingest_chunk_task(chunk: IngestChunk, dag_run_id: str = "", *, settings: Settings,
                      outlet_events: Any = None) -> WatchlistOutcome:
    """Ingest one chunk, then update the Asset of each ticker whose ``latest`` is the snapshot just published."""
    outcome = ingest_chunk(chunk, dag_run_id, settings=settings)
    for published in outcome.published:
        if published.latest:
            emit_prices(outlet_events, published)
    return outcome


# Task id -> the step it runs: the one mapping (``review`` and ``settled`` are operators).
STEPS: dict[str, Callable[..., Any]] = {"watchlist": plan_chunks, "chunk": ingest_chunk_task, "held": held_tickers,
                                        "outcomes": check_outcomes}
step = step_tasks(STEPS)


@dag(
    dag_id="stock_ingest",
    # weekdays after the US close (22:00 UTC) unless STOCKOPS_INGEST_SCHEDULE says otherwise; NYSE holidays are no-ops
    schedule=settings.ingest_cron,
    start_date=datetime(2000, 1, 1),  # early, so backfills of historical days get tasks; catchup is off
    catchup=False,
    # a run waiting for a person's decision must not hold up the next days' runs
    max_active_runs=4,
    doc_md=__doc__,
    tags=["stockops", "data", "watchlist"],
    params={"tickers": Param(None, type=["null", "string"], pattern=r"^[A-Za-z0-9.^=, -]*$",
                             description="Only these symbols of the watchlist, comma-separated (a re-ingest of one "
                                         "ticker, say). Empty: the whole watchlist.")},
    default_args={
        "owner": "stockops",
        "on_failure_callback": notify_failure,
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    },
)
def stock_ingest():
    chunks = step("watchlist")(logical_date=DAY, tickers="{{ params.tickers or '' }}")
    # Bad data does not get better by retrying, and quarantines its own ticker inside the task: a retry is for a
    # task that died (a killed worker), and redoes the chunk (landing and publishing are idempotent). At most two
    # chunks at a time (each holds Great Expectations and its panel in memory).
    outcomes = step("chunk", outlets=[PRICES], retries=2, max_active_tis_per_dagrun=2,
                    map_index_template="{{ task.op_kwargs['chunk']['label'] }}").partial(
        dag_run_id="{{ run_id }}").expand(chunk=chunks)
    # each held ticker asked once (every held day of it in one question), beside the others; nobody waits for it
    held = step("held", retries=0)(outcomes)
    HeldDayReview.partial(task_id="review", retries=0, response_timeout=timedelta(hours=settings.review_timeout_h),
                          outlets=[PRICES], map_index_template="{{ task.validated['fetched']['ticker'] }}",
                          ).expand(validated=held)
    # One "day ingested" event once every chunk is done: training and the monitor follow it.
    settled = WatchlistSettled(task_id="settled", chunks=chunks, retries=0)
    outcomes >> settled
    # after every chunk, even failed ones; skipped on a closed day (nothing ran)
    settled >> step("outcomes", retries=0, trigger_rule="all_done_min_one_success")(outcomes)


stock_ingest()
