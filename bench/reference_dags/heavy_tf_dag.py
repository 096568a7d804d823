"""Reference for bench/parse_time.py: the common anti-pattern, TensorFlow imported at module level.

Same wiring as dags/stock_ingest.py; the only difference is the top-level ``import tensorflow``.
Never put this file in dags/.
"""

from __future__ import annotations

from datetime import datetime

import tensorflow as tf  # noqa: F401  the anti-pattern being measured
from airflow.sdk import dag, task

from stockops.ingest import fetch_prices, publish_validated, validate_raw


@dag(dag_id="heavy_tf_reference", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     tags=["bench"], default_args={"owner": "stockops", "retries": 1})
def heavy_tf_reference():
    validated = task(validate_raw)(task(fetch_prices)(logical_date="{{ ds }}"))
    task(publish_validated)(validated)


heavy_tf_reference()
