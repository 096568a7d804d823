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


class AirflowApi:
    """Airflow's own REST API app (``create_app``) in this process, on the test session's metadata DB.

    Answers exactly as ``airflow api-server`` would (same routes, same auth manager) without a
    server process: an operator's clicks in tests that run ``dag.test()``.
    """

    def __init__(self) -> None:
        import json

        from airflow.api_fastapi.app import create_app
        from fastapi.testclient import TestClient

        from stockops.config import get_settings

        self.client = TestClient(create_app(apps="core"))
        passwords = json.loads(get_settings().airflow_passwords_file.read_text())
        answer = self.client.post("/auth/token", json={"username": "admin", "password": passwords["admin"]})
        assert answer.status_code == 201, answer.text
        self.headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def call(self, path: str, payload: dict | None = None, method: str = "") -> dict:
        response = self.client.request(method or ("POST" if payload is not None else "GET"), path, json=payload,
                                       headers=self.headers)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()
