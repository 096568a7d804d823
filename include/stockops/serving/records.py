"""The records a deploy keeps: its attempts in the deploy log, and the champion changes in the audit log.

Every attempt is in the deploy log before it touches anything (a ``deploy_started`` line), and
ends with its ``deploy`` line (succeeded, failed); an attempt whose process died first is
completed by :func:`~stockops.serving.deploy.reconcile` (``interrupted``: succeeded if ``@champion`` names its version,
failed otherwise), so DORA counts killed attempts too.

When the audit log's last change does not name ``@champion`` (a change interrupted after the alias
moved), the missing change is written as a ``reconciliation``.
"""

from __future__ import annotations

import logging
from typing import Any

from stockops import registry
from stockops.contracts import DeployRecord
from stockops.core import audit
from stockops.core.settings import Settings
from stockops.serving import state
from stockops.serving.change import CHAMPION_CHANGES

log = logging.getLogger(__name__)

_UNKNOWN: Any = object()  # "not read yet" (None is an answer: no champion)


# the contract's optional fields, written only where a deploy set them (a line says what happened, not a null for
# every question a deploy could answer)
_OPTIONAL = {"audit_at": None, "champion_before": None, "note": ""}


def _version(value: Any) -> str | None:
    """A version as the contract holds it: text, or None for none."""
    return None if value is None else str(value)


def _record_deploy(settings: Settings, record: DeployRecord, **details: Any) -> DeployRecord:
    """Append the ``deploy`` line of a deploy carried out (succeeded, or unchanged): ``record`` as the line, with
    ``details`` beside it (the reason, the attempt, the url …: the log keeps more than the contract); returns it."""
    line = {k: v for k, v in record.to_xcom().items() if k not in _OPTIONAL or v != _OPTIONAL[k]}
    audit.append(settings.deploy_log, {"event": "deploy", "ticker": settings.ticker, "host": settings.serving_host,
                                       **details, **line})
    return record


def _record_attempt(settings: Settings, fields: dict) -> dict:
    """Append the ``deploy`` line of an attempt no caller gets a record of: one that failed (a failed deploy raises
    :class:`~stockops.serving.change.DeployError` instead), or one whose process died (completed by reconcile)."""
    return audit.record(settings.deploy_log, "deploy", **{"ticker": settings.ticker, "host": settings.serving_host,
                                                          **fields})


def deploys(settings: Settings) -> list[dict]:
    """Every finished deploy attempt (``deploy`` lines; the ``deploy_started`` ones are left out)."""
    return [r for r in audit.read(settings.deploy_log) if r.get("event", "deploy") == "deploy"]


def complete_interrupted(settings: Settings, champion: Any = _UNKNOWN) -> list[dict]:
    """Finish the record of every attempt of this host whose process died before its ``deploy`` line (call in the
    lock): succeeded if it moved ``@champion`` to its version (reconcile serves it), failed otherwise. Another
    serving host's attempts are its own to finish (a process id means nothing here)."""
    entries = audit.read(settings.deploy_log)
    finished = {r.get("attempt") for r in entries if r.get("event") == "deploy" and r.get("attempt")}
    me = settings.serving_host
    open_ = [r for r in entries if r.get("event") == "deploy_started" and r.get("attempt") not in finished
             and r.get("host", me) == me
             and not state.pid_matches({"pid": r.get("pid"), "create_time": r.get("create_time")})]
    if not open_:
        return []
    if champion is _UNKNOWN and any(r.get("kind") in CHAMPION_CHANGES for r in open_):
        registry.setup(settings)
        champion = registry.champion_version(settings)
    champion = None if champion is None or champion is _UNKNOWN else str(champion.version)
    done = []
    for r in open_:
        moved = r.get("kind") in CHAMPION_CHANGES and champion == str(r.get("version")) \
            and _alias_moved_by(settings, r)
        fields = {k: v for k, v in r.items() if k not in ("at", "event", "pid", "create_time", "host")}
        done.append(_record_attempt(settings, {
            **fields, "outcome": "succeeded" if moved else "failed", "interrupted": True,
            "error" if not moved else "note": (f"the deploying process (pid {r.get('pid')}) died after @champion moved "
                                               f"to v{r.get('version')}; reconcile serves it" if moved else
                                               f"the deploying process (pid {r.get('pid')}) died before it finished; "
                                               "what served before serves again")}))
        log.warning("deploy attempt %s (%s of v%s, pid %s) was interrupted: recorded %s", r.get("attempt"),
                    r.get("kind"), r.get("version"), r.get("pid"), done[-1]["outcome"])
    return done


def _alias_moved_by(settings: Settings, started: dict) -> bool:
    """Did the champion change to ``started``'s version at or after that attempt began (its audit entry, or the
    reconciliation written for it)?"""
    from stockops.registry.changes import history

    return any(str(c.get("to_version")) == str(started.get("version")) and c.get("at", "") >= started.get("at", "")
               for c in history(settings))


def _reconcile_records(settings: Settings, champion: Any = _UNKNOWN) -> dict | None:
    """Append a ``reconciliation`` entry when the audit log's last change does not name ``@champion``
    (``champion``: the registry's, when the caller has just read it)."""
    from stockops.registry.changes import history, record_change

    if champion is _UNKNOWN:
        registry.setup(settings)
        champion = registry.champion_version(settings)
    if champion is None:
        return None
    changes = history(settings)
    last = changes[-1]["to_version"] if changes else None
    if last == str(champion.version):
        return None
    log.warning("the audit log's last champion change names v%s but @champion is v%s: recording it", last,
                champion.version)
    return record_change(settings, "reconciliation", from_version=last, to_version=champion.version,
                         reason=f"@champion was v{champion.version} but the audit log's last change named "
                                f"v{last or 'none'} (a change interrupted after the alias moved)")
