"""What a deploy is asked to do: a :class:`Change` of what serves, the :class:`Deployer` that carries it out
(:class:`~stockops.serving.deploy.LocalDeployer` here, :class:`~stockops.serving.agent.AgentDeployer` in compose),
and :class:`DeployError` when it could not be done (what served before still serves).

A rollback names the champion it was planned against (``Change.expect_champion``); the deployer
checks it again inside the deploy lock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from stockops.serving.runtime import ServingError

if TYPE_CHECKING:
    from stockops.contracts import DeployRecord

CHAMPION_CHANGES = ("promotion", "rollback")


class DeployError(ServingError):
    """A bento failed its checks, or the champion could not move; what served before still serves."""


@dataclass(frozen=True)
class Change:
    """A request to serve ``version`` (its bento ``bento_tag``).

    ``kind``: ``promotion`` and ``rollback`` move ``@champion`` and write the audit log inside the
    critical section; ``serve``, ``heal``, ``reconcile`` and ``follow`` (a serving host switching to the
    version another host's deploy of the same request made champion) serve the version that already is the
    champion. ``audit_fields`` go into the audit entry (the gate decision, forced, requested_at …).
    """

    kind: str
    version: str
    bento_tag: str
    reason: str
    window: int | None = None
    snapshot_hash: str = ""
    dag_run_id: str = ""
    request_id: str = ""
    audit_fields: dict[str, Any] = field(default_factory=dict)
    expect_champion: str = ""  # the champion the change was planned against (rollbacks): re-checked in the lock

    @property
    def moves_champion(self) -> bool:
        return self.kind in CHAMPION_CHANGES

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Change:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Deployer(Protocol):
    def apply(self, change: Change) -> DeployRecord:
        """Carry out ``change``; its deploy record, or :class:`DeployError` with nothing changed."""
        ...
