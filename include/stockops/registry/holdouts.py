"""Each registered version's holdout forecasts, kept as the blob ``evaluation/v<version>.parquet`` (the blob store:
the home's own folder embedded, the object store distributed): what the dashboard shows of a champion before its own
live forecasts are realised. Written once, at registration, by whichever host trains; read by any."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from stockops.core.settings import Settings

log = logging.getLogger(__name__)


def holdout_key(version: str) -> str:
    return f"evaluation/v{version}.parquet"


def keep_holdout_file(settings: Settings, source: Path, version: str) -> None:
    """The holdout forecasts at ``source`` (the training run's scratch) kept as ``version``'s, checked."""
    from stockops.storage import blob_store

    if not source.exists():  # a features folder of an older run
        log.warning("no holdout forecasts at %s: v%s has none to show", source, version)
        return
    blob_store(settings).put_verified(holdout_key(version), source.read_bytes())


def holdout_stamp(settings: Settings, version: str | None) -> Any:
    """What changes when ``version``'s kept forecasts do (None without them)."""
    from stockops.storage import blob_store

    if version is None:
        return None
    blobs = blob_store(settings)
    if blobs.is_local:
        from stockops.core.audit import stamp

        return stamp(blobs.local_path(holdout_key(version)))
    return "kept" if blobs.exists(holdout_key(version)) else None


def read_holdout(settings: Settings, version: str) -> Any:
    """``version``'s kept holdout forecasts as a DataFrame; None when it kept none or they cannot be read."""
    import io

    import pandas as pd

    from stockops.storage import blob_store

    try:
        return pd.read_parquet(io.BytesIO(blob_store(settings).get(holdout_key(version))))
    except Exception:  # noqa: BLE001 - missing or unreadable: the page says there is nothing to show
        return None
