"""Every STOCKOPS_* variable, declared once: :class:`Environment` (a pydantic-settings model: variable, default,
one-line description, group), extending the bento's own declarations (:mod:`stockops.core.served_settings`).

:mod:`stockops.core.settings` reads them into a :class:`~stockops.core.settings.Settings`;
:mod:`stockops.core.settings_docs` writes ``.env.example``'s settings and the README's table from them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import field_validator

from stockops.core.served_settings import (
    BENTO,
    HOME,
    SERVING,
    TICKER_PATTERN,
    VALIDATION,
    WATCHLIST,
    WATCHLIST_GROUP,
    ServedSettings,
    declare,
)

__all__ = ["GROUPS", "REPO_ROOT", "SHIPPED_PRICES", "SOURCES", "TICKER_PATTERN", "WATCHLIST", "Environment"]

# The repository root: include/stockops/core/environment.py -> parents[3].
REPO_ROOT = Path(__file__).resolve().parents[3]
SHIPPED_PRICES = REPO_ROOT / "include" / "data" / "prices"

SOURCES = ("replay", "yfinance", "csv")
TRAINING = "training, gate"
MONITORING = "monitoring"
ALERTS = "alerts"
COMPOSE = "compose only"
# The order the documentation (.env.example, the README's table) lists the groups in.
GROUPS = (HOME, WATCHLIST_GROUP, VALIDATION, TRAINING, SERVING, MONITORING, ALERTS, COMPOSE, BENTO)


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


class Environment(ServedSettings):
    """Every stockops setting, declared once: variable (``STOCKOPS_`` + the name), default, one-line description.

    The bento's variables are declared in :class:`~stockops.core.served_settings.ServedSettings`, which this
    extends. :func:`get_settings` reads these and derives a :class:`Settings` from them; ``.env.example`` and the
    README's table are generated from them (``make settings-docs``).
    """

    # ---- home, ports
    airflow_home: Path | None = declare(None, "Airflow's home (unset: <STOCKOPS_HOME>/airflow)", HOME,
                                        variable="AIRFLOW_HOME")
    airflow_port: int = declare(8080, "make run: the Airflow UI's local port", HOME)
    mlflow_port: int = declare(5000, "make run: the MLflow UI's local port", HOME)
    mlflow_url: str = declare("", "Where people open the MLflow UI (links in the Airflow UI; unset: "
                              "http://127.0.0.1:<STOCKOPS_MLFLOW_PORT>)", HOME)
    # ---- watchlist, source
    ticker: str = declare("GOOG", "The ticker the model is trained on and served for, one of the watchlist "
                          "(unset and GOOG not in the watchlist: its first symbol)", WATCHLIST_GROUP)
    source: str = declare("replay", "Where prices come from: replay (the shipped series, offline), yfinance (live) "
                          "or csv", WATCHLIST_GROUP)
    csv_path: Path | None = declare(None, "source=csv: a yfinance-format CSV (a one-ticker watchlist) or a folder of "
                                    "<TICKER>.csv files", WATCHLIST_GROUP)
    replay_start: str = declare("2026-01-01", "Replay clock: on this date the first STOCKOPS_REPLAY_INITIAL_DAYS "
                                "trading days are known; one more arrives each NYSE session", WATCHLIST_GROUP)
    replay_initial_days: int = declare(1000, "Replay clock: trading days known on STOCKOPS_REPLAY_START",
                                       WATCHLIST_GROUP)
    history_start: str = declare("2004-01-01", "The first day of every ticker's history, for every source (a "
                                 "vendor's bad rows from before it are never judged)", WATCHLIST_GROUP)
    fetch_timeout_s: float = declare(20.0, "yfinance: seconds one download may take", WATCHLIST_GROUP)
    fetch_attempts: int = declare(3, "yfinance: attempts per download", WATCHLIST_GROUP)
    fetch_backoff_s: float = declare(2.0, "yfinance: seconds before the second attempt (doubling after)",
                                     WATCHLIST_GROUP)
    ingest_schedule: str = declare("0 22 * * 1-5", "When stock_ingest runs: a cron expression in UTC (weekdays "
                                   "after the US close), or manual for triggered runs only", WATCHLIST_GROUP)
    ingest_chunk: int = declare(50, "stock_ingest: tickers per task (fetched, validated in one Great Expectations "
                                "run and published together; chunks are balanced)", WATCHLIST_GROUP)
    # ---- validation (Great Expectations suite parameters; gaps and staleness in NYSE sessions)
    max_gap_sessions: int = declare(5, "Largest gap between two rows, in NYSE sessions", VALIDATION)
    max_abs_return: float = declare(0.25, "A close-to-close move beyond this is extreme: accepted only when the "
                                    "day's range and volume back it and the next session does not undo it",
                                    VALIDATION)
    extreme_min_range_share: float = declare(0.15, "An extreme move's day: log(High/Low) at least this share of the "
                                             "move", VALIDATION)
    extreme_min_volume_ratio: float = declare(0.8, "An extreme move's day: volume at least this x its median of the "
                                              "previous 50 sessions", VALIDATION)
    max_reversal: float = declare(0.9, "The next session may undo at most this share of an extreme move (a whipsaw "
                                  "on heavy volume both days excepted)", VALIDATION)
    max_gap_reversal: float = declare(0.5, "An overnight gap (a small day range, the move in the open, on volume): "
                                      "the next session may undo at most this share of it", VALIDATION)
    max_volume_ratio: float = declare(50.0, "Volume at most this x its 50-session median unless the day's range, "
                                      "move or the session before's volume explains it", VALIDATION)
    max_event_volume_ratio: float = declare(500.0, "Any day: volume at most this x its 50-session median (a units "
                                            "error is 1,000x; the universe's largest real spike 277x)", VALIDATION)
    max_halt_sessions: int = declare(5, "Sessions in a row a trading halt may last (zero volume, close unchanged)",
                                     VALIDATION)
    max_repeated_rows: int = declare(0, "Sessions in a row that may repeat the previous whole row (a stale feed)",
                                     VALIDATION)
    review_timeout_h: float = declare(72.0, "Hours an ingest waits for a person's decision on a held newest day",
                                      VALIDATION)
    gx_keep_results: int = declare(360, "Great Expectations validation results (and Data Docs pages) kept",
                                   VALIDATION)
    # ---- training and the promotion gate (see README: how the defaults were chosen)
    model_name: str = declare("stockops_risk", "The risk forecaster's registered model name", TRAINING)
    # Not MLFLOW_TRACKING_URI: mlflow.set_tracking_uri() writes that variable into the process env.
    mlflow_tracking_uri: str = declare("", "MLflow tracking server (unset: SQLite under the home)", TRAINING)
    train_profile: str = declare("default", "default, or small: a tiny model for tests and smoke runs", TRAINING)
    train_epochs: int = declare(20, "Training epochs of the LSTM", TRAINING)
    train_window: int = declare(40, "Days of history in one LSTM input window", TRAINING)
    train_samples_per_epoch: int = declare(262144, "Training windows drawn afresh for each LSTM epoch (0: every "
                                           "window; bench/universe_training.py)", TRAINING)
    gate_tolerance: float = declare(0.001, "Gate: point RMSE at most persistence's x (1 + this)", TRAINING)
    gate_margin: float = declare(0.03, "Gate: QLIKE nats/day by which a stale champion may be beaten "
                                 "(bench/gate_thresholds.py)", TRAINING)
    gate_coverage_90_min: float = declare(0.88, "Gate: lowest coverage of the 90 % interval", TRAINING)
    gate_coverage_90_max: float = declare(0.92, "Gate: highest coverage of the 90 % interval", TRAINING)
    gate_dm_t: float = declare(2.0, "Gate: Diebold-Mariano |t| a candidate must reach against the champion",
                               TRAINING)
    gate_champion_max_age_days: float = declare(7.0, "Gate: a champion older than this many days is stale",
                                                TRAINING)
    gate_harx_tolerance: float = declare(0.0, "Gate: QLIKE nats/day a candidate may lose to HARX-GKO (0: none)",
                                         TRAINING)
    # ---- serving: the stable address users call (a small proxy in front of the current bento)
    serve_host: str = declare("127.0.0.1", "The stable forecast address's host", SERVING)
    serve_port: int = declare(3000, "The stable forecast address's port", SERVING)
    serve_ready_timeout_s: float = declare(180.0, "Seconds a new bento may take to pass /readyz before its deploy "
                                           "fails", SERVING)
    serving_mode: str = declare("local", "local: deploys start bentos on this machine (make run); agent: the "
                                "serving agent (compose's serving container) carries them out", SERVING)
    supervise_interval_s: float = declare(0.5, "Seconds between the serving supervisor's checks of the proxy, the "
                                          "bento and the champion", SERVING)
    serve_spares: int = declare(1, "Extra processes of the served bento: a killed one costs no request", SERVING)
    supervisor_stale_s: float = declare(10.0, "The supervisor's watcher restarts it when its heartbeat is older "
                                        "than this", SERVING)
    serving_name: str = declare("", "This serving host's name in the deploy records and the serving fleet (several "
                                "serving hosts behind one front proxy); empty: the machine's hostname", SERVING)
    serving_advertise_url: str = declare("", "Where other hosts reach this serving host's stable address (the "
                                         "front proxy routes there); empty: the stable address itself", SERVING)
    deploy_lock_timeout_s: float = declare(420.0, "The longest a deploy, rollback or reconcile waits for the deploy "
                                           "lock before it gives up, naming the holder", SERVING)
    proxy_buffer_bytes: int = declare(64 * 1024 * 1024, "Request bodies the serving proxy holds in memory at once, "
                                      "all requests together (beyond: 503)", SERVING)
    # ---- failure notifications (stockops.orchestration.alerts)
    alert_webhook: str | None = declare(None, "A webhook (http:// or https://) that receives every failed task as "
                                        "JSON (unset: the audit log and the task log only)", ALERTS)
    alert_timeout_s: float = declare(10.0, "Seconds one webhook delivery may take", ALERTS)
    # ---- monitoring (stock_monitor): see bench/monitor_drift.py for how the defaults were chosen
    monitor_current_days: int = declare(60, "Trading days compared with the champion's training window (at least "
                                        "20)", MONITORING)
    monitor_drift_threshold: float = declare(0.6, "Normed Wasserstein distance above which a feature drifted",
                                             MONITORING)
    monitor_drift_share: float = declare(0.5, "Share of a ticker's features that drifted for the ticker to count as "
                                         "drifted", MONITORING)
    monitor_drift_tickers_share: float = declare(0.5, "Share of the checked tickers that drifted for drift to call "
                                                 "for a retrain, in (0, 1]", MONITORING)
    monitor_error_ratio: float = declare(1.5, "Live RMSE (in % of price) / the champion's holdout RMSE that calls "
                                         "for a retrain", MONITORING)
    monitor_persistence_ratio: float = declare(1.1, "Live RMSE / persistence's RMSE on the same days that calls "
                                               "for a retrain", MONITORING)
    monitor_cooldown_h: float = declare(72.0, "No second retrain trigger within this many hours", MONITORING)
    monitor_min_forecast_days: int = declare(20, "Days of the platform's own forecasts realized before live error "
                                             "is measured on them alone (until then the champion is replayed)",
                                             MONITORING)
    monitor_kupiec_p: float = declare(0.01, "Kupiec p-value below which the 95 % or 99 % VaR calibration is "
                                      "rejected, in (0, 1)", MONITORING)
    monitor_qlike_margin: float = declare(0.05, "QLIKE nats/day by which the champion may lose to HARX-GKO before a "
                                          "retrain is triggered", MONITORING)
    monitor_rollback_margin: float = declare(0.03, "Rollback proposal: the champion's QLIKE worse than the previous "
                                             "champion's by more than this many nats/day", MONITORING)
    monitor_rollback_dm_t: float = declare(2.0, "Rollback proposal: with a Diebold-Mariano |t| of at least this",
                                           MONITORING)
    monitor_keep_reports: int = declare(60, "Monitor report folders kept at most (the newest always)", MONITORING)
    monitor_keep_days: float = declare(90.0, "Monitor report folders older than this many days are removed",
                                       MONITORING)
    # ---- compose only (docker-compose.yaml interpolates it; no stockops process reads it)
    bind: str = declare("127.0.0.1", "The address compose's published ports bind to (0.0.0.0: every interface)",
                        COMPOSE)
    front_port: int = declare(3100, "The published port of the front proxy of several serving hosts (compose "
                              "profile fleet)", COMPOSE)
    services_bind: str = declare("127.0.0.1", "The address PostgreSQL's, Redis' and the object store's published "
                                 "ports bind to (the control host's private address when workers run elsewhere)",
                                 COMPOSE)
    postgres_host: str = declare("postgres", "Where the other services reach PostgreSQL (a worker host: the control "
                                 "host's address)", COMPOSE)
    postgres_port: int = declare(5432, "PostgreSQL's published port", COMPOSE)
    redis_host: str = declare("redis", "Where the other services reach Redis", COMPOSE)
    redis_port: int = declare(6379, "Redis' published port", COMPOSE)
    s3_endpoint: str = declare("http://objectstore:9000", "Where the other services reach the object store",
                               COMPOSE)
    s3_port: int = declare(9000, "The object store's published port", COMPOSE)
    airflow_api_url: str = declare("http://airflow-apiserver:8080", "Where workers reach the api-server's execution "
                                   "API", COMPOSE)
    mlflow_allowed_hosts: str = declare("", "Host headers the MLflow server answers besides its own names (a worker "
                                        "host reaching it by address)", COMPOSE)

    @field_validator("ticker", mode="before")
    @classmethod
    def _upper_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("source", "train_profile", "serving_mode", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("csv_path", "airflow_home", mode="after")
    @classmethod
    def _resolved(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()
