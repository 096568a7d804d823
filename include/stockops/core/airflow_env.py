"""What stockops tells Airflow: the environment that points it at this repo and the stockops home
(:func:`airflow_environment`), and the names of the Assets and aliases the DAGs schedule on.

Plain values only, no Airflow import (``stockops.core`` is the bottom layer): the DAGs and
``stockops.orchestration`` build their ``Asset`` and ``AssetAlias`` objects from these names, the
launchers, the tests and (as documentation) the compose file start Airflow with this environment.
"""

from __future__ import annotations

import os

from stockops.core.environment import REPO_ROOT, _env
from stockops.core.process_env import quiet_environment
from stockops.core.settings import Settings

__all__ = [
    "DAY_ALIAS", "DAY_ASSET_NAME", "DAY_ASSET_URI", "FORKSERVER_PRELOAD", "PRICES_ALIAS", "airflow_environment",
    "prices_asset_name", "prices_asset_uri",
]

# What the LocalExecutor's forkserver imports once, before any task forks from it.
FORKSERVER_PRELOAD = "great_expectations,exchange_calendars,pyarrow.parquet,stockops.data.validation"


# ---- Assets and aliases ------------------------------------------------------------------------------------
def prices_asset_name(ticker: str) -> str:
    """One Airflow Asset per ticker: ``stock_ingest`` updates it when that ticker's snapshot moves."""
    return f"stockops_prices_{ticker}"


# The URIs' scheme is ``x-stockops``: Airflow leaves an ``x-`` scheme as it is, where any other makes it load every
# provider's URI handlers when a DAG file defines an Asset (the amazon provider's S3 handler imports boto3: +0.06 s
# to every parse of stock_train and stock_monitor, 1.8 s on a busy machine).
def prices_asset_uri(ticker: str) -> str:
    return f"x-stockops://prices/{ticker}"


PRICES_ALIAS = "stockops_prices"  # the AssetAlias the mapped publish task emits each ticker's Asset through
# One event per ingest run once every ticker of it is settled (published, quarantined or held for a person):
# stock_train and stock_monitor follow it, so neither starts on a partial day. Emitted through an alias, so a
# day the market is closed emits nothing.
DAY_ASSET_NAME, DAY_ASSET_URI, DAY_ALIAS = "stockops_watchlist_day", "x-stockops://watchlist/day", "stockops_day"


# ---- the environment ---------------------------------------------------------------------------------------
def airflow_environment(settings: Settings) -> dict[str, str]:
    """Environment variables that point Airflow at this repo and the stockops home.

    Used by the local launcher, the tests and (as documentation) the compose file, so the
    three agree on where DAGs, plugins and the metadata DB are. Every listener Airflow lets us
    place binds loopback unless its own ``AIRFLOW__...`` variable says otherwise (the log
    servers cannot be placed: the launchers start components without them, see
    ``stockops.launch.components``), and the admin password lives in the file the launcher creates
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
