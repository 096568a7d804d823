"""The Celery app's configuration for stockops' workers: Airflow's own, plus modules every task needs imported once.

A Celery worker starts its pool by forking its main process, and each Airflow task is forked from a pool process;
importing Great Expectations, the NYSE calendar and pyarrow in the main process (Celery's ``imports``, done before
the pool starts) means no task imports them again (~9 s each), as the LocalExecutor's forkserver preload does.
Used through ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=stockops.orchestration.celery_config.CELERY_CONFIG``.
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from stockops.core.airflow_env import FORKSERVER_PRELOAD

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG,
                 "imports": [*DEFAULT_CELERY_CONFIG.get("imports", ()), *FORKSERVER_PRELOAD.split(",")]}
