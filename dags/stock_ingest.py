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
* **review** — only when an extreme move in the newest session is backed by the day's own range
  and volume but no later session can confirm it yet: the task asks a person under
  **Required actions** (Approve publishes, Reject quarantines; the decision and its reason are
  kept in the audit log and never asked again). Other tickers are not held up;
* **publish** a content-hashed Parquet snapshot, move the ticker's `latest` pointer, and update
  the ticker's Asset `stockops_prices_<TICKER>` (through the AssetAlias `stockops_prices`).

Logic lives in `stockops.ingest` and `stockops.validation`; this file only wires it, through
`STEPS` (task id -> function: `watchlist` runs `plan_watchlist`, `fetch` `fetch_prices`, `validate`
`validate_raw`, `publish` `publish_snapshot` below, which calls `publish_validated`). Steps pass
typed contracts (`stockops.contracts`: a list of `IngestRequest` → `Fetched` → `Validated`, which
says whether it is `held_for_review` → `Published` or `Rejected`), stored as JSON XComs
(`stockops.wiring`); `review` is an operator that reads the `Validated` XCom.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, AssetAlias, Param, dag, task_group

from stockops.alerts import notify_failure
from stockops.config import PRICES_ALIAS, get_settings, prices_asset_name, prices_asset_uri
from stockops.contracts import Published, Rejected, Validated
from stockops.ingest import fetch_prices, plan_watchlist, publish_validated, validate_raw
from stockops.operators import HeldDayReview, WatchlistSettled
from stockops.wiring import step_tasks

settings = get_settings()
PRICES = AssetAlias(PRICES_ALIAS, group="stockops")
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"


def publish_snapshot(validated: Validated, *, outlet_events: Any = None) -> Published | Rejected:
    """Publish, then update the ticker's own Asset when its ``latest`` is this snapshot."""
    outcome = publish_validated(validated)
    if isinstance(outcome, Published) and outcome.latest:
        ticker = outcome.ticker
        outlet_events[PRICES].add(Asset(name=prices_asset_name(ticker), uri=prices_asset_uri(ticker), group="stockops"),
                                  extra={"ticker": ticker, "hash": outcome.entry.hash,
                                         "last_date": outcome.entry.last_date, "logical_date": outcome.logical_date})
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

    @task_group(group_id="ticker")
    def one_ticker(request):  # an IngestRequest as JSON
        fetched = step("fetch", map_index_template="{{ task.op_kwargs['request']['ticker'] }}")(request=request)
        # Bad data does not get better by retrying: fail at once, with the reasons. At most four GX
        # runs at a time (each loads Great Expectations, ~0.3 GB).
        validated = step("validate", retries=0, max_active_tis_per_dagrun=4,
                         map_index_template="{{ task.op_kwargs['fetched']['ticker'] }}")(
            fetched=fetched, dag_run_id="{{ run_id }}")
        review = HeldDayReview(task_id="review", validated=validated, retries=0,
                               response_timeout=timedelta(hours=settings.review_timeout_h),
                               map_index_template="{{ task.validated['fetched']['ticker'] }}")
        review >> step("publish", trigger_rule="none_failed", outlets=[PRICES],
                       map_index_template="{{ task.op_kwargs['validated']['fetched']['ticker'] }}")(validated=validated)

    one_ticker.expand(request=requests)
    # One "day ingested" event once every ticker is settled (a held one included): training and the monitor follow it.
    WatchlistSettled(task_id="settled", requests=requests, timeout=timedelta(hours=1), retries=0)


stock_ingest()
