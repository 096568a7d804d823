"""Small helpers for the integration tests."""

from __future__ import annotations


def states(dagrun) -> dict[str, str]:
    """task_id -> state of a finished ``dag.test()`` run."""
    return {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()}


def served_version(settings) -> str:
    """The registry version the stable serving address answers with, over real HTTP."""
    from stockops.forecaster import synthetic_ohlcv
    from stockops.processes import http_json
    from stockops.serving import request_body

    status, body = http_json(f"{settings.serve_url}/predict", request_body(synthetic_ohlcv(120)))
    assert status == 200, body
    return body["model_version"]
