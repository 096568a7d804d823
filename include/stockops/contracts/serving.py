"""The serving contracts: a registry version packed as a bento, deployed and verified; a rollback planned,
built, deployed and verified; and the whole training chain's outcome run in-process."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stockops.contracts.base import Contract, field_names
from stockops.contracts.training import GateDecision, Registered


@dataclass(frozen=True)
class Bento(Contract):
    """A registry version packed as a bento (``stockops.serving.build_bento``'s record)."""

    bento_tag: str
    bento_model: str
    bento_path: str
    model_name: str
    version: str
    mlflow_run_id: str
    snapshot_hash: str
    window: int
    history: int
    model_kind: str = "lstm"  # stockops.model.portable.forecaster's kinds: "lstm" or "harx_gko"


@dataclass(frozen=True)
class Built(Contract):
    """The registered candidate's bento, built after the gate said ``promote``."""

    registered: Registered
    decision: GateDecision | None  # None: built without a gate (tests, tools)
    bento: Bento

    @property
    def version(self) -> str:
        """The version built: the candidate's, or the baseline's that serves in its place."""
        return self.bento.version


@dataclass(frozen=True)
class DeployRecord(Contract):
    """What a deploy did (its line in the deploy log holds more: see ``serving/deploys.jsonl``)."""

    at: str
    kind: str
    outcome: str  # "succeeded", or "unchanged" (already carried out by an earlier request): a failed deploy raises
    version: str
    bento_tag: str
    previous_version: str | None
    seconds: float
    audit_at: str | None = None  # when the change went into the audit log (a change of champion)
    champion_before: str | None = None  # the champion it replaced, as found inside the lock
    note: str = ""

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DeployRecord:
        """From the deploy log's record (its other fields stay in the log)."""
        return cls.from_xcom({k: record[k] for k in field_names(cls) if k in record}
                             | {"version": str(record.get("version", "")),
                                "previous_version": None if record.get("previous_version") is None
                                else str(record["previous_version"])})


@dataclass(frozen=True)
class Deployed(Contract):
    built: Built
    deploy: DeployRecord

    @property
    def version(self) -> str:
        return self.built.version


@dataclass(frozen=True)
class Verified(Contract):
    """Serving, ``@champion`` and the audit log all name ``version``."""

    model_name: str
    version: str
    previous: str | None
    champion: str | None
    served: str | None
    audit: str | None
    routed: bool
    ready: bool
    hosts: dict[str, str | None] = field(default_factory=dict)  # each live serving host's version (a fleet)


@dataclass(frozen=True)
class TrainingOutcome:
    """The whole ``stock_train`` chain run in-process (``train_in_process``); not an XCom."""

    registered: Registered
    decision: GateDecision
    deployed: Deployed | None

    @property
    def promoted(self) -> bool:
        return self.decision.promote


# ---- rollback -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RollbackPlan(Contract):
    """A rollback the registry and the gate's record allow, checked before anything changes."""

    model_name: str
    from_version: str
    version: str
    reason: str
    forced: bool
    gate_decision: str  # the target's gate label as recorded on its version ("unknown" where none was)
    repair: bool  # the champion is right but another version serves: serve the champion again
    requested_at: str
    run_id: str


@dataclass(frozen=True)
class RollbackBuilt(Contract):
    plan: RollbackPlan
    bento: Bento


@dataclass(frozen=True)
class RollbackDeployed(Contract):
    built: RollbackBuilt
    deploy: DeployRecord

    @property
    def plan(self) -> RollbackPlan:
        return self.built.plan


@dataclass(frozen=True)
class RollbackVerified(Contract):
    version: str
    from_version: str  # the champion it really replaced (found inside the deploy lock)
    repair: bool
    deploy_at: str
    champion: str | None
    served: str | None
    audit: str | None
    routed: bool
    ready: bool
    outcome: str = "succeeded"  # "unchanged": an earlier request had carried it out
    hosts: dict[str, str | None] = field(default_factory=dict)  # each live serving host's version (a fleet)
