"""Reference for bench/parse_time.py: the common anti-pattern, TensorFlow imported at module level.

Same wiring as dags/stock_ingest.py; the only difference is the top-level ``import tensorflow``.
Never put this file in dags/.
"""

from __future__ import annotations

from datetime import datetime

import tensorflow as tf  # noqa: F401  the anti-pattern being measured
from airflow.sdk import dag

from stockops.ingest import ingest_chunk, plan_chunks
from stockops.orchestration.wiring import step_tasks

step = step_tasks({"watchlist": plan_chunks, "chunk": ingest_chunk})


@dag(dag_id="heavy_tf_reference", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     tags=["bench"], default_args={"owner": "stockops", "retries": 1})
def heavy_tf_reference():
    step("chunk").partial(dag_run_id="{{ run_id }}").expand(chunk=step("watchlist")(logical_date="{{ ds }}"))


heavy_tf_reference()
