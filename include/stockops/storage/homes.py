"""Which records' database keeps the logs of which home.

Every log of the platform is named by its place under the home (``<home>/audit/audit.jsonl`` is the log
``audit/audit`` of the home's records' database): the code that writes and reads a log passes its path, as it did
when logs were files. Every :class:`~stockops.core.settings.Settings` registers its home and database here when it
is made, so :func:`locate` finds the database of any path under a home the process knows. A path under no known home
stays a file (``stockops.core.audit``'s JSON-lines code): logs of tools outside the platform.

Imported by the settings: the standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

_HOMES: dict[str, str] = {}  # absolute home -> its records' database URL


def register(home: Path, state_url: str) -> None:
    _HOMES[os.path.abspath(home)] = state_url


def locate(path: Path | str) -> tuple[str, str] | None:
    """``(database URL, name)`` of the log or pointer at ``path`` (its path under the home, without ``.jsonl`` or
    ``.json``), or None when it is under no registered home."""
    absolute = os.path.abspath(path)
    found = max((home for home in _HOMES if absolute.startswith(home + os.sep)), key=len, default=None)
    if found is None:
        return None
    name = absolute[len(found) + 1:].replace(os.sep, "/")
    for suffix in (".jsonl", ".json"):  # a log's file name, a pointer's
        name = name.removesuffix(suffix)
    return _HOMES[found], name
