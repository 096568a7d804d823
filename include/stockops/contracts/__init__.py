"""The typed values that steps pass to each other (Airflow XComs).

Every step of ``stock_ingest``, ``stock_train``, ``stock_monitor`` and ``stock_rollback`` takes and
returns one of the frozen dataclasses below; a later value holds the earlier one as a field
(``Validated.fetched``, ``Trained.features``, ``Built.registered``) instead of re-spreading dicts. Each is serialised
explicitly, by pydantic from the declared field types (:mod:`stockops.contracts.base`): ``to_xcom()`` gives plain
JSON, ``from_xcom()`` validates a dict strictly and raises :class:`ContractError` naming each field that is missing,
unknown or wrong by its path.

One module a stage: :mod:`~stockops.contracts.ingest`, :mod:`~stockops.contracts.training`,
:mod:`~stockops.contracts.serving` (rollbacks included), :mod:`~stockops.contracts.monitoring`; import them
from here. The one adapter at the Airflow boundary, :func:`stockops.orchestration.xcom.xcom_step`, lives with
the rest of the Airflow code: DAG files wrap each step with it (through
:func:`stockops.orchestration.wiring.step_tasks`), so the step receives contracts and returns one while Airflow
stores JSON. Everything else (``train_in_process``, ``make demo``, bench/, tests) calls the typed steps directly.

A decision travels as a value (``Validated.held_for_review``, ``GateDecision.promote``,
``MonitorDecision.triggered``, ``RollbackProposal.propose``), never as a string to be matched; a
label read back from a file becomes an enum member once, when it is parsed (``TickerStatus.status``).
This package imports nothing heavy, and pydantic only when a contract is first parsed or serialised.
"""

from __future__ import annotations

from stockops.contracts.base import Contract, ContractError
from stockops.contracts.ingest import (
    Fetched,
    HeldMove,
    IngestChunk,
    IngestRequest,
    IngestStatus,
    Published,
    Quarantined,
    Rejected,
    SnapshotEntry,
    TickerStatus,
    Validated,
    WatchlistOutcome,
)
from stockops.contracts.monitoring import (
    ForecastRecord,
    MonitorDecision,
    MonitorRecord,
    RollbackProposal,
    Scored,
    ServingHealth,
    ShadowScored,
)
from stockops.contracts.serving import (
    Bento,
    Built,
    Deployed,
    DeployRecord,
    RollbackBuilt,
    RollbackDeployed,
    RollbackPlan,
    RollbackVerified,
    TrainingOutcome,
    Verified,
)
from stockops.contracts.training import (
    BASELINE,
    FORCED,
    PROMOTED,
    REFUSED,
    Baseline,
    ChampionCompared,
    Evaluated,
    Features,
    GateDecision,
    Holdout,
    Promoted,
    Registered,
    Snapshots,
    SnapshotSummary,
    Trained,
)

__all__ = [
    "BASELINE", "FORCED", "PROMOTED", "REFUSED", "Baseline", "Bento", "Built", "ChampionCompared", "Contract", "ContractError", "DeployRecord", "Deployed", "Evaluated",
    "Features", "Fetched", "ForecastRecord", "GateDecision", "HeldMove", "Holdout", "IngestChunk", "IngestRequest", "IngestStatus", "MonitorDecision", "MonitorRecord", "Promoted",
    "Published", "Quarantined", "Registered", "Rejected", "RollbackBuilt", "RollbackDeployed", "RollbackPlan", "RollbackProposal",
    "RollbackVerified", "Scored", "ServingHealth", "ShadowScored", "SnapshotEntry", "SnapshotSummary", "Snapshots", "TickerStatus",
    "Trained", "TrainingOutcome", "Validated", "Verified", "WatchlistOutcome",
]
