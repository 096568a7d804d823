"""Live error: the champion's forecasts against the closes that followed (its own, or replayed on the snapshot's days)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from stockops import registry
from stockops.monitoring.forecasts import INTERVALS, TABLE_COLUMNS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)


def replay_forecasts(model_uri: str, frame: pd.DataFrame, market: np.ndarray | None, ends: np.ndarray,
                     ticker: str | None = None) -> pd.DataFrame:
    """The model's forecasts made at each end index of ``frame`` (``ticker``'s rows: a per-ticker baseline uses its
    fit for it), for the row after it, as :func:`own_forecasts` tabulates them (end indices whose history the
    model's window does not fit are left out)."""
    import numpy as np
    import pandas as pd

    from stockops.model.portable.forecaster import LEVELS, WARMUP, feature_matrix, windows

    model = registry.load_forecaster(model_uri)
    window = model.calibration.window
    ends = ends[ends >= window - 1 + WARMUP]
    dates = pd.to_datetime(frame["Date"]).dt.strftime("%Y-%m-%d").to_numpy()
    result = model.predict_windows(windows(feature_matrix(frame, market), ends, window),
                                   None if ticker is None else np.full(len(ends), ticker, dtype=object))
    quantiles = {f"q{round(level * 100):02d}": result["quantiles"][:, i] for i, level in enumerate(LEVELS)}
    return pd.DataFrame({"as_of": dates[ends], "forecast_for": dates[ends + 1],
                         "last_close": frame["Close"].to_numpy(dtype="float64")[ends], "point": result["point"],
                         **{q: quantiles[q] for q in TABLE_COLUMNS[4:]}}, columns=list(TABLE_COLUMNS))


def live_error(frame: pd.DataFrame, days: int, own: pd.DataFrame, min_own_days: int, replay) -> dict[str, Any]:
    """The champion's forecasts for the last ``days`` trading days of ``frame`` against the closes it published.

    ``own`` (:func:`own_forecasts`) is used alone once ``min_own_days`` of its forecasts fall on
    those days; before that ``replay(ends)`` (:func:`replay_forecasts`) forecasts every day of the
    window. Persistence is scored on the same days, and the 50 % / 90 % intervals by their coverage.
    """
    import numpy as np
    import pandas as pd

    from stockops.model.evaluation import forecast_metrics
    from stockops.model.scoring import coverage

    dates = pd.to_datetime(frame["Date"]).dt.strftime("%Y-%m-%d").to_numpy()
    realized = pd.Series(frame["Close"].to_numpy(dtype="float64"), index=dates)
    ends = np.arange(max(0, len(dates) - 1 - days), len(dates) - 1)  # forecast made at t, for t + 1
    mine = own[own["forecast_for"].isin(dates[ends + 1])]
    if len(mine) >= min_own_days:
        table = mine
        source = {"source": "own", "basis": f"the platform's own forecasts of {len(mine)} days", "replayed": 0}
    else:
        table = replay(ends)
        source = {"source": "replay", "replayed": len(table),
                  "basis": f"the champion replayed on the snapshot's last {len(table)} days: only {len(mine)} of "
                           f"the platform's own forecasts are realized there, fewer than {min_own_days} "
                           "(STOCKOPS_MONITOR_MIN_FORECAST_DAYS)"}
    source["own_days"] = len(mine)
    if table.empty:
        return {**source, "days": 0}
    table = table.sort_values("forecast_for")
    actual, last = realized[table["forecast_for"]].to_numpy(), table["last_close"].to_numpy(dtype="float64")
    model = forecast_metrics(actual, last * np.exp(table["point"].to_numpy(dtype="float64")), last)
    persistence = forecast_metrics(actual, last, last)
    returns = np.log(actual / last)
    return {**source, "days": len(table), "first_day": str(table["forecast_for"].iloc[0]),
            "last_day": str(table["forecast_for"].iloc[-1]), "rmse": model["rmse"], "rmspe": model["rmspe"],
            "persistence_rmse": persistence["rmse"],
            "persistence_ratio": model["rmse"] / persistence["rmse"] if persistence["rmse"] > 0 else math.nan,
            **{name: coverage(table[lo].to_numpy(), table[hi].to_numpy(), returns)
               for name, (lo, hi) in INTERVALS.items()}}
