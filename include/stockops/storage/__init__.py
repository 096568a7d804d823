"""Where the platform's state lives: records and pointers in a database (:mod:`stockops.storage.records`), blobs in
an object store (:mod:`stockops.storage.blobs`). Embedded (``make run``): SQLite and a local folder under the home;
distributed: PostgreSQL and an S3 bucket, chosen by ``STOCKOPS_STATE_DB`` and ``STOCKOPS_BLOB_URL``.

Importing this package is cheap (the settings import :mod:`stockops.storage.homes`, and DAG files the settings):
SQLAlchemy and fsspec load when a store is first used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stockops.storage.blobs import BlobStore
    from stockops.storage.records import LockTimeout, Pointer, StateStore, VersionConflict

__all__ = ["BlobStore", "LockTimeout", "Pointer", "StateStore", "VersionConflict", "blob_store", "state_store"]
_LAZY = {"BlobStore": "blobs", "LockTimeout": "records", "Pointer": "records", "StateStore": "records",
         "VersionConflict": "records"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"stockops.storage.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def state_store(settings: Any) -> StateStore:
    """The records' database of ``settings`` (a :class:`~stockops.core.settings.Settings`; ``STOCKOPS_STATE_DB``; embedded: SQLite in the home)."""
    from stockops.storage.records import StateStore

    return StateStore(settings.state_url)


def blob_store(settings: Any) -> BlobStore:
    """The blob store of ``settings`` (``STOCKOPS_BLOB_URL``; embedded: the home itself)."""
    from stockops.storage.blobs import BlobStore

    key = (os.getpid(), settings.blobs_url, settings.blob_cache_dir)
    if key not in _BLOB_STORES:  # one S3 client per process, not one per call
        _BLOB_STORES[key] = BlobStore(settings.blobs_url, cache_dir=settings.blob_cache_dir)
    return _BLOB_STORES[key]


_BLOB_STORES: dict[tuple[int, str, Path], Any] = {}
