"""All stockops settings in one place.

Every value comes from an environment variable with a local default, and every path is
derived from one home directory (``STOCKOPS_HOME``, default ``./.stockops``). Reading the
settings has no side effects: nothing is created, imported or configured here. Code that
writes somewhere creates the folder it needs at that moment.

Each setting is declared once in :class:`Environment` (a pydantic-settings model: variable, default, one-line
description; the bento's variables in :mod:`stockops.core.served_settings`, which it extends). :func:`get_settings`
reads them into a :class:`Settings`; :func:`make_settings` builds one from the defaults and given values without
reading the environment; ``.env.example`` and the README's table are generated from the declarations
(``python -m stockops.core.settings --write``, ``make settings-docs``).

One exception, on purpose: importing this module sets the telemetry opt-outs and MLflow's
retry bounds of :func:`quiet_environment` in ``os.environ`` where they are unset, so that no
stockops process phones home or hangs on a dead tracking server, whichever library it imports
first (MLflow decides about telemetry when it is imported).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields, replace
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

__all__ = ["SOURCES", "TICKER_PATTERN", "WATCHLIST", "Environment", "Settings", "get_settings", "make_settings"]

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
    history_start: str = declare("2004-01-01", "yfinance: the first day fetched", WATCHLIST_GROUP)
    fetch_timeout_s: float = declare(20.0, "yfinance: seconds one download may take", WATCHLIST_GROUP)
    fetch_attempts: int = declare(3, "yfinance: attempts per download", WATCHLIST_GROUP)
    fetch_backoff_s: float = declare(2.0, "yfinance: seconds before the second attempt (doubling after)",
                                     WATCHLIST_GROUP)
    ingest_schedule: str = declare("0 22 * * 1-5", "When stock_ingest runs: a cron expression in UTC (weekdays "
                                   "after the US close), or manual for triggered runs only", WATCHLIST_GROUP)
    # ---- validation (Great Expectations suite parameters; gaps and staleness in NYSE sessions)
    max_gap_sessions: int = declare(5, "Largest gap between two rows, in NYSE sessions", VALIDATION)
    max_abs_return: float = declare(0.25, "A close-to-close move beyond this is extreme: accepted only when the "
                                    "day's range and volume back it and the next session does not undo it",
                                    VALIDATION)
    extreme_min_range_share: float = declare(0.15, "An extreme move's day: log(High/Low) at least this share of the "
                                             "move", VALIDATION)
    extreme_min_volume_ratio: float = declare(1.0, "An extreme move's day: volume at least this x its median of the "
                                              "previous 50 sessions", VALIDATION)
    max_reversal: float = declare(0.9, "The next session may undo at most this share of an extreme move",
                                  VALIDATION)
    max_volume_ratio: float = declare(50.0, "Any day: volume at most this x its 50-session median (a units error "
                                      "is 1,000x)", VALIDATION)
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


# Settings fields that are not one declaration each, and what they are made of.
DERIVED = {"gate_coverage_90": ("gate_coverage_90_min", "gate_coverage_90_max"),
           "mlflow_ui_url": ("mlflow_url", "mlflow_port"), "gx_project_dir": ()}


@dataclass(frozen=True)
class Settings:
    """A snapshot of the settings; build one with :func:`get_settings` (or :func:`make_settings`).

    Each field's variable, default and meaning are declared once, in :class:`Environment`.
    """

    home: Path
    tickers: tuple[str, ...]  # every symbol that flows through ingest and validation
    ticker: str  # the symbol the LSTM is trained on and served for (one of the watchlist)
    source: str
    csv_path: Path | None
    replay_start: str
    replay_initial_days: int
    ingest_schedule: str
    fetch_timeout_s: float
    fetch_attempts: int
    fetch_backoff_s: float
    history_start: str
    max_gap_sessions: int
    max_staleness_sessions: int
    max_abs_return: float
    extreme_min_range_share: float
    extreme_min_volume_ratio: float
    max_reversal: float
    max_volume_ratio: float
    max_repeated_rows: int
    review_timeout_h: float
    gx_keep_results: int
    model_name: str
    mlflow_tracking_uri: str  # "" is filled in: sqlite under the home
    train_profile: str
    train_epochs: int
    train_window: int
    market: str | None  # None when it is not in the watchlist
    gate_tolerance: float
    gate_margin: float
    gate_coverage_90: tuple[float, float]
    gate_dm_t: float
    gate_champion_max_age_days: float
    gate_harx_tolerance: float
    serve_host: str
    serve_port: int
    serve_ready_timeout_s: float
    serving_mode: str
    supervise_interval_s: float
    serve_spares: int
    supervisor_stale_s: float
    deploy_lock_timeout_s: float
    allowed_hosts: tuple[str, ...]
    log_max_bytes: int
    mlflow_ui_url: str
    alert_webhook: str | None
    alert_timeout_s: float
    monitor_current_days: int
    monitor_drift_threshold: float
    monitor_drift_share: float
    monitor_drift_tickers_share: float
    monitor_error_ratio: float
    monitor_persistence_ratio: float
    monitor_cooldown_h: float
    monitor_min_forecast_days: int
    monitor_kupiec_p: float
    monitor_qlike_margin: float
    monitor_rollback_margin: float
    monitor_rollback_dm_t: float
    monitor_keep_reports: int
    monitor_keep_days: float
    # derived locations (filled in __post_init__ from home unless given)
    airflow_home: Path = None  # type: ignore[assignment]
    gx_project_dir: Path = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for symbol in (*self.tickers, self.ticker):
            if not TICKER_PATTERN.match(symbol):
                raise ValueError(f"ticker {symbol!r} (STOCKOPS_TICKERS / STOCKOPS_TICKER) is not a symbol: use letters, "
                                 "digits and . - ^ = only, at most 15 characters")
        if not self.tickers:
            raise ValueError("STOCKOPS_TICKERS is empty: name at least one symbol, e.g. GOOG")
        if len(set(self.tickers)) != len(self.tickers):
            raise ValueError(f"STOCKOPS_TICKERS={','.join(self.tickers)} names a symbol twice")
        if self.ticker not in self.tickers:
            raise ValueError(f"STOCKOPS_TICKER={self.ticker} (the model's ticker) is not in the watchlist "
                             f"STOCKOPS_TICKERS={','.join(self.tickers)}: add it there")
        if self.source not in SOURCES:
            raise ValueError(f"STOCKOPS_SOURCE={self.source!r}: choose one of {', '.join(SOURCES)}")
        if self.source == "csv" and self.csv_path is None:
            raise ValueError("STOCKOPS_SOURCE=csv needs STOCKOPS_CSV_PATH (a yfinance-format CSV, or a folder of "
                             "<TICKER>.csv files)")
        if self.csv_path is not None and self.csv_path.is_file() and len(self.tickers) > 1:
            raise ValueError(f"STOCKOPS_CSV_PATH={self.csv_path} is one file, but the watchlist has "
                             f"{len(self.tickers)} tickers: point it at a folder of <TICKER>.csv files, or set "
                             "STOCKOPS_TICKERS to one symbol")
        if self.airflow_home is None:
            object.__setattr__(self, "airflow_home", self.home / "airflow")
        if self.market is not None and self.market not in self.tickers:
            object.__setattr__(self, "market", None)
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}")
        if self.serving_mode not in ("local", "agent"):
            raise ValueError(f"STOCKOPS_SERVING_MODE={self.serving_mode!r}: choose local or agent")
        if self.monitor_current_days < 20:
            raise ValueError(f"STOCKOPS_MONITOR_CURRENT_DAYS={self.monitor_current_days}: need at least 20 "
                             "trading days for a drift test to mean anything")
        if not 0 < self.monitor_kupiec_p < 1:
            raise ValueError(f"STOCKOPS_MONITOR_KUPIEC_P={self.monitor_kupiec_p}: a p-value threshold is in (0, 1), "
                             "e.g. 0.01")
        if self.alert_webhook and not self.alert_webhook.startswith(("http://", "https://")):
            raise ValueError("STOCKOPS_ALERT_WEBHOOK must be an http:// or https:// URL (the failure notifications "
                             "are POSTed there as JSON)")
        if self.monitor_keep_reports < 1:
            raise ValueError(f"STOCKOPS_MONITOR_KEEP_REPORTS={self.monitor_keep_reports}: keep at least 1 report "
                             "(the newest is what the dashboard links to)")
        if not 0 < self.monitor_drift_tickers_share <= 1:
            raise ValueError(f"STOCKOPS_MONITOR_DRIFT_TICKERS_SHARE={self.monitor_drift_tickers_share}: a share of the "
                             "watchlist, in (0, 1]")
        if self.gx_project_dir is None:
            object.__setattr__(self, "gx_project_dir", REPO_ROOT / "great_expectations")

    @property
    def ingest_cron(self) -> str | None:
        """The ingest DAG's schedule: None when runs are triggered only (``STOCKOPS_INGEST_SCHEDULE=manual``)."""
        return None if self.ingest_schedule.lower() in ("manual", "none") else self.ingest_schedule

    # ---- the data lake ---------------------------------------------------------------
    def ticker_data_dir(self, ticker: str) -> Path:
        """Everything about one ticker's prices: raw, snapshots, quarantine, manifest, decisions."""
        return self.home / "data" / ticker

    @property
    def data_dir(self) -> Path:
        """The model ticker's data (see :meth:`ticker_data_dir`)."""
        return self.ticker_data_dir(self.ticker)

    @property
    def shipped_prices_dir(self) -> Path:
        """The real daily series shipped with the project (``<TICKER>.csv.gz``), served by the replay."""
        return SHIPPED_PRICES

    @property
    def gx_work_dir(self) -> Path:
        """Runtime copy of the GX project: validation results and Data Docs live here."""
        return self.home / "gx"

    @property
    def data_docs_dir(self) -> Path:
        return self.gx_work_dir / "gx" / "uncommitted" / "data_docs" / "local_site"

    @property
    def airflow_passwords_file(self) -> Path:
        """Where ``airflow standalone`` (simple auth manager) writes the admin password."""
        return self.airflow_home / "simple_auth_manager_passwords.json.generated"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.home / "mlflow" / "artifacts"

    @property
    def experiment_name(self) -> str:
        return f"stockops-{self.ticker}"

    @property
    def training_dir(self) -> Path:
        """Scratch space of training runs (features, the candidate before it is logged)."""
        return self.home / "training"

    @property
    def evaluation_dir(self) -> Path:
        """Each registered version's holdout forecasts (``v<version>.parquet``): what the dashboard shows of a
        champion before any live day has passed."""
        return self.home / "evaluation"

    @property
    def audit_log(self) -> Path:
        """Append-only record of every gate decision and champion change."""
        return self.home / "audit" / "audit.jsonl"

    @property
    def bentoml_home(self) -> Path:
        """BentoML's model and bento stores (``BENTOML_HOME``)."""
        return self.home / "bentoml"

    @property
    def serving_dir(self) -> Path:
        """Serving state: the current upstream, process ids, deploy records, served predictions."""
        return self.home / "serving"

    @property
    def serving_state(self) -> Path:
        """What the stable address routes to now (the proxy reads it; deploys replace it atomically)."""
        return self.serving_dir / "current.json"

    @property
    def serving_standby(self) -> Path:
        """The previous bento, kept running so that going back to it is only a switch."""
        return self.serving_dir / "standby.json"

    @property
    def serving_processes(self) -> Path:
        """Every process the serving side started (pid, start time, role): nothing it starts goes untracked."""
        return self.serving_dir / "processes.json"

    @property
    def serving_proxy_record(self) -> Path:
        """The stable-address proxy's process record (pid, start time, address)."""
        return self.serving_dir / "proxy.json"

    @property
    def serving_supervisor_record(self) -> Path:
        """The serving supervisor's process record."""
        return self.serving_dir / "supervisor.json"

    @property
    def serving_logs_dir(self) -> Path:
        return self.serving_dir / "logs"

    @property
    def incident_log(self) -> Path:
        """Append-only record of serving outages: cause, start, detection, recovery (the DORA report counts them)."""
        return self.serving_dir / "incidents.jsonl"

    @property
    def deploy_requests_dir(self) -> Path:
        """Agent mode: deploy requests waiting for the serving agent (one JSON file each)."""
        return self.serving_dir / "requests"

    @property
    def deploy_log(self) -> Path:
        """Append-only record of every deploy attempt (time, bento tag, version, outcome)."""
        return self.serving_dir / "deploys.jsonl"

    @property
    def prediction_log(self) -> Path:
        """Append-only log of every forecast the endpoint served."""
        return self.serving_dir / "predictions.jsonl"

    @property
    def dag_run_log(self) -> Path:
        """Append-only record of every DAG run's start and outcome (the Airflow plugin's listener)."""
        return self.home / "audit" / "dag_runs.jsonl"

    @property
    def reports_dir(self) -> Path:
        """Generated reports (the DORA report: JSON and chart)."""
        return self.home / "reports"

    @property
    def monitoring_dir(self) -> Path:
        """Monitor reports: one folder per check (decision JSON, Evidently HTML), and the decision log."""
        return self.home / "monitoring" / self.ticker

    @property
    def monitor_log(self) -> Path:
        """Append-only record of every monitor decision (the cool-down reads it)."""
        return self.monitoring_dir / "decisions.jsonl"

    @property
    def forecast_log(self) -> Path:
        """Append-only record of the platform's own forecasts: the monitor's scoring of every watchlist ticker
        with the champion on its latest published snapshot. Live error and calibration are measured on these."""
        return self.home / "monitoring" / "forecasts.jsonl"

    @property
    def monitoring_experiment(self) -> str:
        return f"stockops-{self.ticker}-monitoring"

    @property
    def serve_url(self) -> str:
        return f"http://{self.serve_host}:{self.serve_port}"

    @property
    def bento_name(self) -> str:
        return f"{self.ticker.lower()}_forecast"

    @property
    def asset_name(self) -> str:
        """Name of the Airflow Asset of the model ticker's prices (stock_train and stock_monitor follow it)."""
        return prices_asset_name(self.ticker)

    @property
    def asset_uri(self) -> str:
        return prices_asset_uri(self.ticker)


def prices_asset_name(ticker: str) -> str:
    """One Airflow Asset per ticker: ``stock_ingest`` updates it when that ticker's snapshot moves."""
    return f"stockops_prices_{ticker}"


def prices_asset_uri(ticker: str) -> str:
    return f"stockops://prices/{ticker}"


PRICES_ALIAS = "stockops_prices"  # the AssetAlias the mapped publish task emits each ticker's Asset through
# One event per ingest run once every ticker of it is settled (published, quarantined or held for a person):
# stock_train and stock_monitor follow it, so neither starts on a partial day. Emitted through an alias, so a
# day the market is closed emits nothing.
DAY_ASSET_NAME, DAY_ASSET_URI, DAY_ALIAS = "stockops_watchlist_day", "stockops://watchlist/day", "stockops_day"


# The repository root: include/stockops/core/settings.py -> parents[3].
REPO_ROOT = Path(__file__).resolve().parents[3]
SHIPPED_PRICES = REPO_ROOT / "include" / "data" / "prices"


def settings_from(env: Environment) -> Settings:
    """The :class:`Settings` the declared values ``env`` make (the derived fields filled in)."""
    tickers = env.tickers
    ticker = env.ticker
    if "ticker" not in env.model_fields_set and ticker not in tickers and tickers:
        ticker = tickers[0]  # without STOCKOPS_TICKER the model follows the watchlist's first symbol
    values = {f.name: getattr(env, f.name) for f in fields(Settings) if f.name in Environment.model_fields}
    return Settings(**{
        **values,
        "ticker": ticker,
        "gate_coverage_90": (env.gate_coverage_90_min, env.gate_coverage_90_max),
        "mlflow_ui_url": env.mlflow_url or f"http://127.0.0.1:{env.mlflow_port}",
    })


def get_settings() -> Settings:
    """Read the settings from the environment now (cheap; no caching, so tests can vary it).

    A value that does not parse raises ``ValueError`` naming its variable.
    """
    return settings_from(Environment.read())


def make_settings(**overrides: Any) -> Settings:
    """Settings from the declared defaults and ``overrides``, without reading the environment.

    ``overrides`` are :class:`Settings` fields or :class:`Environment` declarations (``gate_coverage_90_min``),
    with values as the environment writes them (``tickers="GOOG,KO"``) or as the fields hold them.
    """
    declared = {k: v for k, v in overrides.items() if k in Environment.model_fields}
    settings = settings_from(Environment.from_environ({}, **declared))
    rest = {k: v for k, v in overrides.items() if k not in declared}
    return replace(settings, **rest) if rest else settings


FORKSERVER_PRELOAD = "great_expectations,exchange_calendars,pyarrow.parquet,stockops.data.validation"


# MLflow's HTTP client retries a failed request 7 times with a backoff factor of 2 by default
# (about 4 minutes, sized for rate-limited hosted servers): against our own server that is down,
# a task hung for 266 s before it failed. 3 retries with factor 1 give up after about 10 s.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


# What every ``mlflow server`` the platform starts runs with: MLflow 3's job runners (huey consumer processes for
# GenAI evaluation jobs, about four Python processes importing MLflow) are not used by stockops.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def quiet_environment() -> dict[str, str]:
    """Telemetry off and MLflow's HTTP retries bounded: merge into the env of every process stockops starts.

    Nothing the platform runs may phone home: MLflow 3 sends usage telemetry unless
    ``MLFLOW_DISABLE_TELEMETRY`` is true (it also honours ``DO_NOT_TRACK``, but only the value
    ``true``, not ``1``), BentoML unless ``BENTOML_DO_NOT_TRACK=true``, Evidently unless
    ``DO_NOT_TRACK`` is set at all, Great Expectations unless ``GX_ANALYTICS_ENABLED=False``.
    The opt-outs are fixed; the MLflow retry bounds keep a value the environment already has.
    """
    return {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "BENTOML_DO_NOT_TRACK": "true",
        "GX_ANALYTICS_ENABLED": "False",
        **{name: _env(name, default) for name, default in MLFLOW_HTTP_DEFAULTS.items()},
    }


def _quiet_this_process() -> None:
    """Apply :func:`quiet_environment` to this process where the environment says nothing yet."""
    for name, value in quiet_environment().items():
        os.environ.setdefault(name, value)


_quiet_this_process()


def airflow_environment(settings: Settings) -> dict[str, str]:
    """Environment variables that point Airflow at this repo and the stockops home.

    Used by the local launcher, the tests and (as documentation) the compose file, so the
    three agree on where DAGs, plugins and the metadata DB are. Every listener Airflow lets us
    place binds loopback unless its own ``AIRFLOW__...`` variable says otherwise (the log
    servers cannot be placed: the launchers start components without them, see
    ``stockops.launch.local``), and the admin password lives in the file the launcher creates
    private (mode 0600) before Airflow starts, so Airflow never generates and prints one.
    """
    return {
        **quiet_environment(),
        "STOCKOPS_HOME": str(settings.home),
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # LocalExecutor workers start from a forkserver that imported Great Expectations (~9 s) and
        # the calendar once; every task forks from them, so 18 validate tasks do not import GX 18 times.
        "AIRFLOW__SCHEDULER__MP_START_METHOD": os.environ.get("AIRFLOW__SCHEDULER__MP_START_METHOD", "forkserver"),
        "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": FORKSERVER_PRELOAD,
        "AIRFLOW__API__HOST": _env("AIRFLOW__API__HOST", "127.0.0.1"),
        # the scheduler's health endpoint (when enabled) binds 0.0.0.0 by Airflow's default
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST":
            _env("AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST", "127.0.0.1"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(settings.airflow_passwords_file),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT / "include"), os.environ.get("PYTHONPATH", "")) if p),
    }


# ---- the documentation generated from the declarations (``make settings-docs``) ---------------------------
ENV_EXAMPLE = REPO_ROOT / ".env.example"
README = REPO_ROOT / "README.md"
ENV_EXAMPLE_MARKERS = ("# ---- settings: generated from include/stockops/core/settings.py by `make settings-docs` "
                       "(edit there) ----", "# ---- end of the generated settings ----")
README_MARKERS = ("<!-- settings: generated from include/stockops/core/settings.py by `make settings-docs` "
                  "(edit there) -->", "<!-- end of the generated settings -->")


def declared_by_group() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """[(group, [(variable, default as written, description), ...]), ...] in :data:`GROUPS` order."""
    rows: dict[str, list[tuple[str, str, str]]] = {group: [] for group in GROUPS}
    for name, variable, field in Environment.declarations():
        group = (field.json_schema_extra or {}).get("group")
        if group not in rows:
            raise ValueError(f"{variable} is declared in group {group!r}, which GROUPS does not list")
        rows[str(group)].append((variable, Environment.default_text(name), field.description or ""))
    return [(group, entries) for group, entries in rows.items() if entries]


def env_example_block() -> str:
    """The settings part of ``.env.example``: every declaration, commented out at its default (uncomment to change)."""
    lines = [ENV_EXAMPLE_MARKERS[0]]
    for group, entries in declared_by_group():
        lines.append(f"# == {group} ==")
        for variable, default, description in entries:
            lines += [f"#   {description}", f"# {variable}={default}"]
    lines.append(ENV_EXAMPLE_MARKERS[1])
    return "\n".join(lines) + "\n"


def markdown_block() -> str:
    """The settings table of the README's Configuration section."""
    lines = [README_MARKERS[0], "", "| group | variable | default | meaning |", "|---|---|---|---|"]
    for group, entries in declared_by_group():
        for i, (variable, default, description) in enumerate(entries):
            shown = f"`{default}`" if default else "(unset)"
            meaning = description.replace("|", "/").replace("<", "&lt;").replace(">", "&gt;")
            lines.append(f"| {group if i == 0 else ''} | `{variable}` | {shown} | {meaning} |")
    lines += ["", README_MARKERS[1]]
    return "\n".join(lines) + "\n"


def with_block(text: str, markers: tuple[str, str], block: str) -> str:
    """``text`` with the part between ``markers`` (both included) replaced by ``block``."""
    start, end = text.find(markers[0]), text.find(markers[1])
    if start < 0 or end < start:
        raise ValueError(f"the markers {markers[0]!r} ... {markers[1]!r} are missing")
    end = text.index("\n", end) + 1 if "\n" in text[end:] else len(text)
    return text[:start] + block + text[end:]


def main(argv: list[str] | None = None) -> int:
    """``python -m stockops.core.settings --env-example | --markdown | --write``: print a generated part, or write
    both into ``.env.example`` and ``README.md``."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--env-example"]:
        print(env_example_block(), end="")
    elif args == ["--markdown"]:
        print(markdown_block(), end="")
    elif args == ["--write"]:
        for path, markers, block in ((ENV_EXAMPLE, ENV_EXAMPLE_MARKERS, env_example_block()),
                                     (README, README_MARKERS, markdown_block())):
            path.write_text(with_block(path.read_text(), markers, block))
            print(f"wrote the settings into {path}")
    else:
        print(main.__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
