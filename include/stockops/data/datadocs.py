"""The GX Data Docs the platform serves: pages of its own, drawn from the stored validation results.

Great Expectations' own Data Docs (``Settings.data_docs_dir``) load jQuery, Bootstrap, bootstrap-table,
Font Awesome, vega and a logo carrying the data context's id from seven other hosts, and build their
tables with those scripts: offline they show no row at all. These pages are drawn on the server from
the result files GX stores (``<gx_work_dir>/gx/uncommitted/validations/<suite>/<run>/<time>/<batch>.json``,
pruned with ``STOCKOPS_GX_KEEP_RESULTS``), with no script and nothing loaded from anywhere:

- the index lists every kept result, newest first (``?ticker=GOOG`` narrows it), with its outcome and
  each failed expectation's offending dates;
- a result page shows every expectation with its outcome, what it expected, the observed value and the
  offending rows GX recorded (date and value).

The addresses are GX's own (``index.html``, ``validations/<suite>/<run>/<time>/<batch>.html``); the
``.json`` beside a page is the result file itself. Standard library only (and the blob store with a remote
one): the api-server imports this on the first Data Docs request.

**On several hosts** (a remote blob store, ``STOCKOPS_BLOB_URL``): the worker that validates puts each new result
under ``gx/validations/`` of the blob store (:func:`share_results`, pruned to the same ``STOCKOPS_GX_KEEP_RESULTS``),
and the pages are drawn from a mirror of those in the blob cache (:func:`result_files` brings it up to date), so
the api-server's host shows every worker's results, not only its own.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from stockops.core.settings import Settings

# a result's outcome: the words of stockops.data.validation (a test holds them equal); an expectation's
# outcome is passed, failed or warning (a failed warning-severity expectation: the result is held)
PASSED, HELD, FAILED = "passed", "held", "failed"
WARNING = "warning"
UNREADABLE = "unreadable"  # a result file that is not (yet) a whole GX result

PAGES = "validations"  # the pages' folder in the URL, as in GX's Data Docs
INDEX_DATES = 10  # offending rows (ticker and date) shown per failed expectation on the index
PAGE_ROWS = 200  # offending rows shown per expectation on a result page (the JSON has them all)
RUN_NAME = re.compile(r"^(?P<ticker>.+)-\d{4}-\d{2}-\d{2}$")  # <TICKER>-<day>, a chunk <FIRST>..<LAST>-<day>
RUN_TIME = re.compile(r"^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)")
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; "
                           "form-action 'none'")  # what a browser may load for these pages: nothing from elsewhere


@dataclass(frozen=True)
class Finding:
    """One expectation's outcome in one result, as the pages show it (values already written out)."""

    expectation: str  # GX's type, e.g. expect_column_values_to_be_between
    column: str | None
    description: str
    severity: str  # critical | warning
    outcome: str  # passed | failed | warning
    expected: str  # the expectation's arguments, e.g. "min_value=0.15"
    observed: str
    offending: tuple[str, ...]  # at most PAGE_ROWS rows: "2005-10-26: extreme_range_share=0.0120088"
    offending_count: int  # rows GX counted as unexpected (may be more than ``offending``)
    error: str | None = None


@dataclass(frozen=True)
class Result:
    """One stored GX validation result."""

    page: str  # its address under the Data Docs: validations/<suite>/<run>/<time>/<batch>.html
    run_name: str
    ticker: str | None
    suite: str
    validated_at: str
    gx_version: str
    outcome: str  # passed | held | failed | unreadable
    rows: int | None  # rows judged (the row-count expectation's observed value)
    findings: tuple[Finding, ...]
    error: str | None = None

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.outcome != PASSED]


SHARED = "gx/validations/"  # the results' keys in a remote blob store (every host's)
RESULT_GLOB = "*/*/*/*.json"  # <suite>/<run>/<time>/<batch>.json


def gx_results_dir(settings: Settings) -> Path:
    """Where GX stores the validation results of the runtime project on this host."""
    return settings.gx_work_dir / "gx" / "uncommitted" / "validations"


def results_dir(settings: Settings) -> Path:
    """Where the results the pages show are read: GX's own folder, or with a remote blob store the mirror of every
    host's results."""
    return settings.blob_cache_dir / "gx-validations" if settings.blob_url else gx_results_dir(settings)


def _newest_first(paths, key=lambda p: p.parent.name) -> list:
    return sorted(paths, key=key, reverse=True)


def result_files(settings: Settings) -> list[Path]:
    """Every stored result file, newest first (by its run-time folder, as ``prune_results`` orders them)."""
    if settings.blob_url:
        _mirror(settings)
    return _newest_first(results_dir(settings).glob(RESULT_GLOB))


def share_results(settings: Settings, written: list[Path]) -> None:
    """Put results this host's GX run wrote into the remote blob store; keep the newest
    ``STOCKOPS_GX_KEEP_RESULTS`` there."""
    from stockops.storage import blob_store

    store, root = blob_store(settings), gx_results_dir(settings)
    for path in written:
        store.put(SHARED + path.relative_to(root).as_posix(), path.read_bytes())
    keys = _newest_first(store.keys(SHARED), key=lambda k: k.rsplit("/", 2)[-2])
    for key in keys[max(0, settings.gx_keep_results):]:
        store.delete(key)


def _mirror(settings: Settings) -> None:
    """Bring the local mirror of the shared results up to date (a result is written once: fetched once)."""
    from stockops.storage import blob_store
    from stockops.storage.files import atomic_write_bytes

    store, mirror = blob_store(settings), results_dir(settings)
    wanted = {mirror / key[len(SHARED):]: key for key in store.keys(SHARED) if key.endswith(".json")}
    for target, key in wanted.items():
        if not target.exists():
            atomic_write_bytes(target, store.get(key))
    for path in mirror.glob(RESULT_GLOB):
        if path not in wanted:
            path.unlink(missing_ok=True)


def result_file(settings: Settings, page: str) -> Path | None:
    """The result file behind ``page`` (``validations/…/<batch>.html`` or its ``.json``), or None.

    None unless it is a file that, symlinks resolved, lies under :func:`results_dir`.
    """
    root = results_dir(settings)
    relative = page.removeprefix(PAGES + "/")
    if relative == page or not relative.endswith((".html", ".json")):
        return None
    try:
        resolved = (root / relative).with_suffix(".json").resolve(strict=True)
        inside = resolved.is_relative_to(root.resolve(strict=True))
    except (OSError, RuntimeError, ValueError):
        return None
    return resolved if inside and resolved.is_file() else None


def read_result(settings: Settings, path: Path) -> Result:
    """The result stored at ``path`` (``<suite>/<run>/<time>/<batch>.json`` under :func:`results_dir`).

    Parsed once per version of the file; one that, symlinks resolved, lies outside the results folder
    is not read (it shows as unreadable).
    """
    page = f"{PAGES}/" + Path(*path.parts[-4:]).with_suffix(".html").as_posix()
    try:
        resolved = path.resolve(strict=True)
        if not resolved.is_relative_to(results_dir(settings).resolve(strict=True)):
            return _unreadable(path, page, "it lies outside the results folder")
        stat = resolved.stat()
    except (OSError, RuntimeError) as exc:
        return _unreadable(path, page, f"{type(exc).__name__}: {exc}")
    return _parsed(str(resolved), page, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=1024)
def _parsed(path: str, page: str, mtime_ns: int, size: int) -> Result:
    """A result file is written once; its (path, mtime, size) names one version."""
    try:
        data = json.loads(Path(path).read_text())
        return _result(data, page)
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        return _unreadable(Path(path), page, f"{type(exc).__name__}: {exc}")


def _unreadable(path: Path, page: str, error: str) -> Result:
    run_name = path.parent.parent.name
    run_time = RUN_TIME.match(path.parent.name)  # GX names the folder after the run time: 20261204T040345.01Z
    return Result(page=page, run_name=run_name, ticker=_ticker(run_name), suite=path.parent.parent.parent.name,
                  validated_at="{}-{}-{}T{}:{}:{}".format(*run_time.groups()) if run_time else path.parent.name,
                  gx_version="", outcome=UNREADABLE, rows=None, findings=(), error=error)


def _ticker(run_name: str) -> str | None:
    match = RUN_NAME.match(run_name)
    return match["ticker"] if match else None


def _result(data: dict, page: str) -> Result:
    meta = data.get("meta") or {}
    run_id = meta.get("run_id") or {}
    run_name = str(run_id.get("run_name") or Path(page).parent.parent.name)
    findings = [_finding(entry) for entry in data["results"]]
    # failures first (in the order GX stored them), then what passed
    findings.sort(key=lambda f: f.outcome == PASSED)
    outcomes = {f.outcome for f in findings}
    outcome = (FAILED if FAILED in outcomes or (not findings and not data.get("success")) else
               HELD if WARNING in outcomes else PASSED)
    rows = next((f.observed for f in findings if f.expectation == "expect_table_row_count_to_be_between"), None)
    return Result(page=page, run_name=run_name, ticker=_ticker(run_name), suite=str(data.get("suite_name") or ""),
                  validated_at=str(meta.get("validation_time") or run_id.get("run_time") or ""),
                  gx_version=str(meta.get("great_expectations_version") or ""), outcome=outcome,
                  rows=int(rows) if rows and rows.isdigit() else None, findings=tuple(findings))


def _finding(entry: dict) -> Finding:
    config = entry.get("expectation_config") or {}
    arguments = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
    column = arguments.pop("column", None)
    if column is None and "column_A" in arguments:
        column = f"{arguments.pop('column_A')} vs {arguments.pop('column_B', '?')}"
    result = entry.get("result") or {}
    severity = str(config.get("severity") or "critical")
    outcome = PASSED if entry.get("success") else WARNING if severity == "warning" else FAILED
    offending, count = _offending(result)
    return Finding(expectation=str(config.get("type") or "?"), column=None if column is None else str(column),
                   description=str(config.get("description") or ""), severity=severity, outcome=outcome,
                   expected=", ".join(f"{k}={_value(v)}" for k, v in arguments.items()),
                   observed=_observed(result), offending=offending, offending_count=count,
                   error=_error(entry.get("exception_info")))


def _error(info: Any) -> str | None:
    """The first line of the exception GX caught (``exception_info`` is one record, or one per metric)."""
    if not isinstance(info, dict):
        return None
    records = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for record in records:
        if record.get("raised_exception"):
            return (str(record.get("exception_message") or "error").splitlines() or ["error"])[0][:300]
    return None


def _observed(result: dict) -> str:
    if "observed_value" in result:
        return _value(result["observed_value"])
    if "unexpected_count" in result:
        text = f"{result['unexpected_count']} of {result.get('element_count', '?')} rows unexpected"
        if result.get("unexpected_percent"):
            text += f" ({_value(result['unexpected_percent'])} % of the non-null)"
        if result.get("missing_count"):
            text += f"; {result['missing_count']} null (not judged)"
        return text
    return "—"


def _offending(result: dict) -> tuple[tuple[str, ...], int]:
    """The rows GX recorded as unexpected, each as "<Date>: <column>=<value>", and how many there were."""
    rows = result.get("unexpected_index_list") or result.get("partial_unexpected_index_list")
    keys = result.get("unexpected_index_column_names") or []
    if rows:
        items = [_row(row, keys) for row in rows[:PAGE_ROWS]]
        total = max(len(rows), int(result.get("unexpected_count") or 0))
    else:
        values = result.get("unexpected_list") or result.get("partial_unexpected_list") or []
        items = [_value(v) for v in values[:PAGE_ROWS]]
        total = max(len(values), int(result.get("unexpected_count") or 0))
    return tuple(items), total


def _row(row: Any, keys: list[str]) -> str:
    if not isinstance(row, dict):
        return f"row {_value(row)}"
    where = " ".join(_value(row[k]) for k in keys if k in row)
    values = ", ".join(f"{k}={_value(v)}" for k, v in row.items() if k not in keys)
    return f"{where}: {values}" if where and values else where or values


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value.removesuffix("T00:00:00")  # a day, as GX writes a pandas Timestamp
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


# ---- the pages ---------------------------------------------------------------------------------

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;font-size:.9em;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.passed{color:#17612b}td.failed{color:#a11}td.warning,td.held,td.unreadable{color:#8a5a00}tr.failed td{background:#fff1f0}
tr.warning td{background:#fff8e6}small,footer,.note{color:#666}ul.rows{margin:0;padding-left:1.1em}code{font-size:.95em}"""


def _e(value: Any) -> str:
    return html.escape("—" if value is None or value == "" else str(value))


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def _dates(finding: Finding, limit: int) -> str:
    shown = [row.split(": ")[0] for row in finding.offending[:limit]]
    more = finding.offending_count - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def render_index(settings: Settings, ticker: str | None = None) -> str | None:
    """The index page (``ticker`` narrows it to one ticker's runs); None while no result is stored."""
    results = [read_result(settings, path) for path in result_files(settings)]
    if not results:
        return None
    tickers = sorted({r.ticker for r in results if r.ticker})
    shown = [r for r in results if not ticker or r.ticker == ticker]
    counts = {o: sum(r.outcome == o for r in shown) for o in (PASSED, HELD, FAILED, UNREADABLE)}
    filters = " · ".join(['<a href="./">all</a>'] + [f'<a href="?ticker={quote(t)}">{_e(t)}</a>' for t in tickers])
    rows = []
    for r in shown:
        failed = "".join(
            f"<li><code>{_e(f.column or f.expectation)}</code> {_e(f.expectation)}"
            f"{' (warning)' if f.outcome == WARNING else ''}: {_e(f.observed)}"
            + (f"; rows {_e(_dates(f, INDEX_DATES))}" if f.offending else "")
            + (f"; could not be evaluated: {_e(f.error)}" if f.error else "") + "</li>" for f in r.failed)
        what = f'<ul class="rows">{failed}</ul>' if failed else _e(r.error) if r.error else ""
        evaluated = f"{len(r.findings) - len(r.failed)} of {len(r.findings)} passed" if r.findings else "—"
        rows.append(f'<tr class="result {r.outcome}"><td>{_e(r.validated_at[:19].replace("T", " "))}</td>'
                    f'<td><a href="{_e(quote(r.page))}">{_e(r.run_name)}</a></td><td class="{r.outcome}">{r.outcome}</td>'
                    f"<td>{evaluated}</td><td>{_e(r.rows)}</td><td>{what}</td></tr>")
    summary = ", ".join(f"{n} {o}" for o, n in counts.items() if n) or "none"
    body = f"""<h1>Data Docs: validation results</h1>
<p>{len(shown)} result(s){f' of {_e(ticker)}' if ticker else ''}, newest first: {summary}. The newest
{settings.gx_keep_results} are kept (<code>STOCKOPS_GX_KEEP_RESULTS</code>); every validation's report is also in
<code>data/&lt;TICKER&gt;/validations/</code>.</p>
<p>Ticker: {filters}</p>
<table id="results"><thead><tr><th>validated at (UTC)</th><th>run</th><th>outcome</th><th>expectations</th>
<th>rows judged</th><th>what failed: observed, offending rows</th></tr></thead><tbody>
{chr(10).join(rows) or '<tr><td class="note" colspan="6">no result of this ticker is kept</td></tr>'}
</tbody></table>"""
    return _page("Data Docs: validation results", body)


def render_result(result: Result) -> str:
    """One result's page: every expectation with its outcome, observed value and offending rows."""
    up = "../" * result.page.count("/")  # back to the index from validations/<suite>/<run>/<time>/
    rows = []
    for number, f in enumerate(result.findings, 1):
        offending = "".join(f"<li>{_e(row)}</li>" for row in f.offending)
        if f.offending_count > len(f.offending):
            offending += f"<li>… and {f.offending_count - len(f.offending)} more (in the JSON)</li>"
        rows.append(
            f'<tr class="expectation {f.outcome}"><td>{number}</td><td class="{f.outcome}">{f.outcome}</td>'
            f"<td><code>{_e(f.expectation)}</code><br><small>{_e(f.severity)}</small></td><td>{_e(f.column)}</td>"
            f"<td>{_e(f.description)}<br><small>{_e(f.expected)}</small></td>"
            f"<td>{_e(f.observed)}{f'<br>could not be evaluated: {_e(f.error)}' if f.error else ''}</td>"
            f'<td>{f"<ul class=rows>{offending}</ul>" if offending else ""}</td></tr>')
    failed = len(result.failed)
    verdict = (f"could not be read: {_e(result.error)}" if result.error else
               f"{failed} of {len(result.findings)} expectations failed, a warning: a person decides"
               if result.outcome == HELD else
               f"{failed} of {len(result.findings)} expectations failed" if failed else
               f"all {len(result.findings)} expectations passed")
    body = f"""<p><a href="{up}">← all validation results</a></p>
<h1>{_e(result.run_name)}</h1>
<table id="summary"><tbody>
<tr><th>outcome</th><td class="{result.outcome}">{result.outcome}: {verdict}</td></tr>
<tr><th>rows judged</th><td>{_e(result.rows)}</td></tr>
<tr><th>validated at (UTC)</th><td>{_e(result.validated_at)}</td></tr>
<tr><th>suite</th><td>{_e(result.suite)}</td></tr>
<tr><th>Great Expectations</th><td>{_e(result.gx_version)}</td></tr>
<tr><th>stored result</th><td><a href="{_e(quote(Path(result.page).with_suffix('.json').name))}">JSON</a></td></tr>
</tbody></table>
<table id="expectations"><thead><tr><th>#</th><th>outcome</th><th>expectation</th><th>column</th>
<th>expected</th><th>observed</th><th>offending rows</th></tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>"""
    return _page(f"{result.run_name}: validation result", body)
