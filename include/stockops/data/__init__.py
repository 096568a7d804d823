"""The data layer: where prices come from, how they are judged and how they are kept.

Importing this package is cheap (DAG files reach it): the snapshot store and its pyarrow load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stockops.core.settings import Settings
    from stockops.data.store import SnapshotStore


def store_for(settings: Settings, ticker: str | None = None) -> SnapshotStore:
    """The snapshot store of ``ticker`` (default: the model ticker) in ``settings``' stores."""
    from stockops.data.store import SnapshotStore
    from stockops.storage import blob_store, state_store

    ticker = ticker or settings.ticker
    return SnapshotStore(settings.ticker_data_dir(ticker), ticker, state_store(settings), blob_store(settings))
