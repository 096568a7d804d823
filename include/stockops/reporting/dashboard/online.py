"""The champion's online calibration as the dashboard shows it: the state file the monitor keeps and the bento
applies (the pointer ``monitoring/online_calibration``, :mod:`stockops.model.portable.online_calibration`), read directly
and kept until the file changes.

A missing file, an unreadable one, or a state of another version than the champion's is no error: the pages say
which (:attr:`OnlineView.note`), and no ticker gets a factor (its forecasts are served as the model made them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stockops.core.settings import Settings

if TYPE_CHECKING:
    from stockops.model.portable.online_calibration import OnlineState

NO_STATE = "no online calibration state yet"


@dataclass(frozen=True)
class OnlineView:
    """The state file as read: ``state`` (None when missing or unreadable), ``applied`` when it is the champion's
    (or no champion is known), and ``note``: why nothing is applied (empty when it is)."""

    state: OnlineState | None
    applied: bool
    note: str

    def lineage(self, ticker: str | None) -> dict[str, Any] | None:
        """The state's lineage for ``ticker`` as the bento reports it; None when no state applies."""
        return self.state.lineage(ticker) if self.applied and self.state is not None else None


_READ: dict[str, tuple[tuple | None, OnlineState | None, str]] = {}  # state path -> (stamp, state, why none)


def online_view(settings: Settings, champion_version: str | None) -> OnlineView:
    """The online calibration state and whether it applies to champion ``champion_version`` (None: unknown)."""
    state, problem = _read(settings)
    if state is None:
        return OnlineView(None, False, problem)
    if champion_version is not None and str(state.model_version) != str(champion_version):
        return OnlineView(state, False, f"the online calibration state is v{state.model_version}'s, not the "
                                        f"champion v{champion_version}'s: not applied")
    return OnlineView(state, True, "")


def _read(settings: Settings) -> tuple[OnlineState | None, str]:
    from stockops.core import pointers
    from stockops.registry.online_states import load_state

    path = settings.online_calibration_path
    stamp = pointers.stamp(path)
    cached = _READ.get(str(path))
    if cached and cached[0] == stamp:
        return cached[1], cached[2]
    state, problem = None, NO_STATE
    if stamp is not None:
        try:
            state, problem = load_state(path), ""
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # not a state: the page says so
            problem = f"online calibration state unreadable: {exc}"
    _READ[str(path)] = (stamp, state, problem)
    return state, problem

