"""The typed values that steps pass to each other (Airflow XComs), and their one adapter to Airflow.

Every step of ``stock_ingest``, ``stock_train``, ``stock_monitor`` and ``stock_rollback`` takes and
returns one of the frozen dataclasses below; a later value holds the earlier one as a field
(``Validated.fetched``, ``Trained.features``, ``Built.registered``) instead of re-spreading dicts. Each is serialised
explicitly: ``to_xcom()`` gives plain JSON, ``from_xcom()`` checks a dict field by field against
the declared types and raises :class:`ContractError` naming the field that is missing or wrong.

:func:`xcom_step` is the one adapter at the Airflow boundary: DAG files wrap each step with it
(through :func:`stockops.orchestration.wiring.step_tasks`), so the step receives contracts and returns one
while Airflow stores JSON; external yes/no values (params, conf) become bools there, once. Everything else (``train_in_process``, ``make demo``,
bench/, tests) calls the typed steps directly.

A decision travels as a value (``Validated.held_for_review``, ``GateDecision.promote``,
``MonitorDecision.triggered``, ``RollbackProposal.propose``), never as a string to be matched; a
label read back from a file becomes an enum member once, when it is parsed (``TickerStatus.status``).
This module imports nothing heavy.
"""

from __future__ import annotations

import enum
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Self, TypeVar, get_args, get_origin, get_type_hints

__all__ = [
    "BASELINE", "FORCED", "PROMOTED", "REFUSED", "Baseline", "Bento", "Built", "ChampionCompared", "Contract", "ContractError", "DeployRecord", "Deployed", "Evaluated",
    "Features", "Fetched", "GateDecision", "HeldMove", "Holdout", "IngestRequest", "IngestStatus", "MonitorDecision", "Promoted",
    "Published", "Quarantined", "Registered", "Rejected", "RollbackBuilt", "RollbackDeployed", "RollbackPlan", "RollbackProposal",
    "RollbackVerified", "Scored", "ServingHealth", "ShadowScored", "SnapshotEntry", "SnapshotSummary", "Snapshots", "TickerStatus",
    "Trained", "TrainingOutcome", "Validated", "Verified", "WatchlistOutcome", "parse_bool", "xcom_step",
]


class ContractError(ValueError):
    """A value does not fit its contract; the message names the field."""


# ---- the base: explicit serialisation from the declared field types -------------------------------------
@dataclass(frozen=True)
class Contract:
    """A frozen dataclass that crosses a task boundary as JSON."""

    def to_xcom(self) -> dict[str, Any]:
        """Plain JSON: nested contracts as dicts, every field by its name."""
        return {f.name: _dump(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_xcom(cls, data: Mapping[str, Any]) -> Self:
        """The contract from :meth:`to_xcom`'s dict; :class:`ContractError` names a missing, unknown or ill-typed field."""
        return _parse_contract(cls, data, cls.__name__)


def _dump(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Contract):
        return value.to_xcom()
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    return value


C = TypeVar("C", bound=Contract)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The declared field types of ``cls``, resolved once."""
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _parse_contract(cls: type[C], data: Any, path: str) -> C:
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ContractError(f"{path}: expected a {cls.__name__} (a dict), got {type(data).__name__} {str(data)[:80]!r}")
    hints, declared = _hints(cls), {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(declared))
    if unknown:
        raise ContractError(f"{path}: unknown field(s) {', '.join(map(repr, unknown))} for {cls.__name__}")
    values = {}
    for name, f in declared.items():
        if name in data:
            values[name] = _parse(hints[name], data[name], f"{path}.{name}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ContractError(f"{path}.{name}: missing (a {cls.__name__} needs it; got fields {sorted(data)})")
    return cls(**values)


def _parse(tp: Any, value: Any, path: str) -> Any:
    """``value`` checked against (and, for contracts, built as) the declared type ``tp``."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        errors = []
        for candidate in candidates:
            try:
                return _parse(candidate, value, path)
            except ContractError as exc:
                errors.append(str(exc))
        raise ContractError(errors[0] if len(errors) == 1 else f"{path}: fits none of {tp}: {'; '.join(errors)}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ContractError(f"{path}: expected one of {', '.join(repr(m.value) for m in tp)}, "
                                f"got {type(value).__name__} {str(value)[:80]!r}") from None
    if isinstance(tp, type) and issubclass(tp, Contract):
        return _parse_contract(tp, value, path)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ContractError(f"{path}: expected a list, got {type(value).__name__} {str(value)[:80]!r}")
        (item,) = args or (Any,)
        return [_parse(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ContractError(f"{path}: expected a dict, got {type(value).__name__} {str(value)[:80]!r}")
        _, item = args or (Any, Any)
        return {k: _parse(item, v, f"{path}[{k!r}]") for k, v in value.items()}
    if tp in (int, float) and isinstance(value, bool):  # JSON's true is no number
        raise ContractError(f"{path}: expected {tp.__name__}, got bool {value!r}")
    if tp is float and isinstance(value, int | float):
        return float(value)
    if tp is dict and isinstance(value, Mapping):
        return dict(value)
    if tp is list and isinstance(value, list | tuple):
        return list(value)
    if tp in (int, bool, str) and isinstance(value, tp):
        return value
    if tp in (float, int, bool, str, dict, list):
        raise ContractError(f"{path}: expected {tp.__name__}, got {type(value).__name__} {str(value)[:80]!r}")
    raise ContractError(f"{path}: a contract field of type {tp} cannot be parsed")  # a declaration to fix


# ---- published data ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotEntry(Contract):
    """One published snapshot, as the store's manifest records it."""

    hash: str
    ticker: str
    rows: int
    first_date: str
    last_date: str
    source: str
    logical_date: str
    path: str
    validation_path: str
    published_at: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SnapshotEntry:
        """From a manifest line (which may carry more than these fields)."""
        return cls.from_xcom({k: data[k] for k in _field_names(cls) if k in data})


# ---- ingest ---------------------------------------------------------------------------------------------
class IngestStatus(enum.StrEnum):
    """How a ticker's latest ingest outcome is named in its ``status.json`` and in the watchlist summary."""

    PUBLISHED = "published"
    HELD = "held"  # an extreme move waits for a person's decision
    REJECTED = "rejected"  # a person rejected the held move: quarantined
    QUARANTINED = "quarantined"  # failed validation
    NEVER_INGESTED = "never ingested"
    UNREADABLE = "unreadable"  # the status file itself is corrupt


@dataclass(frozen=True)
class Fetched(Contract):
    """One ticker's daily prices up to ``logical_date``, landed in its ``raw/`` as ``raw_path``."""

    ticker: str
    logical_date: str
    source: str
    reference_date: str  # the day the data should be current to: freshness is judged against it
    rows: int
    raw_path: str
    note: str = ""


@dataclass(frozen=True)
class IngestRequest(Contract):
    """One ticker to ingest for ``logical_date``; ``landed``: the watchlist's batched download already fetched it."""

    ticker: str
    logical_date: str
    landed: Fetched | None = None


@dataclass(frozen=True)
class HeldMove(Contract):
    """An extreme move only a person can judge, with its evidence (:func:`stockops.data.validation.held_moves`)."""

    day: str
    previous_close: float
    open: float
    high: float
    low: float
    close: float
    volume: float
    move_pct: float
    gap_pct: float
    range_share: float
    volume_ratio: float | None  # None: too few sessions to compare the volume with


@dataclass(frozen=True)
class Validated(Contract):
    """``fetched`` judged by the Great Expectations gate, on exactly the bytes hashed ``hash``.

    ``held_for_review``: an extreme move (``held``, one per day) waits for a person's decision, and
    nothing is published before it; otherwise the data passed on the rules alone.
    """

    fetched: Fetched
    hash: str
    validation_path: str
    data_docs_path: str
    scope: str  # which rows were judged, and why
    held_for_review: bool
    held: list[HeldMove] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.held_for_review != bool(self.held):
            raise ContractError(f"Validated.held_for_review: {self.held_for_review} with {len(self.held)} held "
                                "move(s); data is held for review exactly when a move is held")

    @property
    def ticker(self) -> str:
        return self.fetched.ticker

    @property
    def logical_date(self) -> str:
        return self.fetched.logical_date

    @property
    def held_days(self) -> list[str]:
        return [move.day for move in self.held]


@dataclass(frozen=True)
class Published(Contract):
    """``validated`` as the immutable snapshot ``entry``; ``new``: this call wrote it (a re-run finds it),
    ``latest``: the ticker's ``latest`` names it (a backfill of an older day leaves ``latest`` on newer data)."""

    validated: Validated
    entry: SnapshotEntry
    new: bool
    latest: bool

    @property
    def ticker(self) -> str:
        return self.validated.ticker

    @property
    def logical_date(self) -> str:
        return self.validated.logical_date


@dataclass(frozen=True)
class Rejected(Contract):
    """Held data a person rejected: quarantined in ``folder``, nothing published."""

    validated: Validated
    folder: str
    reason: str

    @property
    def ticker(self) -> str:
        return self.validated.ticker

    @property
    def logical_date(self) -> str:
        return self.validated.logical_date


@dataclass(frozen=True)
class Quarantined(Contract):
    """Data that failed validation (quarantined, nothing published); ``reason``: the failure's first line."""

    ticker: str
    logical_date: str
    reason: str


@dataclass(frozen=True)
class WatchlistOutcome(Contract):
    """``ingest_watchlist``: each chosen ticker's outcome for ``logical_date`` (none on a day NYSE is closed)."""

    logical_date: str
    published: list[Published] = field(default_factory=list)
    held_for_review: list[Validated] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def statuses(self) -> dict[str, IngestStatus]:
        """Ticker -> how its outcome is named."""
        return ({o.ticker: IngestStatus.PUBLISHED for o in self.published}
                | {o.ticker: IngestStatus.HELD for o in self.held_for_review}
                | {o.ticker: IngestStatus.QUARANTINED for o in self.quarantined})


@dataclass(frozen=True)
class TickerStatus(Contract):
    """A ticker's latest ingest outcome: its ``status.json`` (parsed once, when read) and a row of the watchlist
    summary. ``detail`` sums the outcome up in a line; ``hash`` names what was published, ``folder`` the
    quarantine, ``days`` the held days."""

    ticker: str
    logical_date: str
    status: IngestStatus
    detail: str = ""
    at: str = ""
    hash: str | None = None
    folder: str | None = None
    days: list[str] = field(default_factory=list)


# ---- training -------------------------------------------------------------------------------------------
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


# ---- serving --------------------------------------------------------------------------------------------
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
        return cls.from_xcom({k: record[k] for k in _field_names(cls) if k in record}
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


@dataclass(frozen=True)
class TrainingOutcome:
    """The whole ``stock_train`` chain run in-process (``train_in_process``); not an XCom."""

    registered: Registered
    decision: GateDecision
    deployed: Deployed | None

    @property
    def promoted(self) -> bool:
        return self.decision.promote


# ---- monitoring -----------------------------------------------------------------------------------------
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
        return cls.from_xcom({k: decision[k] for k in _field_names(cls) if k in decision}
                             | {"rollback": {k: rollback[k] for k in _field_names(RollbackProposal) if k in rollback}})


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


# ---- the Airflow boundary -------------------------------------------------------------------------------
def _field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def parse_bool(value: Any, name: str = "value") -> bool:
    """An external yes/no (an Airflow param, a conf value, an environment variable) as a bool, once, at the boundary."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ContractError(f"{name}: expected true or false, got {value!r}")


F = TypeVar("F", bound=Callable[..., Any])


def _argument(tp: Any, value: Any, name: str) -> Any:
    """A task argument as the step declares it: contracts parsed from XCom dicts, ``bool``/``int`` from rendered text."""
    optional = get_origin(tp) in (typing.Union, types.UnionType) and type(None) in get_args(tp)
    if value is None and optional:
        return None
    inner = [a for a in get_args(tp) if a is not type(None)] if optional else [tp]
    kind = inner[0] if len(inner) == 1 else None
    if isinstance(kind, type) and issubclass(kind, Contract):
        return kind.from_xcom(value)
    if get_origin(kind) is list and get_args(kind) and isinstance(get_args(kind)[0], type) \
            and issubclass(get_args(kind)[0], Contract):
        return [get_args(kind)[0].from_xcom(v) for v in value]
    if kind is bool:
        return parse_bool(value, name)
    if kind is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ContractError(f"{name}: expected an integer, got {value!r}") from None
    return value


def xcom_step(step: F) -> Callable[..., Any]:
    """``step`` as an Airflow task callable: contract arguments parsed from their XCom dicts, a contract result
    (or a list of them) returned as JSON.

    The signature Airflow inspects (parameter names, defaults) is the step's own; the annotations it sees
    are not, so Airflow never infers ``multiple_outputs`` from a dict-like return.
    """
    hints = get_type_hints(step)
    signature = inspect.signature(step)

    @functools.wraps(step)
    def task_callable(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            if name in hints:
                bound.arguments[name] = _argument(hints[name], value, f"{step.__name__}({name})")
        result = step(*bound.args, **bound.kwargs)
        if isinstance(result, list):
            return [r.to_xcom() if isinstance(r, Contract) else r for r in result]
        return result.to_xcom() if isinstance(result, Contract) else result

    task_callable.__annotations__ = {}  # a fresh dict: functools.wraps shares the step's own
    return task_callable
