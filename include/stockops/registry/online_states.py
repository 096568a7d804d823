"""Each registered version's online calibration state, and the served one following ``@champion``.

Evaluation walks a candidate's holdout day by day with the online calibration
(:mod:`stockops.model.portable.online_calibration`); registration keeps the state that walk ended with as the
version's (``<home>/evaluation/online-v<version>.json``). When a version becomes champion (a promotion, a deploy, a
rollback) its kept state becomes the served one (``settings.online_calibration_path``), which the bento applies and
the monitor continues day by day from the realised forecasts. A re-deploy of the same version keeps what the monitor
learned.

Every state is a named value of the home's records' database (:mod:`stockops.core.pointers`: the path under the
home names it), replaced whole in one transaction: a reader on any host sees the old state or the new one.
:func:`load_state`, :func:`save_state` and :func:`has_state` are how the platform reads and writes them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from stockops.core.settings import Settings

if TYPE_CHECKING:
    from stockops.model.portable.online_calibration import OnlineState

log = logging.getLogger(__name__)


def load_state(path: Path) -> OnlineState:
    """The state named by ``path``: ``FileNotFoundError`` without one, ``ValueError`` (saying which) when it is not a
    state (or out of bounds)."""
    from stockops.core import pointers
    from stockops.model.portable.online_calibration import OnlineState

    value = pointers.read(path)
    if value is None:
        raise FileNotFoundError(f"no online calibration state {path}")
    try:
        return OnlineState.from_json(value)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise ValueError(f"{path} is not an online calibration state ({type(exc).__name__}: {exc})") from exc


def save_state(state: OnlineState, path: Path) -> None:
    """Replace the state named by ``path`` with ``state``, whole."""
    from stockops.core import pointers

    pointers.write(path, state.to_json())


def has_state(path: Path) -> bool:
    from stockops.core import pointers

    return pointers.stamp(path) is not None


def kept_online_state(settings: Settings, version: str) -> Path:
    return settings.evaluation_dir / f"online-v{version}.json"


def keep_online_state(settings: Settings, source: Path, version: str) -> None:
    """The state at ``source`` (an evaluation's walk, version not yet known) kept as ``version``'s."""
    if not has_state(source):  # a features folder of an older run
        log.warning("no online calibration state at %s: v%s will start from a neutral one", source, version)
        return
    state = load_state(source)
    state.model_version = str(version)
    save_state(state, kept_online_state(settings, version))


def seed_online_state(settings: Settings, version: str) -> None:
    """Make ``version``'s kept state the served one, unless the served state is already ``version``'s. Without a
    kept state the served one is left for the monitor, which starts a neutral state for the champion."""
    served = settings.online_calibration_path
    try:
        if has_state(served) and load_state(served).model_version == str(version):
            return
    except ValueError as exc:  # not a state: replaced below, or by the monitor
        log.warning("%s: it is replaced", exc)
    kept = kept_online_state(settings, version)
    if has_state(kept):
        save_state(load_state(kept), served)
        log.info("online calibration of v%s: the state its holdout walk ended with (%s)", version, kept)
