"""A stockops home as the dashboard reads it, made for a universe of any size (the tests and ``bench/dashboard_draw.py``).

Per ticker: its series published as a snapshot, its ``status.json`` (published unless told otherwise), and in the
forecast log one champion forecast per day for its last ``days`` sessions plus one for the session after its last
(not realized yet). The forecasts are made here, not fitted: the 5-95 % interval is +-1.645 times the last 20
sessions' standard deviation of the log return (about 90 % coverage on real series), written as the platform
writes them, in one go. And one monitor check whose ``decision.json`` names the ``drifted`` tickers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from stockops.contracts import IngestStatus
from stockops.core import audit
from stockops.core.settings import Settings
from stockops.data import store_for
from stockops.ingest.status import write_status

Z = {"q01": -2.326, "q05": -1.645, "q25": -0.674, "q50": 0.0, "q75": 0.674, "q95": 1.645, "q99": 2.326}
CHECKED_AT = "2020-12-11T22:30:00+00:00"


def forecast_lines(ticker: str, frame: pd.DataFrame, days: int, version: str = "1") -> list[bytes]:
    """The forecast log's lines of ``ticker``: its last ``days`` sessions forecast, and the session after."""
    dates = pd.to_datetime(frame["Date"]).dt.strftime("%Y-%m-%d").tolist()
    closes = frame["Close"].to_numpy(np.float64)
    returns = np.diff(np.log(closes), prepend=np.nan)
    sigma = pd.Series(returns).rolling(20).std().to_numpy()
    after = (pd.Timestamp(dates[-1]) + pd.offsets.BDay(1)).strftime("%Y-%m-%d")
    lines = []
    for i in range(len(dates) - days, len(dates) + 1):
        as_of = i - 1
        s = float(sigma[as_of]) if not math.isnan(sigma[as_of]) else 0.02
        entry = {"at": f"{dates[as_of]}T22:00:00+00:00", "event": "forecast", "ticker": ticker, "as_of": dates[as_of],
                 "forecast_for": dates[i] if i < len(dates) else after, "model_version": version,
                 "snapshot_hash": "", "last_close": float(closes[as_of]), "point": 0.0,
                 "forecast": float(closes[as_of]), "quantiles": {q: z * s for q, z in Z.items()},
                 "variance": s * s, "made_at": f"{dates[as_of]}T22:00:00+00:00", "role": "champion"}
        lines.append(json.dumps(entry, sort_keys=True).encode())
    return lines


def build_home(settings: Settings, frames: dict[str, pd.DataFrame], days: int = 60, *,
               statuses: dict[str, IngestStatus] | None = None, drifted: tuple[str, ...] = (),
               forecast: tuple[str, ...] | None = None) -> None:
    """Publish ``frames``, write their statuses, forecasts (of ``forecast``: default every ticker) and one monitor
    check with ``drifted``."""
    lines = []
    for ticker, frame in frames.items():
        day = str(pd.Timestamp(frame["Date"].iloc[-1]).date())
        entry, _ = store_for(settings, ticker).publish(frame, logical_date=day, source="made")
        status = (statuses or {}).get(ticker, IngestStatus.PUBLISHED)
        detail = {IngestStatus.PUBLISHED: "", IngestStatus.QUARANTINED: "expect_column_values_to_be_between failed",
                  IngestStatus.HELD: "an extreme move waits for a person"}.get(status, "")
        write_status(settings, ticker, day, status, detail, hash=entry.hash)
        if forecast is None or ticker in forecast:
            lines += forecast_lines(ticker, frame, days)
    audit.append_many(settings.forecast_log, [json.loads(line) for line in lines])
    folder = settings.monitoring_dir / "20201211T223000-2020-12-11"
    folder.mkdir(parents=True, exist_ok=True)
    decision = {"checked_at": CHECKED_AT, "ticker": settings.ticker, "triggered": False, "reason": "made",
                "drift": {"drifted_tickers": list(drifted),
                          "per_ticker": {t: {"drifted": t in drifted, "drift_share": 0.5 if t in drifted else 0.0}
                                         for t in frames}}}
    path = Path(folder / "decision.json")
    path.write_text(json.dumps(decision))
    audit.record(settings.monitor_log, "monitor", checked_at=CHECKED_AT, ticker=settings.ticker, triggered=False,
                 reason="made", champion_version="1", decision_path=str(path), report=None)
