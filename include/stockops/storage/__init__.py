"""Where the platform's state lives: records and pointers in a database (:mod:`stockops.storage.records`), blobs in
an object store (:mod:`stockops.storage.blobs`). Embedded (``make run``): SQLite and a local folder under the home;
distributed: PostgreSQL and an S3 bucket, chosen by ``STOCKOPS_STATE_DB`` and ``STOCKOPS_BLOB_URL``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from stockops.storage.blobs import BlobStore
from stockops.storage.records import LockTimeout, Pointer, StateStore, VersionConflict

if TYPE_CHECKING:
    from stockops.core.settings import Settings

__all__ = ["BlobStore", "LockTimeout", "Pointer", "StateStore", "VersionConflict", "blob_store", "state_store"]


def state_store(settings: Settings) -> StateStore:
    """The records' database of ``settings`` (``STOCKOPS_STATE_DB``; embedded: SQLite in the home)."""
    return StateStore(settings.state_url)


def blob_store(settings: Settings) -> BlobStore:
    """The blob store of ``settings`` (``STOCKOPS_BLOB_URL``; embedded: the home itself)."""
    key = (os.getpid(), settings.blobs_url, settings.blob_cache_dir)
    if key not in _BLOB_STORES:  # one S3 client per process, not one per call
        _BLOB_STORES[key] = BlobStore(settings.blobs_url, cache_dir=settings.blob_cache_dir)
    return _BLOB_STORES[key]


_BLOB_STORES: dict[tuple[int, str, Path], BlobStore] = {}
