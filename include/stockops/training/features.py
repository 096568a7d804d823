"""Steps 1-2: the latest snapshot of every watchlist ticker, then one panel of features split by date."""

from __future__ import annotations

import hashlib
import logging

from stockops.contracts import (
    Features,
    Snapshots,
    SnapshotSummary,
)
from stockops.core.settings import Settings
from stockops.training.common import model_config

log = logging.getLogger(__name__)


def load_snapshots(*, settings: Settings) -> Snapshots:
    """The latest published snapshot of every watchlist ticker that has one; fails plainly if none has.

    ``summary`` sums them up (a hash over the tickers' hashes, the newest day) for the lineage
    tags that a single-series model used to carry; ``entries`` keeps every ticker's entry.
    """
    from stockops.data import store_for

    entries = {t: e for t in settings.tickers if (e := store_for(settings, t).latest()) is not None}
    if not entries:
        raise FileNotFoundError(f"no published snapshot of any of {', '.join(settings.tickers)} under "
                                f"{settings.data_dir}: run stock_ingest first")
    missing = [t for t in settings.tickers if t not in entries]
    if missing:
        log.warning("no published snapshot yet for %s: trained without them", ", ".join(missing))
    combined = hashlib.sha256("".join(f"{t}:{e.hash}\n" for t, e in sorted(entries.items())).encode()).hexdigest()
    latest = max(entries.values(), key=lambda e: e.last_date)
    summary = SnapshotSummary(hash=combined, tickers=list(entries), rows=sum(e.rows for e in entries.values()),
                              first_date=min(e.first_date for e in entries.values()), last_date=latest.last_date,
                              logical_date=latest.logical_date, path=str(settings.data_dir),
                              validation_path=str(settings.data_docs_dir / "index.html"))
    for ticker, e in entries.items():
        log.info("%s: snapshot %s, %d rows %s..%s", ticker, e.hash[:12], e.rows, e.first_date, e.last_date)
    return Snapshots(summary=summary, entries=entries)


def prepare_features(snapshots: Snapshots, window: int | None = None, *, settings: Settings) -> Features:
    """The tickers' OHLCV in one long table and the date split, saved for the training step."""
    import pandas as pd

    from stockops.data import store_for
    from stockops.model.drift_features import reference_features
    from stockops.model.risk_model import build_panel, fraction_split

    frames = {t: store_for(settings, t).load(e) for t, e in snapshots.entries.items()}
    config = model_config(settings, window=window)
    panel = build_panel(frames, market=settings.market)
    split = fraction_split(panel)
    folder = settings.training_dir / f"{snapshots.summary.hash[:12]}-w{config.window}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "panel.parquet"
    pd.concat([f.assign(ticker=t) for t, f in frames.items()], ignore_index=True).to_parquet(path)
    parts = split.parts(panel, config.window)
    sizes = {k: len(v) for k, v in parts.items()}
    # The monitor's drift reference: every ticker's features over the days training saw.
    references = [reference_features(frame, int((frame["Date"] < pd.Timestamp(split.val_start)).sum()) - 1)
                  .assign(ticker=ticker) for ticker, frame in frames.items()]
    pd.concat(references, ignore_index=True).to_parquet(folder / "reference_features.parquet")
    log.info("features: %d tickers, window %d, samples %s; validation from %s, test from %s -> %s", len(frames),
             config.window, sizes, split.val_start, split.test_start, path)
    return Features(snapshots=snapshots, path=str(path), window=config.window, sizes=sizes,
                    val_start=str(split.val_start), test_start=str(split.test_start))


def load_frames(features: Features):
    """Frames per ticker and the split that ``prepare_features`` saved."""
    import numpy as np
    import pandas as pd

    from stockops.model.risk_model import DateSplit

    table = pd.read_parquet(features.path)
    frames = {t: g.drop(columns="ticker").reset_index(drop=True) for t, g in table.groupby("ticker", sort=False)}
    return frames, DateSplit(val_start=np.datetime64(features.val_start), test_start=np.datetime64(features.test_start))


def load_panel(settings: Settings, features: Features):
    """Frames per ticker, the panel (with ``settings.market``'s closes) and the split that ``prepare_features``
    saved."""
    from stockops.model.risk_model import build_panel

    frames, split = load_frames(features)
    return frames, build_panel(frames, market=settings.market), split
