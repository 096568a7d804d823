"""The dashboard's charts, drawn with matplotlib (imported when drawing, without pyplot) as SVG ``data:`` URIs:
a ticker's fan chart of forecasts against the closes, and the rolling coverage of its intervals."""

from __future__ import annotations

import base64
import io
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FAN_DAYS = 60  # forecast days in the fan chart
COVERAGE_WINDOW = 20  # realized forecasts per point of rolling coverage
NO_FORECASTS = "no forecasts yet"


_DRAWING = threading.Lock()  # matplotlib's rc settings are process-wide; the api-server serves in threads


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
