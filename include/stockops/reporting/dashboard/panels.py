"""The dashboard's data: one panel per watchlist ticker (the champion's forecasts as prices against the
published closes, their coverage and charts, or the champion's holdout forecasts on day one), kept until the
forecast log or the ticker's snapshot changes; the current champion; the latest record of a log."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockops.charts.dashboard import COVERAGE_WINDOW, FAN_DAYS, NO_FORECASTS, coverage_chart, fan_chart
from stockops.core import audit
from stockops.core.settings import Settings
from stockops.registry import holdouts
from stockops.registry.changes import describe, history

if TYPE_CHECKING:
    import pandas as pd

COVERAGE_DAYS = 250  # forecast days in the coverage chart
INTERVALS = {"50": ("q25", "q75"), "90": ("q05", "q95")}
QUANTILES = ("q05", "q25", "q50", "q75", "q95")
NO_SNAPSHOT = "no published snapshot yet"


@dataclass(frozen=True)
class TickerPanel:
    """One ticker's part of the page; ``note`` says what is missing (then a chart may be None)."""

    ticker: str
    forecasts: int  # forecast days recorded (champion records, one per day)
    realized: int  # of those, days whose close is published
    last_forecast: dict | None  # the newest: forecast_for, model_version, median and 90 % interval as prices
    coverage_50: float | None  # over the realized days of the coverage chart
    coverage_90: float | None
    fan_chart: str | None  # data: URI of an SVG
    coverage_chart: str | None
    note: str | None = None
    source: str = "live"  # "live": the platform's own forecasts; "holdout": the champion's evaluation (day one)


# ---- data --------------------------------------------------------------------------------------
def champion_forecasts(records: list[dict], ticker: str) -> pd.DataFrame:
    """The champion's forecasts of ``ticker`` as prices, one row per forecast day (the first recorded), oldest first.

    Shadow records (the previous champion forecasting the same days) are left out. Columns:
    ``as_of, forecast_for, model_version, last_close`` and the quantiles of :data:`QUANTILES` as
    prices (the records hold log-return quantiles).
    """
    import pandas as pd

    rows: dict[str, dict] = {}
    for entry in records:
        if entry.get("ticker") != ticker or entry.get("role") == "shadow" or entry.get("forecast_for") in rows:
            continue
        try:
            last_close, quantiles = float(entry["last_close"]), entry["quantiles"]
            rows[entry["forecast_for"]] = {
                "as_of": entry["as_of"], "forecast_for": entry["forecast_for"],
                "model_version": str(entry.get("model_version")), "last_close": last_close,
                **{q: last_close * math.exp(float(quantiles[q])) for q in QUANTILES}}
        except (KeyError, TypeError, ValueError):  # a record of another shape: not drawn
            continue
    table = pd.DataFrame(list(rows.values()), columns=["as_of", "forecast_for", "model_version", "last_close",
                                                       *QUANTILES])
    return table.sort_values("forecast_for", ignore_index=True)


def holdout_forecasts(settings: Settings, version: str | None, ticker: str) -> pd.DataFrame:
    """Registry ``version``'s holdout forecasts of ``ticker`` as :func:`champion_forecasts` tabulates them (empty when
    it kept none): what its evaluation forecast for the days it was judged on."""
    import pandas as pd

    table = holdout_table(settings, version)
    if table is None or table.empty:
        return pd.DataFrame(columns=["as_of", "forecast_for", "model_version", "last_close", *QUANTILES])
    rows = table[table["ticker"] == ticker]
    out = rows[["as_of", "forecast_for", "last_close"]].assign(model_version=str(version))
    for q in QUANTILES:
        out[q] = rows["last_close"].to_numpy() * (rows[q].astype("float64").map(math.exp).to_numpy())
    return out[["as_of", "forecast_for", "model_version", "last_close", *QUANTILES]].sort_values(
        "forecast_for", ignore_index=True)


_HOLDOUTS: dict[str, tuple[Any, Any]] = {}  # home:version -> (its stamp, table)


def holdout_table(settings: Settings, version: str | None):
    """Registry ``version``'s evaluation (every ticker's holdout forecasts), kept until its file changes; None when
    it kept none."""
    from stockops.registry.holdouts import holdout_stamp, read_holdout

    if version is None:
        return None
    key = f"{settings.home}:{version}"
    stamp = holdout_stamp(settings, version)
    cached = _HOLDOUTS.get(key)
    if cached and cached[0] == stamp:
        return cached[1]
    table = read_holdout(settings, version)  # None: missing or unreadable, the page says there is nothing to show
    _HOLDOUTS[key] = (stamp, table)
    return table


def with_realized(forecasts: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``forecasts`` with the published ``close`` of each forecast day (NaN until published) and interval hits."""
    closes = dict(zip(frame["Date"].astype(str).str[:10], frame["Close"].astype("float64"), strict=True))
    table = forecasts.assign(close=forecasts["forecast_for"].map(closes).astype("float64"))
    for name, (low, high) in INTERVALS.items():
        hit = (table["close"] >= table[low]) & (table["close"] <= table[high])
        table[f"hit_{name}"] = hit.astype("float64").where(table["close"].notna())
    return table


def rolling_coverage(table: pd.DataFrame, window: int = COVERAGE_WINDOW) -> pd.DataFrame:
    """Coverage of the 50 % and 90 % intervals over the last ``window`` realized forecasts, per realized day."""
    realized = table.dropna(subset=["close"])
    least = min(5, window)
    return realized[["forecast_for"]].assign(
        **{f"coverage_{n}": realized[f"hit_{n}"].rolling(window, min_periods=least).mean() for n in INTERVALS})


def ticker_panel(ticker: str, records: list[dict], frame: pd.DataFrame | None,
                 holdout: pd.DataFrame | None = None) -> TickerPanel:
    """The panel of one ticker from the forecast log's records and its latest published snapshot (None: none).

    ``holdout``: the champion's holdout forecasts of the ticker (:func:`holdout_forecasts`), shown while none of
    the platform's own forecasts is realized."""
    return priced_panel(ticker, champion_forecasts(records, ticker), frame, holdout)


def priced_panel(ticker: str, forecasts: pd.DataFrame, frame: pd.DataFrame | None,
                 holdout: pd.DataFrame | None = None) -> TickerPanel:
    """:func:`ticker_panel` from the ticker's forecasts already tabulated by :func:`champion_forecasts`."""
    if frame is None:
        return TickerPanel(ticker, len(forecasts), 0, None, None, None, None, None,
                           NO_SNAPSHOT if forecasts.empty else f"{NO_SNAPSHOT}: its {len(forecasts)} forecasts "
                                                                 "cannot be compared with closes")
    table = with_realized(forecasts.tail(COVERAGE_DAYS), frame) if not forecasts.empty else None
    if (table is None or table["close"].isna().all()) and holdout is not None and not holdout.empty:
        return _holdout_panel(ticker, len(forecasts), holdout, frame)
    if table is None:
        return TickerPanel(ticker, 0, 0, None, None, None, fan_chart(ticker, forecasts, frame), None, NO_FORECASTS)
    realized = table.dropna(subset=["close"])
    newest = table.iloc[-1]
    last = {"forecast_for": newest["forecast_for"], "model_version": newest["model_version"],
            "median": float(newest["q50"]), "low_90": float(newest["q05"]), "high_90": float(newest["q95"])}
    coverage = {n: float(realized[f"hit_{n}"].mean()) if len(realized) else None for n in INTERVALS}
    note = None if len(realized) else "no forecast realized yet: the next published close is the first"
    rolling = rolling_coverage(table)
    chart = coverage_chart(ticker, rolling) if rolling["coverage_90"].notna().any() else None
    if len(realized) and chart is None:
        note = (f"{len(realized)} forecast(s) realized: coverage over time is drawn from "
                f"{min(5, COVERAGE_WINDOW)} on")
    return TickerPanel(ticker, len(forecasts), len(realized), last, coverage["50"], coverage["90"],
                       fan_chart(ticker, table.tail(FAN_DAYS), frame), chart, note)


def _holdout_panel(ticker: str, own: int, holdout: pd.DataFrame, frame: pd.DataFrame) -> TickerPanel:
    """Day one: the champion's holdout forecasts against the closes that followed (its evaluation's days)."""
    table = with_realized(holdout.tail(COVERAGE_DAYS), frame)
    realized = table.dropna(subset=["close"])
    coverage = {n: float(realized[f"hit_{n}"].mean()) if len(realized) else None for n in INTERVALS}
    version = str(table["model_version"].iloc[-1])
    rolling = rolling_coverage(table)
    note = (f"no live forecast realized yet ({own} made): shown are v{version}'s forecasts on its holdout, "
            f"{len(realized)} days it was judged on and never fitted on, from its evaluation")
    return TickerPanel(ticker, own, 0, None, coverage["50"], coverage["90"],
                       fan_chart(ticker, table.tail(FAN_DAYS), frame, what=f"v{version}'s holdout forecasts"),
                       coverage_chart(ticker, rolling) if rolling["coverage_90"].notna().any() else None, note,
                       source="holdout")


def champion(settings: Settings, now: datetime) -> dict | None:
    """The current champion from the last change of ``@champion`` in the audit log: version, since, age, how."""
    changes = history(settings)
    if not changes:
        return None
    last = changes[-1]
    since = _when(last.get("at"))
    kind = next((e.get("model_kind") for e in reversed(changes) if str(e.get("to_version")) == str(last.get(
        "to_version")) and e.get("model_kind")), None)
    return {"version": str(last.get("to_version")), "since": last.get("at"), "change": describe(last),
            "from_version": last.get("from_version"), "reason": last.get("reason", ""), "model_kind": kind or "lstm",
            "age_s": (now - since).total_seconds() if since else None, "changes": len(changes)}


def latest_event(path: Path, event: str) -> dict | None:
    """The last ``event`` record of a JSON-lines log, or None."""
    return next((e for e in reversed(audit.read(path)) if e.get("event") == event), None)


def _when(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# ---- panels, kept until their sources change ----------------------------------------------------
_PANELS: dict[str, tuple[tuple, TickerPanel]] = {}


def file_stamp(path: Path) -> tuple:
    """What tells a file's change cheaply: its path, mtime and size (None for both when it is missing)."""
    try:
        status = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), status.st_mtime_ns, status.st_size)


def ticker_panels(settings: Settings) -> list[TickerPanel]:
    """Every watchlist ticker's panel; one is drawn again only when the forecast log or its snapshot changed."""
    from stockops.data import store_for

    log_stamp, records = audit.stamp(settings.forecast_log), None
    current = champion(settings, datetime.now(UTC))
    version = current["version"] if current else None
    holdout_stamp = holdouts.holdout_stamp(settings, version)
    panels = []
    for ticker in settings.tickers:
        store = store_for(settings, ticker)
        entry = store.latest()
        key = (log_stamp, str(settings.home), entry.hash if entry else None, holdout_stamp)
        cached = _PANELS.get(ticker)
        if cached and cached[0] == key:
            panels.append(cached[1])
            continue
        if records is None:
            records = audit.read(settings.forecast_log)
        panel = ticker_panel(ticker, records, store.load(entry) if entry else None,
                             holdout_forecasts(settings, version, ticker))
        _PANELS[ticker] = (key, panel)
        panels.append(panel)
    return panels
