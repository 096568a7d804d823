"""Small helpers for the integration tests."""

from __future__ import annotations


def states(dagrun) -> dict[str, str]:
    """task_id -> state of a finished ``dag.test()`` run."""
    return {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()}


def served_version(settings) -> str:
    """The registry version the stable serving address answers with, over real HTTP."""
    from stockops.core.processes import http_json
    from stockops.model.portable.forecaster import synthetic_ohlcv
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

        from stockops.core.settings import get_settings

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


class WebhookReceiver:
    """A local HTTP server that keeps every JSON body POSTed to it: the far end of a failure notification."""

    def __enter__(self) -> WebhookReceiver:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                 "json": json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/stockops"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
