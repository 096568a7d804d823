"""The Airflow side of the step contracts: tasks from one stated mapping of task ids to steps.

Each DAG file names its tasks once, ``STEPS = {"features": prepare_features, ...}``, and wires
them with ``step = step_tasks(STEPS)``; ``step("features")(...)`` is then the task ``features``
running :func:`stockops.training.prepare_features` through :func:`stockops.orchestration.xcom.xcom_step`
(typed contracts in the step, JSON in the XComs). Imported by DAG files only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk import task

from stockops.orchestration.xcom import xcom_step


def step_tasks(steps: Mapping[str, Callable[..., Any]]) -> Callable[..., Any]:
    """``step(task_id, short_circuit=False, **task_kwargs)``: the task ``task_id`` running ``steps[task_id]``."""

    def step(task_id: str, *, short_circuit: bool = False, **kwargs: Any) -> Any:
        # Any: Airflow's overloads of task() do not take task arguments passed on as **kwargs
        decorator: Any = task.short_circuit if short_circuit else task
        return decorator(xcom_step(steps[task_id]), task_id=task_id, **kwargs)

    return step
