"""Each registered version's online calibration state, and the served one following ``@champion``.

Evaluation walks a candidate's holdout day by day with the online calibration
(:mod:`stockops.model.portable.online_calibration`); registration keeps the state that walk ended with as the
version's (``<home>/evaluation/online-v<version>.json``). When a version becomes champion (a promotion, a deploy, a
rollback) its kept state becomes the served one (``settings.online_calibration_path``), which the bento applies and
the monitor continues day by day from the realised forecasts. A re-deploy of the same version keeps what the monitor
learned.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stockops.core.settings import Settings

log = logging.getLogger(__name__)


def kept_online_state(settings: Settings, version: str) -> Path:
    return settings.evaluation_dir / f"online-v{version}.json"


def keep_online_state(settings: Settings, source: Path, version: str) -> None:
    """The state at ``source`` (an evaluation's walk, version not yet known) kept as ``version``'s."""
    from stockops.model.portable.online_calibration import OnlineState

    if not source.exists():  # a features folder of an older run
        log.warning("no online calibration state at %s: v%s will start from a neutral one", source, version)
        return
    state = OnlineState.load(source)
    state.model_version = str(version)
    state.save(kept_online_state(settings, version))


def seed_online_state(settings: Settings, version: str) -> None:
    """Make ``version``'s kept state the served one, unless the served state is already ``version``'s. Without a
    kept state the served one is left for the monitor, which starts a neutral state for the champion."""
    from stockops.model.portable.online_calibration import OnlineState

    served = settings.online_calibration_path
    try:
        if served.exists() and OnlineState.load(served).model_version == str(version):
            return
    except ValueError as exc:  # torn: replaced below, or by the monitor
        log.warning("%s: it is replaced", exc)
    kept = kept_online_state(settings, version)
    if kept.exists():
        OnlineState.load(kept).save(served)
        log.info("online calibration of v%s: the state its holdout walk ended with (%s)", version, kept)
