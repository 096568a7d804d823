"""The monitoring contracts: what the endpoint serves, the forecasts scored, and the monitor's decision.

Two of them are records the monitor writes rather than XComs: :class:`ForecastRecord` (one line of the forecast
log) and :class:`MonitorRecord` (one check, as ``decision.json`` and the decision log hold it). Each is built
whole by its writer and written by its ``to_record()``: the fields as they are (no JSON conversion, so the
lines stay what ``json.dumps`` made of the dicts before), the ones a record lacks left out rather than null.
Their readers (the dashboard, DORA, the decision's debounce) read the logs' plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from stockops.contracts.base import Contract


@dataclass(frozen=True)
class ServingHealth(Contract):
    """``check_serving``: the version the endpoint serves (None where this home serves nothing yet)."""

    served: str | None
    http: int | None = None


@dataclass(frozen=True)
class ShadowScored(Contract):
    """The previous champion's forecasts in the shadow; ``error`` when it could not forecast."""

    model_version: str
    recorded: list[str] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class Scored(Contract):
    """``score_watchlist``: the tickers whose forecast was logged now, before, or not at all (and why)."""

    model_version: str | None
    recorded: list[str]
    already_recorded: list[str]
    skipped: dict[str, str]
    previous: ShadowScored | None = None
    online_calibration: dict[str, Any] | None = None  # the champion's state used (its lineage, market scope)


@dataclass(frozen=True)
class RollbackProposal(Contract):
    """Whether the monitor asks an operator to roll the champion back (``propose``), and why."""

    propose: bool
    reason: str
    from_version: str | None = None
    to_version: str | None = None


@dataclass(frozen=True)
class ForecastRecord(Contract):
    """One forecast in the forecast log: what ``model_version`` said on ``as_of``'s close for ``forecast_for``.

    ``point`` and ``quantiles`` are log returns, ``forecast`` the close they imply; ``role`` (``champion``,
    ``shadow``, ``baseline``) and ``dag_run_id`` are left out of the line where not set. ``calibration``: the
    lineage of the online calibration state the forecast was corrected with
    (:meth:`~stockops.model.portable.online_calibration.OnlineState.lineage`), left out where none was.
    """

    ticker: str
    as_of: str
    forecast_for: str
    model_version: str
    snapshot_hash: str
    last_close: float
    point: float
    forecast: float
    quantiles: dict[str, float]
    variance: float
    made_at: str
    role: str | None = None
    dag_run_id: str | None = None
    calibration: dict[str, Any] | None = None

    def to_record(self) -> dict[str, Any]:
        """The fields the log line holds (``audit.record`` adds ``at`` and ``event``)."""
        return _present(self, ("role", "dag_run_id", "calibration"))


@dataclass(frozen=True)
class MonitorDecision(Contract):
    """The monitor's check as later tasks need it; the full decision is in the decision log and ``decision_path``.

    ``triggered``: start a retrain now; ``rollback.propose``: ask an operator about a rollback.
    """

    checked_at: str
    triggered: bool
    reason: str
    crossed: list[str]
    rollback: RollbackProposal
    champion_version: str | None = None
    drift_share: float | None = None
    live_rmse_ratio: float | None = None
    persistence_ratio: float | None = None
    report: str | None = None
    decision_path: str | None = None


# What a check on a champion and a snapshot adds: a record without a champion or a snapshot has none of them.
_CHECKED = ("champion_version", "champion_run_id", "live_error_source", "traffic_requests", "snapshot_hash",
            "current_window", "reference_window", "reference_rows", "drift", "live_error", "thresholds")


@dataclass(frozen=True)
class MonitorRecord(Contract):
    """One monitor check, whole: ``decision.json`` in its report folder, and its line in the decision log (less
    ``drift``, which stays in the report).

    ``drift``, ``live_error``, ``scorecard``, ``thresholds`` and ``rollback`` are the free-form dicts their modules
    compute (:mod:`stockops.monitoring.drift`, ``live_error``, ``scorecard``, ``decision``). A check with nothing
    to monitor (no champion, no snapshot) has no ``champion_version`` and none of the fields after it but
    ``mlflow_run_id``; ``decision_path`` and ``report`` come with the report folder, ``scorecard_path`` with a
    scorecard, ``mlflow_run_id`` once the check is logged to MLflow.
    """

    checked_at: str
    ticker: str
    dag_run_id: str
    dry_run: bool
    drift_share: float | None
    drifted_columns: list[str]
    live_rmse_ratio: float | None
    persistence_ratio: float | None
    triggered: bool
    reason: str
    crossed: list[str]
    debounced_by: list[str]
    scorecard: dict[str, Any] | None
    rollback: dict[str, Any]
    champion_version: str | None = None
    champion_run_id: str | None = None
    live_error_source: str | None = None
    traffic_requests: int | None = None
    snapshot_hash: str | None = None
    current_window: list[str] | None = None
    reference_window: list[str] | None = None
    reference_rows: int | None = None
    drift: dict[str, Any] | None = None
    live_error: dict[str, Any] | None = None
    thresholds: dict[str, Any] | None = None
    decision_path: str | None = None
    report: str | None = None
    scorecard_path: str | None = None
    mlflow_run_id: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The decision as ``decision.json`` (and, less ``drift``, the decision log) holds it."""
        absent = [name for name in ("scorecard_path", "mlflow_run_id") if getattr(self, name) is None]
        if self.decision_path is None:
            absent += ["decision_path", "report"]
        if self.champion_version is None:
            absent += _CHECKED
        return _present(self, absent)

    def decision(self) -> MonitorDecision:
        """What later tasks need of the check (``should_retrain``, ``should_propose_rollback``)."""
        rollback = self.rollback
        return MonitorDecision(
            checked_at=self.checked_at, triggered=self.triggered, reason=self.reason, crossed=list(self.crossed),
            rollback=RollbackProposal(propose=rollback["propose"], reason=rollback["reason"],
                                      from_version=rollback.get("from_version"),
                                      to_version=rollback.get("to_version")),
            champion_version=self.champion_version, drift_share=self.drift_share,
            live_rmse_ratio=self.live_rmse_ratio, persistence_ratio=self.persistence_ratio, report=self.report,
            decision_path=self.decision_path)


def _present(record: Contract, absent: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``record``'s fields by name, in their declared order, less those it lacks where they are None."""
    return {f.name: getattr(record, f.name) for f in fields(record)
            if not (f.name in absent and getattr(record, f.name) is None)}
