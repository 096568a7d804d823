"""All stockops settings in one place.

Every value comes from an environment variable with a local default, and every path is
derived from one home directory (``STOCKOPS_HOME``, default ``./.stockops``). Reading the
settings has no side effects: nothing is created, imported or configured here. Code that
writes somewhere creates the folder it needs at that moment.

One exception, on purpose: importing this module sets the telemetry opt-outs and MLflow's
retry bounds of :func:`quiet_environment` in ``os.environ`` where they are unset, so that no
stockops process phones home or hangs on a dead tracking server, whichever library it imports
first (MLflow decides about telemetry when it is imported).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

SOURCES = ("replay", "yfinance", "csv")
# The default watchlist: the 18 real daily series shipped in include/data/prices/ (QQQ, an index
# fund, is the market reference).
WATCHLIST = ("GOOG", "MSFT", "IBM", "INTC", "CSCO", "ORCL", "JPM", "BAC", "XOM", "CVX", "KO", "PG", "JNJ", "WMT",
             "PFE", "GE", "T", "QQQ")
# A ticker names folders and Airflow Assets: letters, digits and . - ^ = only (BRK-B, ^GSPC, EURUSD=X).
TICKER_PATTERN = re.compile(r"^[A-Z0-9^][A-Z0-9.\-^=]{0,14}$")


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a number") from exc


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not an integer") from exc


@dataclass(frozen=True)
class Settings:
    """A snapshot of the environment; build one with :func:`get_settings`."""

    home: Path
    # every symbol that flows through ingest and validation (STOCKOPS_TICKERS)
    tickers: tuple[str, ...] = WATCHLIST
    # the symbol the LSTM is trained on and served for (STOCKOPS_TICKER; one of the watchlist)
    ticker: str = "GOOG"
    source: str = "replay"
    csv_path: Path | None = None
    # replay: on ``replay_start`` the first ``replay_initial_days`` trading days are known,
    # and one more arrives with every NYSE session after it.
    replay_start: str = "2026-01-01"
    replay_initial_days: int = 1000
    # when stock_ingest runs: a cron expression (UTC), or "manual" for triggered runs only
    ingest_schedule: str = "0 22 * * 1-5"
    # yfinance
    fetch_timeout_s: float = 20.0
    fetch_attempts: int = 3
    fetch_backoff_s: float = 2.0
    history_start: str = "2004-01-01"
    # validation thresholds (Great Expectations suite parameters; gaps and staleness in NYSE sessions)
    max_gap_sessions: int = 5
    max_staleness_sessions: int = 5
    # a close-to-close move beyond this is "extreme": accepted only when the day's own range and
    # volume back it and the next session does not undo it; in the newest session, a person decides
    max_abs_return: float = 0.25
    extreme_min_range_share: float = 0.15  # log(High/Low) >= this share of the extreme move
    extreme_min_volume_ratio: float = 1.0  # volume >= this x its median of the previous 50 sessions
    max_reversal: float = 0.9  # the next session may undo at most this share of an extreme move
    max_volume_ratio: float = 50.0  # any day: volume <= this x its median (a units error is 1,000x)
    max_repeated_rows: int = 0  # sessions in a row that repeat the previous whole row (a stale feed)
    review_timeout_h: float = 72.0  # how long an ingest waits for a person's decision on a held day
    gx_keep_results: int = 360  # GX validation results (and Data Docs pages) kept: about 20 days of 18 tickers
    # training and the promotion gate
    model_name: str = "stockops_risk"  # the global risk forecaster's registered name
    mlflow_tracking_uri: str = ""  # default sqlite under the home
    train_profile: str = "default"  # "small": a tiny model for tests and smoke runs
    train_epochs: int = 20
    train_window: int = 40
    # the market reference whose daily return every ticker's model input carries (none if not in the watchlist)
    market: str | None = "QQQ"
    gate_tolerance: float = 0.001  # point RMSE <= persistence x (1 + this)
    gate_margin: float = 0.03  # QLIKE nats/day a stale champion may be beaten by (bench/gate_thresholds.py)
    gate_coverage_90: tuple[float, float] = (0.88, 0.92)
    gate_dm_t: float = 2.0
    gate_champion_max_age_days: float = 7.0
    gate_harx_tolerance: float = 0.0  # QLIKE nats/day a candidate may lose to HARX-GKO (0: none)
    # serving: the stable address users call (a small proxy in front of the current bento)
    serve_host: str = "127.0.0.1"
    serve_port: int = 3000
    serve_ready_timeout_s: float = 180.0
    # "local": deploys start bentos on this machine (make run, one machine); "agent": deploys are
    # requests that the serving agent (`python -m stockops.serving agent`, the compose `serving`
    # container) carries out where the endpoint runs
    serving_mode: str = "local"
    # the serving supervisor: seconds between its checks of the proxy, the bento and the champion
    supervise_interval_s: float = 0.5
    serve_spares: int = 1  # extra processes of the served bento: a killed one costs no request
    # the supervisor's watcher (make run's launcher, stock_monitor) restarts it when its heartbeat is older than this
    supervisor_stale_s: float = 10.0
    # the longest a deploy, rollback or reconcile waits for the deploy lock before it gives up, naming the holder
    deploy_lock_timeout_s: float = 420.0
    # Host headers the proxy and the bento answer (DNS-rebinding guard; the port is not compared)
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
    log_max_bytes: int = 10 * 1024 * 1024  # size cap of each serving log file (3 rotated copies kept)
    # where people open the MLflow UI (links in the Airflow UI); make run serves it on this port
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    # failure notifications (stockops.orchestration.alerts): a webhook that receives every failed task as JSON (none: the audit
    # log and the task log only), and how long one delivery may take
    alert_webhook: str | None = None
    alert_timeout_s: float = 10.0
    # monitoring (stock_monitor): see bench/monitor_drift.py for how the defaults were chosen
    monitor_current_days: int = 60  # trading days compared with the champion's training window
    monitor_drift_threshold: float = 0.6  # normed Wasserstein distance above which a feature drifted
    monitor_drift_share: float = 0.5  # share of a ticker's features that drifted for the ticker to count as drifted
    # share of the watchlist's checked tickers that drifted for drift to call for a retrain (with one ticker: that one)
    monitor_drift_tickers_share: float = 0.5
    monitor_error_ratio: float = 1.5  # live RMSE (in % of price) / the champion's holdout RMSE
    monitor_persistence_ratio: float = 1.10  # live RMSE / persistence's RMSE on the same days
    monitor_cooldown_h: float = 72.0  # no second retrain trigger within this many hours
    # the platform's own forecasts (the forecast log) realized in the window before live error is measured on them
    # alone; until then the champion is replayed over the window
    monitor_min_forecast_days: int = 20
    # the live calibration scorecard (stockops.monitoring.scorecard): Kupiec p-value below which the 95 % or 99 %
    # VaR calibration is rejected, and how much worse (nats/day) than HARX-GKO the champion's pooled QLIKE may be
    monitor_kupiec_p: float = 0.01
    monitor_qlike_margin: float = 0.05
    # rollback proposal: the champion's pooled QLIKE worse than the previous champion's on the same realized
    # (ticker, day) pairs by more than this many nats/day, with a Diebold-Mariano |t| of at least monitor_rollback_dm_t
    monitor_rollback_margin: float = 0.03
    monitor_rollback_dm_t: float = 2.0
    # monitor reports (one folder per check, the Evidently HTML is ~0.5 MB per ticker): kept at most this many, and
    # none older than this many days (the newest is always kept)
    monitor_keep_reports: int = 60
    monitor_keep_days: float = 90.0
    # derived locations (filled in __post_init__ from home unless given)
    airflow_home: Path = field(default=None)  # type: ignore[assignment]
    gx_project_dir: Path = field(default=None)  # type: ignore[assignment]

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


def _env_tickers(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = _env(name, "")
    if not raw:
        return default
    return tuple(symbol.strip().upper() for symbol in raw.replace(" ", ",").split(",") if symbol.strip())


def get_settings() -> Settings:
    """Read the settings from the environment now (cheap; no caching, so tests can vary it)."""
    home = Path(_env("STOCKOPS_HOME", str(Path.cwd() / ".stockops"))).expanduser().resolve()
    csv_raw = _env("STOCKOPS_CSV_PATH", "")
    airflow_home = os.environ.get("AIRFLOW_HOME")
    tickers = _env_tickers("STOCKOPS_TICKERS", WATCHLIST)
    return Settings(
        home=home,
        tickers=tickers,
        ticker=_env("STOCKOPS_TICKER", "GOOG" if "GOOG" in tickers else tickers[0]).upper(),
        source=_env("STOCKOPS_SOURCE", "replay").lower(),
        csv_path=Path(csv_raw).expanduser().resolve() if csv_raw else None,
        ingest_schedule=_env("STOCKOPS_INGEST_SCHEDULE", "0 22 * * 1-5"),
        replay_start=_env("STOCKOPS_REPLAY_START", "2026-01-01"),
        replay_initial_days=_env_int("STOCKOPS_REPLAY_INITIAL_DAYS", 1000),
        fetch_timeout_s=_env_float("STOCKOPS_FETCH_TIMEOUT_S", 20.0),
        fetch_attempts=_env_int("STOCKOPS_FETCH_ATTEMPTS", 3),
        fetch_backoff_s=_env_float("STOCKOPS_FETCH_BACKOFF_S", 2.0),
        history_start=_env("STOCKOPS_HISTORY_START", "2004-01-01"),
        max_gap_sessions=_env_int("STOCKOPS_MAX_GAP_SESSIONS", 5),
        max_staleness_sessions=_env_int("STOCKOPS_MAX_STALENESS_SESSIONS", 5),
        max_abs_return=_env_float("STOCKOPS_MAX_ABS_RETURN", 0.25),
        extreme_min_range_share=_env_float("STOCKOPS_EXTREME_MIN_RANGE_SHARE", 0.15),
        extreme_min_volume_ratio=_env_float("STOCKOPS_EXTREME_MIN_VOLUME_RATIO", 1.0),
        max_reversal=_env_float("STOCKOPS_MAX_REVERSAL", 0.9),
        max_volume_ratio=_env_float("STOCKOPS_MAX_VOLUME_RATIO", 50.0),
        max_repeated_rows=_env_int("STOCKOPS_MAX_REPEATED_ROWS", 0),
        review_timeout_h=_env_float("STOCKOPS_REVIEW_TIMEOUT_H", 72.0),
        gx_keep_results=_env_int("STOCKOPS_GX_KEEP_RESULTS", 360),
        model_name=_env("STOCKOPS_MODEL_NAME", "stockops_risk"),
        # Not MLFLOW_TRACKING_URI: mlflow.set_tracking_uri() writes that variable into the process env.
        mlflow_tracking_uri=_env("STOCKOPS_MLFLOW_TRACKING_URI", ""),
        train_profile=_env("STOCKOPS_TRAIN_PROFILE", "default").lower(),
        train_epochs=_env_int("STOCKOPS_TRAIN_EPOCHS", 20),
        train_window=_env_int("STOCKOPS_TRAIN_WINDOW", 40),
        market=_env("STOCKOPS_MARKET", "QQQ").upper(),
        gate_tolerance=_env_float("STOCKOPS_GATE_TOLERANCE", 0.001),
        gate_margin=_env_float("STOCKOPS_GATE_MARGIN", 0.03),
        gate_coverage_90=(_env_float("STOCKOPS_GATE_COVERAGE_90_MIN", 0.88), _env_float("STOCKOPS_GATE_COVERAGE_90_MAX", 0.92)),
        gate_dm_t=_env_float("STOCKOPS_GATE_DM_T", 2.0),
        gate_champion_max_age_days=_env_float("STOCKOPS_GATE_CHAMPION_MAX_AGE_DAYS", 7.0),
        gate_harx_tolerance=_env_float("STOCKOPS_GATE_HARX_TOLERANCE", 0.0),
        serve_host=_env("STOCKOPS_SERVE_HOST", "127.0.0.1"),
        serve_port=_env_int("STOCKOPS_SERVE_PORT", 3000),
        serve_ready_timeout_s=_env_float("STOCKOPS_SERVE_READY_TIMEOUT_S", 180.0),
        serving_mode=_env("STOCKOPS_SERVING_MODE", "local").lower(),
        supervise_interval_s=_env_float("STOCKOPS_SUPERVISE_INTERVAL_S", 0.5),
        serve_spares=_env_int("STOCKOPS_SERVE_SPARES", 1),
        supervisor_stale_s=_env_float("STOCKOPS_SUPERVISOR_STALE_S", 10.0),
        deploy_lock_timeout_s=_env_float("STOCKOPS_DEPLOY_LOCK_TIMEOUT_S", 420.0),
        allowed_hosts=tuple(h.strip() for h in _env("STOCKOPS_ALLOWED_HOSTS", "127.0.0.1,localhost,::1").split(",")
                            if h.strip()),
        log_max_bytes=_env_int("STOCKOPS_LOG_MAX_BYTES", 10 * 1024 * 1024),
        mlflow_ui_url=_env("STOCKOPS_MLFLOW_URL", f"http://127.0.0.1:{_env('STOCKOPS_MLFLOW_PORT', '5000')}"),
        alert_webhook=_env("STOCKOPS_ALERT_WEBHOOK", "") or None,
        alert_timeout_s=_env_float("STOCKOPS_ALERT_TIMEOUT_S", 10.0),
        monitor_current_days=_env_int("STOCKOPS_MONITOR_CURRENT_DAYS", 60),
        monitor_drift_threshold=_env_float("STOCKOPS_MONITOR_DRIFT_THRESHOLD", 0.6),
        monitor_drift_share=_env_float("STOCKOPS_MONITOR_DRIFT_SHARE", 0.5),
        monitor_error_ratio=_env_float("STOCKOPS_MONITOR_ERROR_RATIO", 1.5),
        monitor_persistence_ratio=_env_float("STOCKOPS_MONITOR_PERSISTENCE_RATIO", 1.10),
        monitor_cooldown_h=_env_float("STOCKOPS_MONITOR_COOLDOWN_H", 72.0),
        monitor_min_forecast_days=_env_int("STOCKOPS_MONITOR_MIN_FORECAST_DAYS", 20),
        monitor_kupiec_p=_env_float("STOCKOPS_MONITOR_KUPIEC_P", 0.01),
        monitor_qlike_margin=_env_float("STOCKOPS_MONITOR_QLIKE_MARGIN", 0.05),
        monitor_drift_tickers_share=_env_float("STOCKOPS_MONITOR_DRIFT_TICKERS_SHARE", 0.5),
        monitor_rollback_margin=_env_float("STOCKOPS_MONITOR_ROLLBACK_MARGIN", 0.03),
        monitor_rollback_dm_t=_env_float("STOCKOPS_MONITOR_ROLLBACK_DM_T", 2.0),
        monitor_keep_reports=_env_int("STOCKOPS_MONITOR_KEEP_REPORTS", 60),
        monitor_keep_days=_env_float("STOCKOPS_MONITOR_KEEP_DAYS", 90.0),
        airflow_home=Path(airflow_home).resolve() if airflow_home else None,  # type: ignore[arg-type]
    )


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
