"""All stockops settings in one place.

Every value comes from an environment variable with a local default, and every path is
derived from one home directory (``STOCKOPS_HOME``, default ``./.stockops``). Reading the
settings has no side effects: nothing is created, imported or configured here. Code that
writes somewhere creates the folder it needs at that moment.

Each setting is declared once in :class:`~stockops.core.environment.Environment` (a pydantic-settings model:
variable, default, one-line description; the bento's variables in :mod:`stockops.core.served_settings`, which it
extends). :func:`get_settings` reads them into a :class:`Settings`; :func:`make_settings` builds one from the
defaults and given values without reading the environment; ``.env.example`` and the README's table are generated
from the declarations (:mod:`stockops.core.settings_docs`, ``make settings-docs``). What Airflow is told (its
environment, the Asset names the DAGs schedule on) is in :mod:`stockops.core.airflow_env`.

One exception, on purpose: importing this module sets the telemetry opt-outs and MLflow's
retry bounds of :func:`~stockops.core.process_env.quiet_environment` in ``os.environ`` where they are unset, so that no
stockops process phones home or hangs on a dead tracking server, whichever library it imports
first (MLflow decides about telemetry when it is imported).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from stockops.core.environment import (
    REPO_ROOT,
    SHIPPED_PRICES,
    SOURCES,
    TICKER_PATTERN,
    WATCHLIST,
    Environment,
)
from stockops.core.process_env import (
    MLFLOW_HTTP_DEFAULTS,
    MLFLOW_SERVER_ENV,
    _quiet_this_process,
    quiet_environment,
)

__all__ = [
    "MLFLOW_HTTP_DEFAULTS", "MLFLOW_SERVER_ENV", "REPO_ROOT", "SHIPPED_PRICES", "SOURCES", "TICKER_PATTERN",
    "WATCHLIST", "Environment", "Settings", "get_settings", "make_settings", "quiet_environment",
]

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
    ingest_chunk: int
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
    max_gap_reversal: float
    max_volume_ratio: float
    max_event_volume_ratio: float
    max_halt_sessions: int
    max_repeated_rows: int
    review_timeout_h: float
    gx_keep_results: int
    model_name: str
    mlflow_tracking_uri: str  # "" is filled in: sqlite under the home
    state_db: str  # "": SQLite at <home>/state.db (see state_url)
    blob_url: str  # "": the home (see blobs_url)
    train_profile: str
    train_epochs: int
    train_window: int
    train_samples_per_epoch: int
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
    serving_name: str
    serving_advertise_url: str
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
        from stockops.storage import homes

        homes.register(self.home, self.state_url)  # the logs under this home are records of its database

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
    def state_url(self) -> str:
        """The records' database (:mod:`stockops.storage.records`): ``STOCKOPS_STATE_DB``, else SQLite in the home."""
        return self.state_db or f"sqlite:///{(self.home / 'state.db').absolute()}"

    @property
    def blobs_url(self) -> str:
        """The blob store (:mod:`stockops.storage.blobs`): ``STOCKOPS_BLOB_URL``, else the home itself."""
        return self.blob_url or str(self.home.absolute())

    @property
    def blob_cache_dir(self) -> Path:
        """Where blobs of a remote store are kept once fetched (content-addressed: fetched once)."""
        return self.home / "cache" / "blobs"

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
    def deploy_requests_log(self) -> Path:
        """Agent mode: deploy requests for the serving agent, and those withdrawn (a log of the records' database)."""
        return self.serving_dir / "requests.jsonl"

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
    def online_calibration_path(self) -> Path:
        """The champion's online calibration state (:mod:`stockops.model.portable.online_calibration`): written by
        the monitor each day from the realised forecast records, applied by the bento and the monitor's scoring."""
        return self.home / "monitoring" / "online_calibration.json"

    @property
    def monitoring_experiment(self) -> str:
        return f"stockops-{self.ticker}-monitoring"

    @property
    def serve_url(self) -> str:
        return f"http://{self.serve_host}:{self.serve_port}"

    @property
    def serving_host(self) -> str:
        """This serving host's name in the records (``STOCKOPS_SERVING_NAME``, else the hostname)."""
        import socket

        return self.serving_name or socket.gethostname()

    @property
    def advertise_url(self) -> str:
        """Where the front proxy reaches this host's stable address (``STOCKOPS_SERVING_ADVERTISE_URL``)."""
        return self.serving_advertise_url or self.serve_url

    @property
    def bento_name(self) -> str:
        return f"{self.ticker.lower()}_forecast"


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


_quiet_this_process()  # see the module docstring: the one side effect of importing the settings
