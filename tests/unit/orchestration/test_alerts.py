"""Failure notifications (``stockops.orchestration.alerts``): what a failed task tells the audit log, the task log and a webhook.

The DAG-level wiring and a real failed task delivering to a local receiver are in
tests/dags/test_dag_integrity.py and tests/integration/test_rollback_dag.py; here the notifier's
branches, with a real HTTP server at the far end.
"""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from types import SimpleNamespace

import pytest

from stockops.core import audit
from stockops.core.processes import free_port
from stockops.orchestration.alerts import FailureNotifier
from tests.integration.helpers import WebhookReceiver


def context(error: Exception | None = None) -> dict:
    ti = SimpleNamespace(dag_id="stock_train", run_id="manual__1", task_id="train", map_index=-1, try_number=2,
                         log_url="http://127.0.0.1:8080/log")
    return {"ti": ti, "exception": error if error is not None else RuntimeError("out of memory")}


def test_without_a_webhook_the_audit_log_and_the_task_log_get_the_alert(settings, caplog):
    with caplog.at_level(logging.ERROR, logger="stockops.orchestration.alerts"):
        FailureNotifier().notify(context())
    (alert,) = audit.read(settings.audit_log)
    assert (alert["event"], alert["dag_id"], alert["task_id"], alert["try_number"]) == ("alert", "stock_train",
                                                                                         "train", 2)
    assert alert["error"] == "RuntimeError: out of memory"
    assert alert["delivery"] == "no webhook configured (STOCKOPS_ALERT_WEBHOOK)"
    assert "ALERT stockops: stock_train.train failed (run manual__1, try 2): RuntimeError: out of memory" in caplog.text


def test_the_webhook_gets_json_with_a_one_line_text(settings, monkeypatch):
    with WebhookReceiver() as hook:
        monkeypatch.setenv("STOCKOPS_ALERT_WEBHOOK", hook.url)
        FailureNotifier().notify(context(ValueError("bad snapshot")))
    (delivered,) = hook.received
    assert delivered["json"]["text"] == "stockops: stock_train.train failed (run manual__1, try 2): ValueError: bad snapshot"
    assert delivered["json"]["log_url"] == "http://127.0.0.1:8080/log"
    assert audit.read(settings.audit_log)[-1]["delivery"] == "delivered (HTTP 200)"


class Refusing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("kind", ["refused", "nobody listening"])
def test_a_webhook_that_fails_is_recorded_and_never_raises(settings, monkeypatch, kind):
    server = None
    if kind == "refused":
        server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
        Thread(target=server.serve_forever, daemon=True).start()
        monkeypatch.setenv("STOCKOPS_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_address[1]}/")
    else:
        monkeypatch.setenv("STOCKOPS_ALERT_WEBHOOK", f"http://127.0.0.1:{free_port()}/")
    try:
        FailureNotifier().notify(context())  # must not raise
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    delivery = audit.read(settings.audit_log)[-1]["delivery"]
    assert delivery == "refused by the webhook (HTTP 500)" if kind == "refused" else delivery.startswith(
        "not delivered: URLError")


def test_a_webhook_setting_that_is_not_a_url_is_refused_with_its_name(monkeypatch):
    from stockops.core.settings import get_settings

    monkeypatch.setenv("STOCKOPS_ALERT_WEBHOOK", "hooks.slack.com/services/x")
    with pytest.raises(ValueError, match="STOCKOPS_ALERT_WEBHOOK must be an http"):
        get_settings()
