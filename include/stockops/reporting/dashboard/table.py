"""The overview's table of every ticker as HTML, one server-drawn row per ticker with its sparkline, sorted by a
click on a column's header and filtered by the search box (a few lines of inline script, allowed by its hash in
the page's Content-Security-Policy: nothing else may run, nothing is loaded from elsewhere)."""

from __future__ import annotations

import base64
import hashlib
import html
from urllib.parse import quote

from stockops.charts.dashboard import FAN_DAYS, sparkline
from stockops.reporting.dashboard.universe import TickerRow

# Sorting: each cell's data-v (a number, or text; empty sorts last either way); searching: each row's data-search.
SCRIPT = """(() => {
const table = document.getElementById("universe"), body = table.tBodies[0];
const search = document.getElementById("search"), shown = document.getElementById("shown");
search.addEventListener("input", () => {
  const words = search.value.trim().toLowerCase().split(/\\s+/).filter(Boolean);
  let n = 0;
  for (const row of body.rows) {
    row.hidden = !words.every(w => row.dataset.search.includes(w));
    n += row.hidden ? 0 : 1;
  }
  shown.textContent = n;
});
table.tHead.addEventListener("click", event => {
  const th = event.target.closest("th[data-sort]");
  if (!th) return;
  const i = th.cellIndex, numeric = th.dataset.sort === "num";
  const dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
  for (const other of th.parentElement.cells) other.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
  const value = row => row.cells[i].dataset.v;
  const rows = [...body.rows].sort((a, b) => {
    const x = value(a), y = value(b);
    if (x === "" || y === "") return (x === "") - (y === "");
    return dir * (numeric ? x - y : x.localeCompare(y));
  });
  body.append(...rows);
});
})();"""
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (f"default-src 'none'; script-src 'sha256-{SCRIPT_HASH}'; style-src 'unsafe-inline'; "
                           "img-src 'self' data:; base-uri 'none'; form-action 'none'")
STYLE = """#universe td{vertical-align:middle}#universe th[data-sort]{cursor:pointer;user-select:none}
#universe th[aria-sort=ascending]::after{content:" ▲"}#universe th[aria-sort=descending]::after{content:" ▼"}
.num{text-align:right;font-variant-numeric:tabular-nums}.spark{display:block}.drifted{color:#c62828;font-weight:bold}
.status-quarantined,.status-rejected,.status-unreadable{color:#c62828}.status-held{color:#8a5a00;font-weight:bold}
.status-never{color:#666}#search{font-size:1em;padding:.2em .4em;width:18em}"""

COLUMNS = (("ticker", "text", "the ticker's page: today's fan chart and coverage plot"),
           ("last close", "num", "the latest published close"),
           ("forecast σ", "num", "the newest forecast's standard deviation of the day's log return"),
           ("90 % interval", "num", "the newest forecast's 5-95 % interval as prices (sorted by its width "
                                    "relative to the last close)"),
           ("90 % coverage", "num", f"share of realized closes inside their 90 % interval over the last {FAN_DAYS} "
                                    "forecast days (nominal 90 %)"),
           ("σ² factor", "num", "the online calibration's factor on the model's variance for the ticker, learnt from "
                                "the realized days (market-wide times its own; —: none applied)"),
           ("drift", "num", "the latest monitor check's drift verdict on the ticker"),
           ("data", "text", "the latest ingest: published, quarantined, or waiting for a person's review"),
           (f"last {FAN_DAYS} sessions", "", "closes (line) inside the forecasts' 90 % band; red: outside it"))


def _e(value: object) -> str:
    return html.escape("—" if value is None or value == "" else str(value))


def _cell(text: str, sort: object, css: str = "", title: str = "") -> str:
    value = "" if sort is None else html.escape(str(sort))
    return (f'<td data-v="{value}"' + (f' class="{css}"' if css else "")
            + (f' title="{html.escape(title)}"' if title else "") + f">{text}</td>")


def table_row(row: TickerRow) -> str:
    """One ticker's ``<tr>``: every cell escaped, with its sort value."""
    t = _e(row.ticker)
    close = row.last_close
    cells = [_cell(f'<a href="ticker/{quote(row.ticker, safe="")}">{t}</a>', row.ticker),
             _cell("—" if close is None else f"{close:,.2f}", close, "num",
                   f"close of {row.close_date}" if row.close_date else "no published snapshot yet"),
             _cell("—" if row.volatility is None else f"{row.volatility:.2%}", row.volatility, "num",
                   f"forecast for {row.forecast_for}" if row.forecast_for else "no forecast yet")]
    if row.low_90 is None or row.high_90 is None:
        cells.append(_cell("—", None, "num", "no forecast yet"))
    else:
        width = (row.high_90 - row.low_90) / close if close else None
        cells.append(_cell(f"{row.low_90:,.2f}–{row.high_90:,.2f}", width, "num", f"for {row.forecast_for}"))
    if row.coverage_90 is None:
        cells.append(_cell("—", None, "num", "no forecast realized yet"))
    else:
        holdout = " holdout" if row.source == "holdout" else ""
        cells.append(_cell(f"{row.coverage_90:.0%} <small>({row.realized}{holdout})</small>", row.coverage_90, "num",
                           f"{row.realized} realized forecasts" + (" of the champion's holdout (its evaluation): "
                                                                     "none of its own is realized yet" if holdout else "")))
    cells.append(_factor_cell(row))
    drift = {True: ('<span class="drifted">drifted</span>', 1), False: ("no", 0), None: ("—", None)}[row.drifted]
    cells.append(_cell(drift[0], drift[1], title="" if row.drifted is not None else "not in the latest drift check"))
    css = "status-" + row.status.split()[0]
    cells.append(_cell(_e(row.status_label), row.status_label, css, row.status_detail))
    cells.append(f"<td>{sparkline(row.closes, row.lows, row.highs, f'{t}: last {FAN_DAYS} sessions')}</td>")
    search = html.escape(f"{row.ticker} {row.status_label}".lower())
    return (f'<tr id="row-{t}" data-source="{row.source}" data-search="{search}">' + "".join(cells) + "</tr>")


def _factor_cell(row: TickerRow) -> str:
    """The online calibration's variance factor: ``×1.23``, its title saying whose days it is from."""
    if row.variance_factor is None:
        return _cell("—", None, "num", "no online calibration state applies")
    scope = (f"market-wide times its own, from {row.online_days} realized days of its own" if row.online_days
             else "market-wide only: none of its own days realized yet")
    return _cell(f"×{row.variance_factor:.2f}", row.variance_factor, "num", scope)


_LAST: list = [None, ""]  # the rows last drawn (universe_rows keeps them until a source changes) and their HTML


def universe_table(rows: list[TickerRow]) -> str:
    """The search box, the table of every ticker and the script that sorts and filters it (the same rows as last
    time, kept by :func:`~stockops.reporting.dashboard.universe.universe_rows`: the same HTML, not drawn again)."""
    if _LAST[0] is rows:
        return _LAST[1]
    head = "".join(f'<th data-sort="{sort}" title="{html.escape(note)}">{html.escape(name)}</th>' if sort
                   else f'<th title="{html.escape(note)}">{html.escape(name)}</th>' for name, sort, note in COLUMNS)
    body = "\n".join(table_row(r) for r in rows)
    html_table = (f'<p><input id="search" type="search" placeholder="search: ticker or data status" '
                  f'aria-label="search tickers" autocomplete="off"> <span id="shown">{len(rows)}</span> of '
                  f"{len(rows)} tickers shown; click a column's name to sort by it</p>\n"
                  f'<table id="universe"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>\n'
                  f"<script>{SCRIPT}</script>")
    _LAST[:] = [rows, html_table]
    return html_table
