"""The training contracts: the snapshots trained on, the features, the candidate trained, evaluated and
registered, and the promotion gate's decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stockops.contracts.base import Contract
from stockops.contracts.ingest import SnapshotEntry


@dataclass(frozen=True)
class SnapshotSummary(Contract):
    """Every ticker's latest snapshot summed up: a hash over their hashes, the newest day (lineage tags)."""

    hash: str
    tickers: list[str]
    rows: int
    first_date: str
    last_date: str
    logical_date: str
    path: str
    validation_path: str


@dataclass(frozen=True)
class Snapshots(Contract):
    """What a training run trains on: the summary and every ticker's snapshot."""

    summary: SnapshotSummary
    entries: dict[str, SnapshotEntry]


@dataclass(frozen=True)
class Features(Contract):
    """The tickers' prices in one saved table, the window and the date split."""

    snapshots: Snapshots
    path: str
    window: int
    sizes: dict[str, int]  # samples per part: train, val, test
    val_start: str
    test_start: str

    @property
    def summary(self) -> SnapshotSummary:
        return self.snapshots.summary


@dataclass(frozen=True)
class Trained(Contract):
    """A candidate trained in its MLflow run (later steps resume the run by id)."""

    features: Features
    run_id: str
    model_uri: str
    model_path: str
    history_path: str
    train_seconds: float
    config: dict[str, Any]
    reason: str

    @property
    def snapshot(self) -> SnapshotSummary:
        return self.features.summary


@dataclass(frozen=True)
class ChampionCompared(Contract):
    """The champion re-scored on the candidate's holdout."""

    version: str
    run_id: str
    trained_through: str


@dataclass(frozen=True)
class Holdout(Contract):
    days: int
    pairs: int
    first: str
    last: str


@dataclass(frozen=True)
class Evaluated(Contract):
    """Candidate, champion and baselines scored on the same (ticker, day) pairs. An undefined score is None."""

    trained: Trained
    scores: dict[str, dict[str, float | None]]
    champion: ChampionCompared | None
    holdout: Holdout

    @property
    def run_id(self) -> str:
        return self.trained.run_id

    @property
    def snapshot(self) -> SnapshotSummary:
        return self.trained.snapshot


@dataclass(frozen=True)
class Registered(Contract):
    """The candidate registered as ``version`` of ``model_name`` (alias ``challenger``)."""

    evaluated: Evaluated
    model_name: str
    version: str

    @property
    def run_id(self) -> str:
        return self.evaluated.run_id

    @property
    def snapshot(self) -> SnapshotSummary:
        return self.evaluated.snapshot

    @property
    def scores(self) -> dict[str, dict[str, float | None]]:
        return self.evaluated.scores


PROMOTED, FORCED, REFUSED = "promoted", "forced", "refused"  # the gate's labels in records (tags, audit log)
BASELINE = "baseline"  # the label of a classical baseline registered to serve while no LSTM passes the gate


@dataclass(frozen=True)
class Baseline(Contract):
    """The strongest classical baseline, registered as ``version`` to become the champion because the candidate
    was refused and the platform has no better model (``stockops.training.register_baseline``)."""

    version: str
    run_id: str
    model_kind: str  # stockops.model.portable.forecaster.HARX_GKO
    reason: str  # why it serves: no champion yet, or the baseline champion's refresh


@dataclass(frozen=True)
class GateDecision(Contract):
    """The promotion gate's verdict on the candidate (:func:`stockops.model.gate.decide`): ``promote`` it or not; and,
    when it is refused while the platform has no champion worth keeping, the ``baseline`` that serves instead."""

    promote: bool
    forced: bool
    reason: str
    baseline: Baseline | None = None

    @property
    def label(self) -> str:
        """How records name the candidate's verdict (its version's ``gate_decision`` tag, the audit log)."""
        return FORCED if self.forced else (PROMOTED if self.promote else REFUSED)

    @property
    def deploys(self) -> bool:
        """Whether build and deploy go on: the candidate was promoted, or a baseline serves in its place."""
        return self.promote or self.baseline is not None

    def version_to_serve(self, candidate_version: str) -> str:
        """The registry version the deploy path serves."""
        return self.baseline.version if self.baseline is not None else candidate_version


@dataclass(frozen=True)
class Promoted(Contract):
    """``champion`` moved to ``version`` without serving (``promote_candidate``)."""

    model_name: str
    version: str
    previous: str | None
