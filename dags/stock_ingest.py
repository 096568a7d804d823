"""
### stock_ingest — the watchlist's daily prices into immutable, validated snapshots, one ticker at a time

Every weekday after the US close (`STOCKOPS_INGEST_SCHEDULE`, default `0 22 * * 1-5` UTC).
`watchlist` checks the NYSE calendar (a day the market is closed is a green no-op that says so)
and, with yfinance, downloads the whole watchlist in one batched call (the *Trigger* form's
`tickers` narrows a run to some symbols). Then **one mapped task group per ticker**
(`STOCKOPS_TICKERS`; the grid labels each by its symbol):

* **fetch** the ticker's daily OHLCV up to the logical date (`replay` offline, `yfinance` live,
  or `csv`) into `raw/` — retried with exponential backoff;
* **validate** it with the Great Expectations suite in `great_expectations/`, incrementally (the
  rows after the published snapshot; all rows when the source restated history, which is then
  recorded). Bad data fails this ticker's `validate` with each failed expectation and the
  offending dates in the log and goes to `quarantine/`: the other tickers go on;
* **publish** a content-hashed Parquet snapshot, move the ticker's `latest` pointer, and update
  the ticker's Asset `stockops_prices_<TICKER>` (through the AssetAlias `stockops_prices`);
* **review**, beside publish — only when an extreme move in the newest session is backed by the
  day's own range and volume but no later session can confirm it yet: `publish` skips the day and
  the task asks a person under **Required actions**, then carries the answer out (Approve
  publishes and updates the Asset, Reject quarantines; the decision and its reason are kept in the
  audit log and never asked again). Nobody else waits for it.

Then **settled**, once every ticker's `publish` is done (published, skipped for a review, or not run
because validation quarantined the data): one event of the Asset `stockops_watchlist_day` (its extra:
the day and each ticker's outcome), which `stock_train` and `stock_monitor` follow — a day's
training never starts on part of it. No event on a closed day or a re-run that published nothing new.

Logic lives in `stockops.ingest` and `stockops.data.validation`; this file only wires it, through
`STEPS` (task id -> function: `watchlist` runs `plan_watchlist`, `fetch` `fetch_prices`, `validate`
`validate_raw`, `publish` `publish_snapshot` below, which calls `publish_validated`). Steps pass
typed contracts (`stockops.contracts`: a list of `IngestRequest` → `Fetched` → `Validated`, which
says whether it is `held_for_review` → `Published` or `Rejected`), stored as JSON XComs
(`stockops.orchestration.wiring`); `review` is an operator that reads the `Validated` XCom.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import AssetAlias, Param, dag, task_group
from airflow.sdk.exceptions import AirflowSkipException

from stockops.contracts import Published, Rejected, Validated
from stockops.core.settings import PRICES_ALIAS, get_settings
from stockops.ingest import fetch_prices, plan_watchlist, publish_validated, validate_raw
from stockops.orchestration.alerts import notify_failure
from stockops.orchestration.operators import HeldDayReview, WatchlistSettled, emit_prices
from stockops.orchestration.wiring import step_tasks

settings = get_settings()
PRICES = AssetAlias(PRICES_ALIAS, group="stockops")
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"


def publish_snapshot(validated: Validated, *, outlet_events: Any = None) -> Published | Rejected:
    """Publish, then update the ticker's own Asset when its ``latest`` is this snapshot. A day held for a person is
    skipped here: its ``review`` publishes it (or quarantines it) when the person decides."""
    if validated.held_for_review:
        raise AirflowSkipException(f"{validated.ticker}: {', '.join(validated.held_days)} held for a person's "
                                   "decision under Required actions; the review publishes it on Approve")
    outcome = publish_validated(validated)
    if isinstance(outcome, Published) and outcome.latest:
        emit_prices(outlet_events, outcome)
    return outcome


# Task id -> the step it runs: the one mapping (``review`` is an operator between ``validate`` and ``publish``).
STEPS: dict[str, Callable[..., Any]] = {"watchlist": plan_watchlist, "fetch": fetch_prices, "validate": validate_raw,
                                        "publish": publish_snapshot}
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
    requests = step("watchlist")(logical_date=DAY, tickers="{{ params.tickers or '' }}")
    # One "day ingested" event once every ticker's publish is done (a held one skips it): training and the monitor
    # follow it.
    settled = WatchlistSettled(task_id="settled", requests=requests, retries=0)

    @task_group(group_id="ticker")
    def one_ticker(request):  # an IngestRequest as JSON
        fetched = step("fetch", map_index_template="{{ task.op_kwargs['request']['ticker'] }}")(request=request)
        # Bad data does not get better by retrying: fail at once, with the reasons. At most four GX
        # runs at a time (each loads Great Expectations, ~0.3 GB).
        validated = step("validate", retries=0, max_active_tis_per_dagrun=4,
                         map_index_template="{{ task.op_kwargs['fetched']['ticker'] }}")(
            fetched=fetched, dag_run_id="{{ run_id }}")
        # a held day is asked here and carried out here (Approve publishes it), beside publish, which skips it
        HeldDayReview(task_id="review", validated=validated, retries=0,
                      response_timeout=timedelta(hours=settings.review_timeout_h),
                      map_index_template="{{ task.validated['fetched']['ticker'] }}")
        step("publish", outlets=[PRICES], map_index_template="{{ task.op_kwargs['validated']['fetched']['ticker'] }}")(
            validated=validated) >> settled

    one_ticker.expand(request=requests)


stock_ingest()
