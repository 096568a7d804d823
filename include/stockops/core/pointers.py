"""Named JSON values replaced whole (a ticker's ingest status, the online calibration state): what the platform
reads as "the current one".

Each is named by its place under the home, as it was when these were files (``<home>/data/GOOG/status.json`` is the
pointer ``data/GOOG/status`` of the home's records' database, :mod:`stockops.storage.homes`): a write is one
transaction, a reader on any host sees the old value or the new one. A path under no home stays a JSON file, replaced
atomically; one that cannot be read raises :class:`~stockops.core.audit.CorruptState`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stockops.core.audit import CorruptState
from stockops.core.audit import in_database as _in_database


def read(path: Path, way_out: str = "") -> Any | None:
    """The value at ``path``, None when there is none."""
    located = _in_database(path)
    if located is not None:
        pointer = located[0].get(located[1])
        return None if pointer is None else pointer.value
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise CorruptState(Path(path), f"not JSON: {exc}", way_out or "delete it: it is written again") from exc


def write(path: Path, value: Any) -> None:
    located = _in_database(path)
    if located is not None:
        located[0].put(located[1], value)
        return
    from stockops.storage.files import atomic_write_json

    atomic_write_json(Path(path), value)


def write_unless(path: Path, value: Any, keep: Callable[[Any], bool]) -> bool:
    """Write ``value`` unless ``keep(current value)`` says the current one stays (checked and written in one
    transaction in a database); returns whether it was written. An unreadable file counts as none."""
    located = _in_database(path)
    if located is not None:
        with located[0].transaction() as tx:
            current = tx.get(located[1])
            if current is not None and keep(current.value):
                return False
            tx.put(located[1], value, expect_version=current.version if current else 0)
            return True
    try:
        current = read(path)
    except CorruptState:
        current = None
    if current is not None and keep(current):
        return False
    write(path, value)
    return True


def stamp(path: Path) -> tuple | None:
    """What changes when the value at ``path`` is replaced (caches key on it); None without one."""
    located = _in_database(path)
    if located is not None:
        pointer = located[0].get(located[1])
        return None if pointer is None else (pointer.version, pointer.updated_at)
    from stockops.core.audit import stamp as file_stamp

    return file_stamp(path)


def stamps(paths: list[Path]) -> tuple:
    """:func:`stamp` of every one of ``paths`` (one query when they are all in one database)."""
    located = [_in_database(path) for path in paths]
    stores = {found[0].url for found in located if found is not None}
    if paths and None not in located and len(stores) == 1:
        store = located[0][0]
        found = store.get_many([place[1] for place in located])
        return tuple((found[name].version, found[name].updated_at) if name in found else None
                     for name in (place[1] for place in located))
    return tuple(stamp(path) for path in paths)
