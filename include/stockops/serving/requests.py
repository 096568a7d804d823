"""Request bodies for the endpoint: daily OHLCV rows (and the market reference) as ``/predict`` wants them."""

from __future__ import annotations

from stockops.core.settings import Settings


def request_body(frame, market=None, as_of=None, rows: int | None = None) -> dict:
    """The ``/predict`` body for daily OHLCV rows (oldest first): its last ``rows`` rows (all if None).

    ``market``: the market reference's closes, either a frame with ``Date`` and ``Close`` (a
    snapshot: aligned on ``frame``'s dates by :func:`~stockops.model.portable.risk_inputs.align_market`, as
    training and ``/forecast`` align it) or a sequence with one close per row of ``frame``. ``as_of``: the trading day of the last row
    (a date or ISO string; ``True`` takes it from ``frame``'s ``Date``).
    """
    import numpy as np
    import pandas as pd

    from stockops.model.portable.risk_inputs import align_market

    frame = frame.reset_index(drop=True)
    if market is not None and not isinstance(market, pd.DataFrame):
        market = np.asarray(market, dtype=np.float64)
        if len(market) != len(frame):
            raise ValueError(f"market has {len(market)} closes for {len(frame)} OHLCV rows")
    if rows is not None:
        frame = frame.iloc[-rows:]
        market = market if market is None or isinstance(market, pd.DataFrame) else market[-rows:]
    body: dict = {key: frame[column].to_numpy(dtype=np.float64).tolist()
                  for key, column in (("open", "Open"), ("high", "High"), ("low", "Low"), ("closes", "Close"))}
    body["volume"] = [int(v) if v.is_integer() else v for v in frame["Volume"].to_numpy(dtype=np.float64).tolist()]
    if isinstance(market, pd.DataFrame):  # a snapshot: its closes on the frame's days
        market = align_market(frame["Date"], market)
    if market is not None and np.all(np.isfinite(market)):
        body["market"] = market.tolist()
    if as_of is True:
        as_of = pd.Timestamp(frame["Date"].iloc[-1]).date()
    if as_of:
        body["as_of"] = as_of if isinstance(as_of, str) else as_of.isoformat()
    return body


def market_frame(settings: Settings):
    """The market reference's latest published snapshot (``settings.market``, QQQ), or None."""
    from stockops.data import store_for

    if not settings.market:
        return None
    store = store_for(settings, settings.market)
    return store.load() if store.latest() is not None else None
