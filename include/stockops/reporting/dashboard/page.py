"""The dashboard's pages: the overview (the online calibration's line, the table of every ticker, then the champion,
the latest gate and monitor decisions, pending approvals, the DORA measures and incidents, the links) and a ticker's
page (its fan chart and coverage plot, its online calibration); inline styles and charts, the overview's one inline
script, nothing loaded from elsewhere."""

from __future__ import annotations

import html
import math
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from stockops.core import audit
from stockops.core.settings import Settings
from stockops.reporting.dashboard.online import OnlineView, online_view
from stockops.reporting.dashboard.panels import TickerPanel, champion, latest_event
from stockops.reporting.dashboard.table import STYLE as TABLE_STYLE
from stockops.reporting.dashboard.table import universe_table
from stockops.reporting.dashboard.universe import TickerRow, ticker_page_panel, ticker_row, universe_rows
from stockops.reporting.dora import report as dora_report
from stockops.reporting.dora.text import human_duration, table_rows


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
        _e(current["since"]), _e(human_duration(current["age_s"])),
        _e(current["change"]) + (f" from {_version(current['from_version'])}" if current["from_version"] else ""),
        _e(current["reason"]))]
    return _table("champion", ("version", "model", "since (UTC)", "age", "change", "why"), rows,
                  "no champion yet: the first stock_train run makes one (an LSTM that passes the gate, or else "
                  "the classical baseline HARX-GKO)")


KINDS = {"lstm": "LSTM", "harx_gko": "HARX-GKO (classical baseline)"}


def _champion_of(settings: Settings, now: datetime) -> str | None:
    current = champion(settings, now)
    return current["version"] if current else None


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
        result = dora_report(settings, now=now)
    except Exception as exc:  # noqa: BLE001 - a record of an unexpected shape must not take the page down
        return f'<p class="note" id="dora-error">DORA report failed: {_e(type(exc).__name__)}: {_e(exc)}</p>'
    period = result["period"]
    measures = _table("dora", ("measure", "value", "DORA level", "basis"),
                      [tuple(_e(c) for c in row) for row in table_rows(result)], "no records yet")
    events = result.get("incidents", {}).get("events", [])
    incidents = _table("incidents", ("component", "cause", "detected (UTC)", "recovered (UTC)", "downtime", "status"),
                       [(_e(i.get("component")), _e(i.get("cause")), _e(i.get("detected_at")),
                         _e(i.get("recovered_at")), _e(human_duration(i.get("downtime_s"))), _e(i.get("status")))
                        for i in events], "no serving incidents in the period")
    return (f"<p>{_e(period['start'])} → {_e(period['end'])} ({_e(period['days'])} days); "
            f'numbers: <a href="dora.json">dora.json</a></p>\n{measures}\n<h3>Incidents</h3>\n{incidents}')


def _online_caption(view: OnlineView) -> str:
    """The overview's line on the online calibration: whose state, through which day (the σ² factor column's)."""
    state = view.state
    if state is None or not view.applied:
        return f'<p class="note" id="online-calibration">{_e(view.note)}</p>'
    return (f'<p id="online-calibration">online calibration (σ² factor): {_version(state.model_version)}, through '
            f"{_e(state.through)} ({state.days} realized days, from {_e(state.started_from)}); market-wide variance "
            f"factor ×{math.exp(state.market_log_scale):.2f}</p>")


def _online_section(view: OnlineView, ticker: str) -> str:
    """A ticker page's online calibration: the state's lineage for the ticker and its quantile offsets."""
    from stockops.model.portable.online_calibration import LEVELS

    t = _e(ticker)
    lineage = view.lineage(ticker)
    if lineage is None:
        return f'<p class="note" id="online-{t}">online calibration: {_e(view.note)}</p>'
    rows = [(_version(lineage["model_version"]), _e(lineage["through"]), _e(lineage["days"]),
             _e(lineage["started_from"]), f'×{lineage["variance_factor"]:.3f} <small>({_e(lineage["scope"])})</small>',
             f'{_e(lineage["ticker_days"])} <small>through {_e(lineage["ticker_through"])}</small>',
             " ".join(f"q{round(level * 100):02d} {offset:+.3f}"
                      for level, offset in zip(LEVELS, lineage["quantile_offsets"], strict=True)))]
    return _table(f"online-{t}", ("version", "through", "days", "started from", "variance factor", "its own days",
                                  "quantile offsets (σ units)"), rows, "")


def _monitor_coverage(settings: Settings) -> dict[str, dict]:
    decision = next((e for e in reversed(audit.read(settings.monitor_log)) if e.get("scorecard")), None)
    return (decision or {}).get("scorecard", {}).get("per_ticker", {}) or {}


def _ticker_section(panel: TickerPanel, scorecard: dict, row: TickerRow | None) -> str:
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
    if row is not None:
        if row.last_close is not None:
            facts.insert(0, f"last close {row.last_close:,.2f} on {_e(row.close_date)}" + (
                f"; forecast σ {row.volatility:.2%} for {_e(row.forecast_for)}" if row.volatility is not None else ""))
        facts.append(f"data: {_e(row.status_label)} ({_e(row.status_detail)})")
        facts.append("drift: " + {True: "<b>drifted</b> in the latest monitor check", False: "none in the latest "
                                  "monitor check", None: "not checked yet"}[row.drifted])
    note = f'<p class="note" id="note-{t}">{_e(panel.note)}</p>' if panel.note else ""
    charts = "".join(f'<img id="{kind}-{t}" class="chart" alt="{t} {label}" src="{uri}">'
                     for kind, label, uri in (("fan", "fan chart", panel.fan_chart),
                                              ("coverage", "coverage over time", panel.coverage_chart)) if uri)
    facts_html = "".join(f"<li>{fact}</li>" for fact in facts)
    return (f'<section class="ticker" id="ticker-{t}" data-source="{panel.source}"><h2>{t}</h2>'
            f"<ul>{facts_html}</ul>{note}<div>{charts}</div></section>")


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;font-size:.9em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.note{color:#8a5a00}.chart{max-width:49%;min-width:420px}.ticker{margin:1em 0}
small,footer{color:#666}""" + TABLE_STYLE


def _html(title: str, body: str, now: datetime, took: float) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<link rel="icon" href="data:,"><style>{STYLE}</style></head><body>\n{body}\n'
            f'<footer>drawn {_e(_iso(now))} in <span id="render-seconds">{took:.2f}</span> s</footer></body></html>\n')


def render_page(settings: Settings, *, user: str, approvals: list[dict] | str | None,
                now: datetime | None = None) -> str:
    """The overview: the table of every ticker (each row links to its page), then the platform's state."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    rows = universe_rows(settings, now)
    waiting = sum(r.status == "held" for r in rows)
    online = online_view(settings, _champion_of(settings, now))
    body = f"""<h1>stockops</h1>
<p>{len(settings.tickers)} tickers; model ticker {_e(settings.ticker)}; signed in as {_e(user)}{
f"; <b>{waiting} waiting for a person</b>" if waiting else ""}</p>
{_online_caption(online)}
{universe_table(rows)}
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
<h2>Links</h2>
{_links(settings)}"""
    return _html("stockops dashboard", body, now, time.perf_counter() - started)


def render_ticker_page(settings: Settings, ticker: str, *, user: str, now: datetime | None = None) -> str | None:
    """One ticker's page: what its row says, its fan chart and coverage plot; None for a ticker not watched."""
    if ticker not in settings.tickers:
        return None
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    row = ticker_row(settings, ticker, now)
    panel = ticker_page_panel(settings, ticker, now)
    online = online_view(settings, _champion_of(settings, now))
    body = (f'<p><a href="../">← all {len(settings.tickers)} tickers</a> · signed in as {_e(user)} · '
            f'<a href="../gx/?ticker={quote(ticker, safe="")}">its validations (GX)</a></p>\n'
            f"{_ticker_section(panel, _monitor_coverage(settings).get(ticker, {}), row)}\n"
            f"<h3>Online calibration</h3>\n{_online_section(online, ticker)}")
    return _html(f"{ticker} · stockops", body, now, time.perf_counter() - started)
