"""Where a monitor check's files (``decision.json``, ``scorecard.json``, the Evidently HTML) can be read from any
host: written in the checking host's home (``monitoring/<T>/<time>-<day>/``), and, when the blob store is remote, put
there under the same name (the path from ``monitoring/`` on), so the dashboard on the control host reads the
report a worker host wrote. Embedded the blob store is the home: the files are already where it looks."""

from __future__ import annotations

import logging
from pathlib import Path

from stockops.core.settings import Settings

log = logging.getLogger(__name__)


def report_key(path: Path | str) -> str | None:
    """The blob key of a monitor file named by its path in some host's home: from ``monitoring/`` on."""
    text = Path(path).as_posix()
    marker = "/monitoring/"
    return "monitoring/" + text.split(marker, 1)[1] if marker in text else None


def share_report_files(settings: Settings, paths: list[Path]) -> None:
    """Put the check's files into a remote blob store (nothing to do when it is the home)."""
    from stockops.storage import blob_store

    blobs = blob_store(settings)
    if blobs.is_local:
        return
    for path in paths:
        key = report_key(path)
        if key is not None and path.is_file():
            blobs.put(key, path.read_bytes())


def read_report_file(settings: Settings, path: Path | str) -> bytes | None:
    """A monitor file's bytes: from this host's home when it is there (a file that resolves outside the home, a
    link out of it, is never read), else from a remote blob store; None when neither has it, or the path is not a
    monitor file."""
    from stockops.storage import blob_store

    local = Path(path)
    try:
        resolved = local.resolve(strict=True)
        if resolved.is_file() and resolved.is_relative_to(settings.home.resolve()):
            return resolved.read_bytes()
    except (OSError, RuntimeError):
        pass
    key, blobs = report_key(path), blob_store(settings)
    if key is None or blobs.is_local:  # a local blob store is the home, checked above (links out of it refused)
        return None
    try:
        return blobs.get(key)
    except (OSError, ValueError):
        return None
