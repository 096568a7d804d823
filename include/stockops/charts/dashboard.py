"""The dashboard's charts: a ticker page's fan chart of forecasts against the closes and the rolling coverage of
its intervals, drawn with matplotlib (imported when drawing, without pyplot) as SVG ``data:`` URIs; and the
overview's sparkline per ticker, a few lines of SVG markup written here (421 of them draw in milliseconds)."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FAN_DAYS = 60  # forecast days in the fan chart
COVERAGE_WINDOW = 20  # realized forecasts per point of rolling coverage
NO_FORECASTS = "no forecasts yet"


_DRAWING = threading.Lock()  # matplotlib's rc settings are process-wide; the api-server serves in threads


_WARMED = threading.Event()


def warm_up() -> None:
    """Import matplotlib and draw one empty chart (its font cache, its SVG backend) in a thread of its own, once per
    process: ~1 s that the first ticker page would otherwise spend. The api-server calls it after an overview."""
    if _WARMED.is_set():
        return
    _WARMED.set()

    def draw() -> None:
        figure, _ = _figure()
        _svg_uri(figure)

    threading.Thread(target=draw, name="stockops-charts-warm-up", daemon=True).start()


def _svg_uri(figure) -> str:
    import matplotlib

    out = io.StringIO()
    with _DRAWING, matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text: small, no glyph paths
        figure.savefig(out, format="svg")  # fixed margins: a "tight" box would draw everything twice
    return "data:image/svg+xml;base64," + base64.b64encode(out.getvalue().encode()).decode()


def _figure():
    """A figure with one axes, dates on x (short labels, few ticks)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure  # drawn without pyplot: no GUI backend, no global figure list

    figure = Figure(figsize=(6.4, 2.6), dpi=100)
    figure.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.2)  # room for the year below the dates
    ax = figure.subplots()
    locator = AutoDateLocator(maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.tick_params(labelsize=7)
    ax.xaxis.get_offset_text().set_fontsize(7)
    ax.grid(alpha=0.3)
    return figure, ax


def _dates(values) -> Any:
    import pandas as pd

    return pd.to_datetime(pd.Series(list(values), dtype="object"))


def fan_chart(ticker: str, table: pd.DataFrame, frame: pd.DataFrame, what: str = "one-day-ahead forecasts") -> str:
    """The forecasts' 5-95 % and 25-75 % bands and median as prices, against the closes (SVG data URI); a single
    forecast is drawn as its interval bars (a band needs two days)."""
    figure, ax = _figure()
    dates = frame["Date"].astype(str).str[:10].to_numpy()
    # the closes from a week before the first forecast day (the last FAN_DAYS closes without forecasts)
    start = int(dates.searchsorted(table["forecast_for"].iloc[0])) - 5 if len(table) else len(dates) - FAN_DAYS
    shown = frame.iloc[max(0, start):]
    ax.plot(_dates(dates[max(0, start):]), shown["Close"], color="black", linewidth=1.2, label="close (published)")
    if len(table):
        x = _dates(table["forecast_for"])
        if len(table) == 1:
            for low, high, colour, label in (("q05", "q95", "#90caf9", "90 % interval"),
                                             ("q25", "q75", "#1e88e5", "50 % interval")):
                ax.vlines(x, table[low], table[high], color=colour, linewidth=9, label=label)
            ax.scatter(x, table["q50"], color="#0d47a1", marker="_", s=120, label="median", zorder=3)
        else:
            ax.fill_between(x, table["q05"], table["q95"], color="#90caf9", alpha=0.55, label="90 % interval",
                            step="mid")
            ax.fill_between(x, table["q25"], table["q75"], color="#1e88e5", alpha=0.55, label="50 % interval",
                            step="mid")
            ax.plot(x, table["q50"], color="#0d47a1", linewidth=0.8, linestyle=":", label="median")
        if "close" in table:
            missed = table[(table["close"] < table["q05"]) | (table["close"] > table["q95"])]
            ax.scatter(_dates(missed["forecast_for"]), missed["close"], color="#c62828", s=12, zorder=3,
                       label="outside 90 %")
        ax.set_title(f"{ticker}: the last {len(table)} {what}" if len(table) > 1 else f"{ticker}: one {what[:-1]}",
                     fontsize=9)
    else:
        ax.set_title(f"{ticker}: {NO_FORECASTS}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", framealpha=0.7, ncol=2)  # "best" costs a search per chart
    return _svg_uri(figure)


def coverage_chart(ticker: str, coverage: pd.DataFrame) -> str:
    """Rolling coverage of the 50 % and 90 % intervals, with their nominal levels (SVG data URI)."""
    figure, ax = _figure()
    x = _dates(coverage["forecast_for"])
    for name, colour in (("90", "#1565c0"), ("50", "#2e7d32")):
        ax.plot(x, coverage[f"coverage_{name}"], color=colour, linewidth=1.2, label=f"{name} % interval")
        ax.axhline(int(name) / 100, color=colour, linestyle="--", linewidth=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{ticker}: interval coverage, rolling over {COVERAGE_WINDOW} realized forecasts "
                 "(dashed: nominal)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left", frameon=False, ncol=2)
    return _svg_uri(figure)


SPARK_WIDTH, SPARK_HEIGHT = 120, 28  # CSS pixels; drawn on a grid twice as fine, in whole units


def sparkline(closes: Sequence[float], lows: Sequence[float], highs: Sequence[float], label: str) -> str:
    """A tiny inline SVG (markup, no matplotlib): the closes as a line over the forecasts' 90 % band, the closes
    outside it as red dots. ``lows``/``highs``: the band per session (NaN: no forecast), one slot longer than
    ``closes`` when the newest forecast is for a day not closed yet; ``label`` (HTML-escaped) names it. Empty without
    closes."""
    import numpy as np

    close = np.asarray(closes, dtype=np.float64)
    low, high = np.asarray(lows, dtype=np.float64), np.asarray(highs, dtype=np.float64)
    values = np.concatenate([close, low, high])
    values = values[~np.isnan(values)]
    if not len(close) or not len(values):
        return ""
    width, height, pad = SPARK_WIDTH * 2, SPARK_HEIGHT * 2, 3
    n = max(len(close), len(low))
    bottom = values.min()
    scale = (height - 2 * pad) / ((values.max() - bottom) or 1.0)
    x = np.rint(pad + np.arange(n) * (width - 2 * pad) / max(1, n - 1)).astype(int).tolist()

    def y(series: np.ndarray) -> list:
        return np.rint(height - pad - (np.nan_to_num(series, nan=bottom) - bottom) * scale).astype(int).tolist()

    y_close, y_low, y_high = y(close), y(low), y(high)
    banded = (~np.isnan(low) & ~np.isnan(high)).tolist()
    parts = []
    run: list[int] = []
    for i in range(len(low) + 1):  # the band in runs of consecutive forecast days
        if i < len(low) and banded[i]:
            run.append(i)
            continue
        if len(run) == 1:
            j = run[0]
            parts.append(f'<line x1="{x[j]}" y1="{y_low[j]}" x2="{x[j]}" y2="{y_high[j]}" stroke="#90caf9" '
                         'stroke-width="3"/>')
        elif run:
            points = [f"{x[j]},{y_high[j]}" for j in run] + [f"{x[j]},{y_low[j]}" for j in reversed(run)]
            parts.append(f'<polygon points="{" ".join(points)}" fill="#90caf9"/>')
        run = []
    line = " ".join(f"{a},{b}" for a, b in zip(x, y_close, strict=False))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#222" stroke-width="2"/>')
    k = min(len(close), len(low))
    outside = np.flatnonzero(np.asarray(banded[:k], dtype=bool)
                             & ((close[:k] < low[:k]) | (close[:k] > high[:k]))).tolist()
    parts += [f'<circle cx="{x[i]}" cy="{y_close[i]}" r="3" fill="#c62828"/>' for i in outside]
    return (f'<svg class="spark" width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{label}">{"".join(parts)}</svg>')
