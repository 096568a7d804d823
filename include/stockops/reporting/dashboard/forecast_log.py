"""The forecast log as the dashboard reads it: the champion's forecasts as prices, one row per (ticker, forecast
day), parsed once per change of the file for every ticker at once (Arrow's JSON reader, ~6 x faster than a line at
a time; the line reader of :func:`stockops.core.audit.read` when a line is not what it expects: torn, or of
another shape)."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

from stockops.core import audit
from stockops.core.settings import Settings
from stockops.reporting.dashboard.panels import QUANTILES

if TYPE_CHECKING:
    import pandas as pd

FORECAST_COLUMNS = ("ticker", "as_of", "forecast_for", "model_version", "last_close", "variance", *QUANTILES)
RAW_COLUMNS = ["ticker", "as_of", "forecast_for", "model_version", "role", "last_close", "variance", *QUANTILES]


_FORECASTS: dict[str, tuple[tuple | None, Any]] = {}  # forecast log path -> (stamp, table)


def forecast_table(settings: Settings) -> pd.DataFrame:
    """The forecast log's champion forecasts as prices, one row per (ticker, forecast day): the first recorded,
    shadow records left out (as :func:`~stockops.reporting.dashboard.panels.champion_forecasts` keeps them), in
    log order. Columns :data:`FORECAST_COLUMNS`; kept until the log changes."""
    path = settings.forecast_log
    stamp = audit.stamp(path)
    cached = _FORECASTS.get(str(path))
    if cached and cached[0] == stamp:
        return cached[1]
    table = _champion_rows(_read_forecast_log(path))
    _FORECASTS[str(path)] = (stamp, table)
    return table


def _read_forecast_log(path) -> pd.DataFrame:
    """The log's fields this page needs, one row per whole line (a line being written now is left for later)."""
    import pandas as pd

    data = audit.read_bodies(path)
    data = data[:data.rfind(b"\n") + 1]
    if not data.strip():
        return pd.DataFrame(columns=RAW_COLUMNS)
    try:
        return _arrow_rows(data)
    except Exception:  # noqa: BLE001 - a torn or odd line: the line reader skips what it cannot read, and says so
        return _dict_rows(audit.read(path))


def _arrow_rows(data: bytes) -> pd.DataFrame:
    import pyarrow as pa
    from pyarrow import json as pa_json

    text = pa.string()
    schema = pa.schema([("ticker", text), ("as_of", text), ("forecast_for", text), ("model_version", text),
                        ("role", text), ("last_close", pa.float64()), ("variance", pa.float64()),
                        ("quantiles", pa.struct([(q, pa.float64()) for q in QUANTILES]))])
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    table = pa_json.read_json(io.BytesIO(data), parse_options=options)
    quantiles = table.column("quantiles").combine_chunks()
    columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in schema.names if name != "quantiles"}
    columns |= {q: quantiles.field(q).to_numpy(zero_copy_only=False) for q in QUANTILES}
    import pandas as pd

    return pd.DataFrame(columns)


def _dict_rows(records: list[dict]) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for entry in records:
        try:
            quantiles = entry["quantiles"]
            rows.append({"ticker": entry.get("ticker"), "as_of": entry.get("as_of"),
                         "forecast_for": entry.get("forecast_for"), "model_version": str(entry.get("model_version")),
                         "role": entry.get("role"), "last_close": float(entry["last_close"]),
                         "variance": float(entry.get("variance", math.nan)),
                         **{q: float(quantiles[q]) for q in QUANTILES}})
        except (KeyError, TypeError, ValueError):  # a record of another shape: not drawn
            continue
    return pd.DataFrame(rows, columns=RAW_COLUMNS)


def _champion_rows(raw: pd.DataFrame) -> pd.DataFrame:
    import numpy as np

    valid = raw["ticker"].notna() & raw["forecast_for"].notna() & raw["last_close"].notna()
    for q in QUANTILES:
        valid &= raw[q].notna()
    table = raw[valid & (raw["role"] != "shadow")].drop_duplicates(["ticker", "forecast_for"], keep="first")
    table = table.assign(model_version=table["model_version"].astype(str))
    close = table["last_close"].to_numpy(np.float64)
    for q in QUANTILES:
        table[q] = close * np.exp(table[q].to_numpy(np.float64))
    return table[list(FORECAST_COLUMNS)].reset_index(drop=True)


def ticker_forecasts(settings: Settings, ticker: str) -> pd.DataFrame:
    """One ticker's champion forecasts as :func:`~stockops.reporting.dashboard.panels.champion_forecasts` tabulates
    them (oldest first), from the shared :func:`forecast_table`."""
    table = forecast_table(settings)
    mine = table[table["ticker"] == ticker]
    return mine.drop(columns=["ticker", "variance"]).sort_values("forecast_for", ignore_index=True)
