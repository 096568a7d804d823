"""
### stock_monitor — is the champion still fit for today's data? Retrain when it is not

Runs when `stock_ingest` publishes a new snapshot (the prices **Asset**), after every ingest.

`score_watchlist` first makes the platform's own forecasts: the champion, loaded from the
registry in the task, forecasts the next session of every watchlist ticker from that ticker's
latest published snapshot, and each forecast (ticker, `as_of`, `forecast_for`, model version,
snapshot hash, point, quantiles, variance, `made_at`) is appended once to
`<home>/monitoring/forecasts.jsonl`; a re-run adds nothing. Before it forecasts, the same task brings
the champion's **online calibration** (`<home>/monitoring/online_calibration.json`, which the bento applies
to its answers) up to date with every day realized since its last, from the champion's own records and the
snapshots it has just loaded; the forecasts are recorded corrected by it, as the bento serves them, each
naming the state it used (`calibration`). A state of another version (a new champion) starts neutral; an
unreadable one too, with a warning.

`check` then compares the champion with the latest snapshot:
* **data drift** — the normed Wasserstein distance per feature (Evidently's `wasserstein` statistic, computed
  for every ticker at once and checked against Evidently's own on the tickers its report draws) on the
  model's input features (log return, |return|, 20-day volatility, intraday range, volume
  ratio): the champion's training window, recorded at training time, against the last
  `STOCKOPS_MONITOR_CURRENT_DAYS` trading days;
* **live error** — the champion's own forecasts for those days from `forecasts.jsonl` against
  the closes later snapshots published: RMSE, ratios to the champion's holdout RMSE and to
  persistence on the same days, coverage of the 50 % and 90 % intervals. Until
  `STOCKOPS_MONITOR_MIN_FORECAST_DAYS` of them are realized (a fresh platform, a new champion)
  the champion is replayed on the snapshot's days instead, and the reason says so.
  What clients send to `POST /predict` (`serving/predictions.jsonl`: any day, any closes) is
  counted as `traffic_requests` and never scored.
* **calibration scorecard** — every watchlist ticker's own forecasts by the champion joined with
  the realized log returns, per ticker and pooled over the last `STOCKOPS_MONITOR_CURRENT_DAYS`
  days: coverage of the 50 % / 90 % intervals, 95 % / 99 % VaR breach rates with the Kupiec
  p-value, QLIKE and pinball loss of the champion and of HARX-GKO (refit once per ticker per check
  on the days before the window) on the same (ticker, day) pairs. Kupiec p <
  `STOCKOPS_MONITOR_KUPIEC_P` on either VaR, or a pooled QLIKE worse than HARX-GKO's by more than
  `STOCKOPS_MONITOR_QLIKE_MARGIN` nats/day, crosses; below `STOCKOPS_MONITOR_MIN_FORECAST_DAYS`
  realized days it is `insufficient` and crosses nothing. The scorecard also reports the online calibration
  (`online_calibration`: its days, the market-wide and each ticker's variance factor and 90 % offsets).

The decision (`drift_share`, `drifted_columns`, `live_rmse_ratio`, `persistence_ratio`,
`scorecard`, `triggered`, `reason`) is written as JSON (and the scorecard as `scorecard.json`)
beside the Evidently HTML report under
`<home>/monitoring/`, appended to `decisions.jsonl` and logged to the MLflow experiment
`stockops-<TICKER>-monitoring`; the `check` log prints both paths.

When a threshold is crossed, `trigger_retrain` starts `stock_train` with conf `{reason, report}`,
unless a training run is already queued or running or the last trigger is within the cool-down
(`STOCKOPS_MONITOR_COOLDOWN_H`). Otherwise `trigger_retrain` is skipped and the run stays green,
with the reason in the log. No champion yet: nothing to monitor, green, no trigger.

**Rollback proposal**: the previous champion forecasts the same days in the shadow (`role:
shadow` in `forecasts.jsonl`). When the champion's pooled QLIKE on the ticker-days both forecast
is worse than the previous champion's by more than `STOCKOPS_MONITOR_ROLLBACK_MARGIN` nats/day
with a Diebold-Mariano |t| ≥ `STOCKOPS_MONITOR_ROLLBACK_DM_T`, `propose_rollback` starts
`stock_rollback_proposal`, which asks an operator under Required actions (Approve runs
`stock_rollback`). Not again while one waits, nor within the cool-down for the same pair.

**Drift** is per ticker, every ticker in one check; one compact report (a table of every ticker, drifted first,
and Evidently's `DataDriftPreset` plots for the 10 nearest drift): a ticker
drifted when ≥ `STOCKOPS_MONITOR_DRIFT_SHARE` of its features did; drift crosses when ≥
`STOCKOPS_MONITOR_DRIFT_TICKERS_SHARE` of the checked tickers drifted. Report folders are
pruned beyond `STOCKOPS_MONITOR_KEEP_REPORTS` or `STOCKOPS_MONITOR_KEEP_DAYS`; the Evidently HTML
is stored once (the folder; MLflow keeps the decision and scorecard JSON and names the report).

`serving_health` (beside the rest) turns red when the endpoint is deployed but answers nowhere,
or an outage the serving supervisor could not heal is open (`serving/incidents.jsonl`).

`check` returns a typed `MonitorDecision` (`stockops.contracts`; the whole decision stays in the
decision log): `should_retrain` reads its `triggered`, `should_propose_rollback` its
`rollback.propose`. Logic lives in `stockops.monitoring`; this file only wires it, through `STEPS`
(task id -> function).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, dag

from stockops.core.airflow_env import DAY_ASSET_NAME, DAY_ASSET_URI
from stockops.core.settings import get_settings
from stockops.monitoring import should_propose_rollback, should_retrain
from stockops.monitoring.decision import PROPOSAL_DAG_ID, TRAINING_DAG_ID
from stockops.monitoring.forecasts import score_watchlist
from stockops.orchestration.alerts import notify_failure
from stockops.orchestration.tasks import monitor_task
from stockops.orchestration.wiring import step_tasks
from stockops.serving import check_serving

settings = get_settings()
DAY = Asset(name=DAY_ASSET_NAME, uri=DAY_ASSET_URI, group="stockops")

# Task id -> the step it runs: the one mapping (the other ids equal their function's name).
STEPS: dict[str, Callable[..., Any]] = {
    "serving_health": check_serving, "score_watchlist": score_watchlist, "check": monitor_task,
    "should_retrain": should_retrain, "should_propose_rollback": should_propose_rollback}
step = step_tasks(STEPS)


@dag(
    dag_id="stock_monitor",
    schedule=[DAY],
    start_date=datetime(2000, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["stockops", "monitoring", settings.ticker],
    default_args={"owner": "stockops", "on_failure_callback": notify_failure,
                  "retries": 1, "retry_delay": timedelta(minutes=1)},
)
def stock_monitor():
    step("serving_health", retries=0)()
    scored = step("score_watchlist")(dag_run_id="{{ run_id }}")
    decision = step("check")(dag_run_id="{{ run_id }}")
    scored >> decision
    go = step("should_retrain", short_circuit=True)(decision)
    # No retries: a second attempt would start a second training run.
    trigger_retrain = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id=TRAINING_DAG_ID,
        conf={"reason": "monitor: {{ ti.xcom_pull(task_ids='check')['reason'] }}",
              "report": "{{ ti.xcom_pull(task_ids='check')['report'] }}"},
        retries=0,
    )
    go >> trigger_retrain
    # The question is asked in its own DAG run, so this one (and tomorrow's) never waits for a person.
    go_propose = step("should_propose_rollback", short_circuit=True)(decision)
    propose_rollback = TriggerDagRunOperator(
        task_id="propose_rollback",
        trigger_dag_id=PROPOSAL_DAG_ID,
        conf={"from_version": "{{ ti.xcom_pull(task_ids='check')['rollback']['from_version'] }}",
              "to_version": "{{ ti.xcom_pull(task_ids='check')['rollback']['to_version'] }}",
              "evidence": "{{ ti.xcom_pull(task_ids='check')['rollback']['reason'] }}",
              "report": "{{ ti.xcom_pull(task_ids='check')['decision_path'] }}"},
        retries=0,
    )
    go_propose >> propose_rollback


stock_monitor()
