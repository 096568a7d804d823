"""The ``/stockops/`` dashboard: what the platform is doing, on one page, from its own records.

Everything comes from files under the stockops home (and, for pending approvals, Airflow's
metadata DB), read when the page is asked for:

* per ticker, from the forecast log (``monitoring/forecasts.jsonl``, the champion's records, one
  per forecast day: the first recorded) and the ticker's latest published snapshot: a **fan chart**
  of the last :data:`FAN_DAYS` one-day-ahead forecasts (the 5-95 % and 25-75 % intervals and the
  median as prices, ``last_close * exp(quantile)``) against the closes that followed, and the
  **coverage over time** of the 50 % and 90 % intervals (rolling over :data:`COVERAGE_WINDOW`
  realized forecasts);
* the **champion** (its version and age: the last promotion, rollback or reconciliation in the
  audit log) and the **latest gate decision** (the last ``gate`` event there);
* the **latest monitor decision** (``monitoring/decisions.jsonl``);
* the **DORA measures** with the serving **incidents** (:func:`stockops.reporting.dora.report`, computed now);
* **pending approvals**: Airflow's human-in-the-loop requests still waiting.

Before any of the platform's own forecasts is realized (day one, or a new champion's first day), a
ticker's charts show the champion's **holdout forecasts** instead, from its evaluation
(``evaluation/v<version>.parquet``: the days it was judged on and never fitted on), and say so.

Missing data never breaks the page: a ticker without forecasts says so, a chart of one forecast
draws it as a bar, coverage is drawn once enough forecasts are realized (else the page says how many
are), a torn last line of a log is skipped (:func:`stockops.core.audit.read`). Charts are drawn with matplotlib as SVG and inlined as
``data:`` URIs (nothing is fetched from elsewhere), and kept per ticker until the forecast log or
the ticker's snapshot changes. Imported by the plugin's web app when a page is asked for.
"""

from __future__ import annotations

import base64
import html
import io
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockops.core import audit
from stockops.core.settings import Settings
from stockops.registry.changes import describe, history
from stockops.reporting import dora

if TYPE_CHECKING:
    import pandas as pd

FAN_DAYS = 60  # forecast days in the fan chart
COVERAGE_DAYS = 250  # forecast days in the coverage chart
COVERAGE_WINDOW = 20  # realized forecasts per point of rolling coverage
INTERVALS = {"50": ("q25", "q75"), "90": ("q05", "q95")}
QUANTILES = ("q05", "q25", "q50", "q75", "q95")
NO_FORECASTS = "no forecasts yet"
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

    table = _holdout_table(settings, version)
    if table is None or table.empty:
        return pd.DataFrame(columns=["as_of", "forecast_for", "model_version", "last_close", *QUANTILES])
    rows = table[table["ticker"] == ticker]
    out = rows[["as_of", "forecast_for", "last_close"]].assign(model_version=str(version))
    for q in QUANTILES:
        out[q] = rows["last_close"].to_numpy() * (rows[q].astype("float64").map(math.exp).to_numpy())
    return out[["as_of", "forecast_for", "model_version", "last_close", *QUANTILES]].sort_values(
        "forecast_for", ignore_index=True)


_HOLDOUTS: dict[str, tuple[tuple, Any]] = {}  # version -> (file stamp, table)


def _holdout_table(settings: Settings, version: str | None):
    if version is None:
        return None
    path = settings.evaluation_dir / f"v{version}.parquet"
    stamp = _stamp(path)
    cached = _HOLDOUTS.get(str(path))
    if cached and cached[0] == stamp:
        return cached[1]
    import pandas as pd

    try:
        table = pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - missing or unreadable: the page says there is nothing to show
        table = None
    _HOLDOUTS[str(path)] = (stamp, table)
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
    forecasts = champion_forecasts(records, ticker)
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


# ---- charts ------------------------------------------------------------------------------------
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


# ---- panels, kept until their sources change ----------------------------------------------------
_PANELS: dict[str, tuple[tuple, TickerPanel]] = {}


def _stamp(path: Path) -> tuple:
    try:
        status = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), status.st_mtime_ns, status.st_size)


def ticker_panels(settings: Settings) -> list[TickerPanel]:
    """Every watchlist ticker's panel; one is drawn again only when the forecast log or its snapshot changed."""
    from stockops.data import store_for

    log_stamp, records = _stamp(settings.forecast_log), None
    current = champion(settings, datetime.now(UTC))
    version = current["version"] if current else None
    holdout_stamp = _stamp(settings.evaluation_dir / f"v{version}.parquet") if version else None
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


# ---- the page ----------------------------------------------------------------------------------
def _when(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def _e(value: Any) -> str:
    return html.escape("—" if value is None or value == "" else str(value))


def _version(value: Any) -> str:
    """``v3`` for a registry version, the name as it is otherwise."""
    return f"v{_e(value)}" if str(value).isdigit() else _e(value)


def _pct(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0%}"


def _table(table_id: str, header: tuple[str, ...], rows: list[tuple], empty: str) -> str:
    """An HTML table of already escaped cells; without rows, one row that says why (``empty``)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td class="note" colspan="{len(header)}">{_e(empty)}</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'


def _links(settings: Settings) -> str:
    links = (("MLflow UI", settings.mlflow_ui_url, "experiments, runs, the model registry"),
             ("BentoML API docs", settings.serve_url + "/", "the serving endpoint's OpenAPI page"),
             ("GX Data Docs", "gx/", "every validation of a snapshot"),
             ("Evidently report", "monitor/latest", "the latest monitor check's drift report"),
             ("DORA chart", "dora", ".venv/bin/stockops dora draws it"))
    items = "".join(f'<li><a href="{_e(href)}">{_e(name)}</a> <small>{_e(note)}</small></li>'
                    for name, href, note in links)
    return f'<ul id="links">{items}</ul>'


def _champion_section(settings: Settings, now: datetime) -> str:
    current = champion(settings, now)
    rows = [] if current is None else [(
        _version(current["version"]), f'<b>{_e(KINDS.get(current["model_kind"], current["model_kind"]))}</b>',
        _e(current["since"]), _e(dora.human_duration(current["age_s"])),
        _e(current["change"]) + (f" from {_version(current['from_version'])}" if current["from_version"] else ""),
        _e(current["reason"]))]
    return _table("champion", ("version", "model", "since (UTC)", "age", "change", "why"), rows,
                  "no champion yet: the first stock_train run makes one (an LSTM that passes the gate, or else "
                  "the classical baseline HARX-GKO)")


KINDS = {"lstm": "LSTM", "harx_gko": "HARX-GKO (classical baseline)"}


def _gate_section(settings: Settings) -> str:
    entries = audit.read(settings.audit_log)
    gate = next((e for e in reversed(entries) if e.get("event") == "gate"), None)
    rows = []
    if gate is not None:
        run = gate.get("dag_run_id")
        baseline = next((e for e in reversed(entries) if e.get("event") == "baseline" and run
                         and e.get("dag_run_id") == run), None)
        if baseline is not None:
            outcome = f"v{_e(baseline.get('version'))} HARX-GKO baseline registered to serve: {_e(baseline.get('reason'))}"
        elif gate.get("decision") == "refused":
            outcome = "champion unchanged"
        else:
            outcome = f"v{_e(gate.get('version'))} deployed as the champion"
        rows = [(_e(gate.get("at")), _version(gate.get("version")), f'<b>{_e(gate.get("decision"))}</b>',
                 _e(gate.get("reason")), outcome, _e(gate.get("request_reason")))]
    return _table("gate", ("when (UTC)", "candidate", "decision", "why", "then", "training asked for by"), rows,
                  "no gate decision yet: stock_train has not scored a candidate")


def _approvals_section(approvals: list[dict] | str | None) -> str:
    """``approvals``: :func:`stockops.orchestration.hitl.pending_approvals`, or why they could not be read."""
    rows = [] if isinstance(approvals, str) else [
        (_e(a["created_at"]), _e(a["dag_id"]), _e(a["run_id"]),
         _e(a["task_id"] + (f"[{a['map_index']}]" if a.get("map_index", -1) >= 0 else "")),
         _e(a["subject"]), _e(", ".join(a["options"])), _e(a["state"])) for a in approvals or []]
    link = '<p><a href="/required_actions?response_received=false">answer them in the Airflow UI</a></p>'
    return _table("approvals", ("waiting since (UTC)", "DAG", "run", "task", "subject", "options", "state"),
                  rows, approvals if isinstance(approvals, str) else "no approvals pending") + link


def _monitor_section(settings: Settings) -> str:
    decision = latest_event(settings.monitor_log, "monitor")
    rows = [] if decision is None else [(
        _e(decision.get("checked_at") or decision.get("at")), _e(decision.get("champion_version")),
        "<b>retrain</b>" if decision.get("triggered") else "no action", _e(decision.get("reason")))]
    return _table("monitor", ("checked (UTC)", "champion", "decision", "why"), rows,
                  "no monitor check yet: stock_monitor runs after each ingest")


def _dora_section(settings: Settings, now: datetime) -> str:
    try:
        result = dora.report(settings, now=now)
    except Exception as exc:  # noqa: BLE001 - a record of an unexpected shape must not take the page down
        return f'<p class="note" id="dora-error">DORA report failed: {_e(type(exc).__name__)}: {_e(exc)}</p>'
    period = result["period"]
    measures = _table("dora", ("measure", "value", "DORA level", "basis"),
                      [tuple(_e(c) for c in row) for row in dora.table_rows(result)], "no records yet")
    events = result.get("incidents", {}).get("events", [])
    incidents = _table("incidents", ("component", "cause", "detected (UTC)", "recovered (UTC)", "downtime", "status"),
                       [(_e(i.get("component")), _e(i.get("cause")), _e(i.get("detected_at")),
                         _e(i.get("recovered_at")), _e(dora.human_duration(i.get("downtime_s"))), _e(i.get("status")))
                        for i in events], "no serving incidents in the period")
    return (f"<p>{_e(period['start'])} → {_e(period['end'])} ({_e(period['days'])} days); "
            f'numbers: <a href="dora.json">dora.json</a></p>\n{measures}\n<h3>Incidents</h3>\n{incidents}')


def _monitor_coverage(settings: Settings) -> dict[str, dict]:
    decision = next((e for e in reversed(audit.read(settings.monitor_log)) if e.get("scorecard")), None)
    return (decision or {}).get("scorecard", {}).get("per_ticker", {}) or {}


def _ticker_section(panel: TickerPanel, scorecard: dict) -> str:
    t = _e(panel.ticker)
    facts = [f"{panel.forecasts} forecast days, {panel.realized} realized"]
    if panel.last_forecast:
        f = panel.last_forecast
        facts.append(f"latest forecast, for {_e(f['forecast_for'])}: median {f['median']:.2f} "
                     f"(90 %: {f['low_90']:.2f}–{f['high_90']:.2f}; model {_version(f['model_version'])})")
    if panel.realized:
        facts.append(f"coverage 50 %: {_pct(panel.coverage_50)}, 90 %: {_pct(panel.coverage_90)}")
    elif panel.source == "holdout":
        facts.append(f"holdout coverage 50 %: {_pct(panel.coverage_50)}, 90 %: {_pct(panel.coverage_90)}")
    if scorecard:
        facts.append(f"monitor scorecard: 50 % {_pct(scorecard.get('coverage_50'))}, "
                     f"90 % {_pct(scorecard.get('coverage_90'))} over {scorecard.get('days', 0)} days")
    note = f'<p class="note" id="note-{t}">{_e(panel.note)}</p>' if panel.note else ""
    charts = "".join(f'<img id="{kind}-{t}" class="chart" alt="{t} {label}" src="{uri}">'
                     for kind, label, uri in (("fan", "fan chart", panel.fan_chart),
                                              ("coverage", "coverage over time", panel.coverage_chart)) if uri)
    return (f'<section class="ticker" id="ticker-{t}" data-source="{panel.source}"><h3>{t}</h3>'
            f'<p>{"; ".join(facts)}</p>{note}<div>{charts}</div></section>')


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;font-size:.9em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.note{color:#8a5a00}.chart{max-width:49%;min-width:420px}.ticker{margin:1em 0;
border-top:1px solid #ddd}small,footer{color:#666}"""


def render_page(settings: Settings, *, user: str, approvals: list[dict] | str | None,
                now: datetime | None = None) -> str:
    """The whole dashboard as one HTML page (no script, nothing loaded from elsewhere)."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    panels = ticker_panels(settings)
    scorecard = _monitor_coverage(settings)
    tickers = "\n".join(_ticker_section(p, scorecard.get(p.ticker, {})) for p in panels)
    index = " ".join(f'<a href="#ticker-{_e(p.ticker)}">{_e(p.ticker)}</a>' for p in panels)
    body = f"""<h1>stockops</h1>
<p>{len(settings.tickers)} tickers; model ticker {_e(settings.ticker)}; signed in as {_e(user)}</p>
{_links(settings)}
<h2>Champion</h2>
{_champion_section(settings, now)}
<h2>Latest gate decision</h2>
{_gate_section(settings)}
<h2>Pending approvals</h2>
{_approvals_section(approvals)}
<h2>Latest monitor decision</h2>
{_monitor_section(settings)}
<h2>DORA measures</h2>
{_dora_section(settings, now)}
<h2>Forecasts against realized closes</h2>
<p>{index}</p>
{tickers}"""
    took = time.perf_counter() - started
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>stockops dashboard</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n<footer>drawn {_e(_iso(now))} in "
            f'<span id="render-seconds">{took:.2f}</span> s</footer></body></html>\n')
