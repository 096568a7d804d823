"""The monitoring contracts: what the endpoint serves, the forecasts scored, and the monitor's decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stockops.contracts.base import Contract, field_names


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


@dataclass(frozen=True)
class RollbackProposal(Contract):
    """Whether the monitor asks an operator to roll the champion back (``propose``), and why."""

    propose: bool
    reason: str
    from_version: str | None = None
    to_version: str | None = None


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

    @classmethod
    def from_record(cls, decision: Mapping[str, Any]) -> MonitorDecision:
        """From the decision as :func:`stockops.monitoring.run_monitor` records it."""
        rollback = decision.get("rollback") or {}
        return cls.from_xcom({k: decision[k] for k in field_names(cls) if k in decision}
                             | {"rollback": {k: rollback[k] for k in field_names(RollbackProposal) if k in rollback}})
