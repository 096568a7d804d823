"""Failure notifications: every ``stock_*`` task that fails for good says so where people look.

:class:`FailureNotifier` is an Airflow notifier, the ``on_failure_callback`` of every stockops
DAG's tasks (``default_args``), so it runs once per task that failed with no retry left. It
always writes an ``alert`` line to the audit log (``Settings.audit_log``) and an ERROR line to
the task log; when ``STOCKOPS_ALERT_WEBHOOK`` is set it also POSTs the alert as JSON there
(``text`` carries a one-line summary, the shape Slack, Mattermost and Teams incoming webhooks
take). Delivery never raises: a notifier that fails must not hide the failure it reports, so a
webhook that refuses or times out is itself logged and recorded in the alert's ``delivery``.

Every DAG file imports this module: only the standard library, Airflow's notifier base and
``stockops.core.settings``/``stockops.core.audit`` are imported here.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

from stockops.core import audit
from stockops.core.settings import get_settings

log = logging.getLogger(__name__)

EVENT = "alert"


def alert_fields(context: Any) -> dict[str, Any]:
    """What failed, where, and why, from a task's Airflow context."""
    ti = context.get("ti") or context.get("task_instance")
    error = context.get("exception")
    return {
        "dag_id": getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None),
        "run_id": getattr(ti, "run_id", None) or context.get("run_id"),
        "task_id": getattr(ti, "task_id", None),
        "map_index": getattr(ti, "map_index", -1),
        "try_number": getattr(ti, "try_number", None),
        "error": f"{type(error).__name__}: {error}"[:2000] if error is not None else "unknown (no exception given)",
        "log_url": getattr(ti, "log_url", None),
    }


def summary(fields: dict[str, Any]) -> str:
    task = fields["task_id"] + (f"[{fields['map_index']}]" if fields.get("map_index", -1) not in (-1, None) else "")
    return f"stockops: {fields['dag_id']}.{task} failed (run {fields['run_id']}, try {fields['try_number']}): {fields['error']}"


def post_json(url: str, payload: dict, timeout: float) -> str:
    """POST ``payload`` as JSON; ``"delivered (HTTP 200)"`` or why not, never an exception."""
    request = urllib.request.Request(url, data=json.dumps(payload, default=str).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return f"delivered (HTTP {response.status})"
    except urllib.error.HTTPError as exc:
        return f"refused by the webhook (HTTP {exc.code})"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"not delivered: {type(exc).__name__}: {getattr(exc, 'reason', exc)}"


class FailureNotifier(BaseNotifier):
    """Audit log + task log always; the webhook (``STOCKOPS_ALERT_WEBHOOK``) when one is set."""

    def notify(self, context: Any) -> None:
        try:
            settings = get_settings()
            fields = alert_fields(context)
            text = summary(fields)
            log.error("ALERT %s", text)
            delivery = "no webhook configured (STOCKOPS_ALERT_WEBHOOK)"
            if settings.alert_webhook:
                delivery = post_json(settings.alert_webhook, {"text": text, **fields}, settings.alert_timeout_s)
                (log.info if delivery.startswith("delivered") else log.warning)("alert webhook: %s", delivery)
            audit.record(settings.audit_log, EVENT, **fields, delivery=delivery)
        except Exception as exc:  # noqa: BLE001 - the failure being reported must stay the task's story
            log.warning("stockops: the failure notification itself failed: %s: %s", type(exc).__name__, exc)


notify_failure = FailureNotifier()
