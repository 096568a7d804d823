"""The GX Data Docs the plugin serves work offline: every row visible, nothing loaded from another host.

GX's generated pages load their scripts, styles, fonts and logo from seven other hosts and build their
tables with those scripts, so offline they show no row. The plugin serves pages of its own, drawn from
the stored results (``stockops.data.datadocs``). Here two real GX results of the real GOOG series (its first
600 sessions as they are, and with one day's close written ten times too high) are served through the
plugin's app as the api-server mounts it, with tokens Airflow issued; the pages are read over HTTP and
in headless Chromium with JavaScript off, refusing every request that leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import date
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from stockops.core.settings import Settings, get_settings
from stockops.data import datadocs, validation
from stockops.data.sources import shipped_series
from stockops.data.suite import build_expectations
from stockops.data.validation import ValidationReport, validate_prices
from tests.unit.orchestration.test_plugin import airflow_token, plugin_app

CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by `make browser`
N_ROWS = 600  # 2004-08-19 .. 2007-01-05
ROW = 300  # the day whose close is written ten times too high: 2005-10-26
N_EXP = len(build_expectations())  # every expectation of the suite, one row each
HELD_DAY = "2009-04-09"  # BAC's real +35 %, the newest session: held for a person
RUNS = ("BAC-2009-04-09", "GOOG-2007-01-08", "GOOG-2007-01-05")  # newest first
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
PAGE = {"Accept": "text/html,application/xhtml+xml"}  # what a browser sends for a page
URL_ATTRIBUTES = {"src", "href", "action", "formaction", "poster", "data", "srcset", "background", "cite", "manifest"}


@dataclass(frozen=True)
class Docs:
    settings: Settings
    good: ValidationReport
    bad: ValidationReport
    held: ValidationReport
    bad_day: str
    bad_close: float  # the tenfold close on bad_day


@pytest.fixture(scope="module")
def docs(tmp_path_factory, goog) -> Docs:
    """A home with three real GX results: GOOG's real series (passed), the same with one tenfold close
    (failed), and BAC up to its real +35 % of 2009-04-09 (held: no later session confirms it yet)."""
    real = goog.iloc[:N_ROWS].reset_index(drop=True)
    bad = real.copy()
    bad.loc[ROW, "Close"] = real.loc[ROW, "Close"] * 10
    reference = real["Date"].iloc[-1].date()
    bac = shipped_series("BAC")
    bac = bac[bac["Date"] <= HELD_DAY].iloc[-N_ROWS:].reset_index(drop=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STOCKOPS_HOME", str(tmp_path_factory.mktemp("datadocs") / "home"))
        settings = get_settings()
        good = validate_prices(real, reference, settings, run_name="GOOG-2007-01-05", ticker="GOOG")
        refused = validate_prices(bad, reference, settings, run_name="GOOG-2007-01-08", ticker="GOOG")
        held = validate_prices(bac, date.fromisoformat(HELD_DAY), settings, run_name=f"BAC-{HELD_DAY}", ticker="BAC")
        assert good.success and refused.failed and held.held_for_review, (refused.summary(), held.summary())
        yield Docs(settings, good, refused, held, str(real.loc[ROW, "Date"].date()), float(bad.loc[ROW, "Close"]))


@pytest.fixture(scope="module")
def app(docs, airflow_db):
    return plugin_app()


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {airflow_token()}"}) as http:
        yield http


def stored_results(settings: Settings) -> dict[str, dict]:
    """The result files GX wrote, by run name."""
    return {json.loads(p.read_text())["meta"]["run_id"]["run_name"]: json.loads(p.read_text())
            for p in datadocs.result_files(settings)}


# ---- reading pages -----------------------------------------------------------------------------


class Page(HTMLParser):
    """Every URL a page names (attributes, inline styles, <style>), its tables' body cells, its scripts."""

    def __init__(self, text: str):
        super().__init__()
        self.urls: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.scripts = 0
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_style = False
        self._in_body = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and name in URL_ATTRIBUTES:
                self.urls += [part.split()[0] for part in value.split(",")] if name == "srcset" else [value]
            if value and name == "style":
                self.urls += css_urls(value)
            if value and name == "content" and "url=" in value.lower():  # <meta http-equiv="refresh">
                self.urls.append(value.lower().split("url=", 1)[1])
        self.scripts += tag == "script"
        if self._cell is not None and tag in ("br", "li"):  # what a browser shows as a line break
            self._cell.append(" ")
        self._in_style = tag == "style"
        if tag == "table":
            self._table = dict(attrs).get("id") or str(len(self.tables))
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._table is not None and self._in_body:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.urls += css_urls(data)
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table: str) -> list[list[str]]:
        """The cell texts of each row in the body of the table with this id."""
        return self.tables[table]


def css_urls(css: str) -> list[str]:
    return re.findall(r"""url\(\s*['"]?([^'")\s]+)""", css) + re.findall(r"""@import\s+['"]([^'"]+)""", css)


def offsite(urls: list[str], base: str = "http://127.0.0.1/stockops/gx/") -> list[str]:
    """The URLs that point to a host other than this one (protocol-relative ``//host`` included)."""
    found = []
    for url in urls:
        parts = urlsplit(urljoin(base, url.strip()))
        if parts.scheme in ("javascript", "data") and not url.startswith("data:image/"):
            found.append(url)
        elif parts.scheme in ("http", "https", "ws", "wss", "ftp") and parts.hostname not in LOCAL_HOSTS:
            found.append(url)
    return found


def crawl(client, start: str = "/stockops/gx/") -> dict[str, str]:
    """Every page reachable from ``start`` under /stockops/gx/, by URL, each served 200 as HTML."""
    pages: dict[str, str] = {}
    queue = [start]
    while queue:
        url = queue.pop()
        path = urlsplit(url).path
        if url in pages or not path.startswith("/stockops/gx/"):
            continue
        answer = client.get(url)
        assert answer.status_code == 200, (url, answer.status_code, answer.text[:200])
        if not answer.headers["content-type"].startswith("text/html"):
            continue
        pages[url] = answer.text
        queue += [urljoin(f"http://127.0.0.1{url}", link).removeprefix("http://127.0.0.1")
                  for link in Page(answer.text).urls if not offsite([link])]
    return pages


# ---- the pages -----------------------------------------------------------------------------


def test_the_outcome_words_are_the_validation_gates():
    assert (datadocs.PASSED, datadocs.HELD, datadocs.FAILED) == (validation.PASSED, validation.HELD, validation.FAILED)


def test_the_index_lists_each_result_with_its_outcome_and_offending_dates(client, docs):
    answer = client.get("/stockops/gx/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert client.get("/stockops/gx/index.html").text == answer.text
    bare = client.get("/stockops/gx", follow_redirects=False)  # the pages' relative links need the slash
    assert bare.is_redirect and bare.headers["location"].endswith("/stockops/gx/")
    rows = Page(answer.text).rows("results")
    assert [(row[1], row[2]) for row in rows] == list(zip(RUNS, ("held", "failed", "passed"), strict=True))
    held, failed, passed = rows
    assert (held[3], failed[3], passed[3]) == (f"{N_EXP - 1} of {N_EXP} passed",
                                               f"{N_EXP - len(docs.bad.failures)} of {N_EXP} passed",
                                               f"{N_EXP} of {N_EXP} passed")
    assert failed[4] == passed[4] == held[4] == str(N_ROWS)
    for failure in docs.bad.failures:  # what the ingest reports: the same columns and dates
        assert failure.column.split(" vs ")[0] in failed[5], failure.column
        for day in failure.offending_dates:
            assert day in failed[5]
    assert docs.bad_day in failed[5] and passed[5] == ""
    assert held[5].startswith("operator_review ") and "(warning)" in held[5] and f"rows BAC {HELD_DAY}" in held[5]
    narrowed = Page(client.get("/stockops/gx/?ticker=GOOG").text).rows("results")
    assert [row[1] for row in narrowed] == list(RUNS[1:])
    assert Page(client.get("/stockops/gx/?ticker=MSFT").text).rows("results") == [["no result of this ticker is kept"]]


def test_a_result_page_shows_every_expectation_its_observed_value_and_offending_rows(client, docs):
    index = Page(client.get("/stockops/gx/").text)
    links = [url for url in index.urls if url.startswith("validations/")]
    assert [link.split("/")[2] for link in links] == list(RUNS)
    stored = stored_results(docs.settings)
    pages = {}
    for link, run_name in zip(links, RUNS, strict=True):
        answer = client.get(f"/stockops/gx/{link}")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        page = pages[run_name] = Page(answer.text)
        rows = page.rows("expectations")
        results = stored[run_name]["results"]
        assert len(rows) == len(results) == N_EXP, run_name  # every expectation, one row each
        outcomes = sorted("passed" if r["success"] else r["expectation_config"]["severity"].replace("critical", "failed")
                          for r in results)
        assert sorted(row[1] for row in rows) == outcomes
        assert rows == sorted(rows, key=lambda row: row[1] == "passed")  # what failed first
        shown = {(row[2].split()[0], row[3]) for row in rows}
        for result in results:
            kwargs = result["expectation_config"]["kwargs"]
            column = kwargs.get("column") or (f"{kwargs['column_A']} vs {kwargs['column_B']}" if "column_A" in kwargs
                                              else "—")
            assert (result["expectation_config"]["type"], column) in shown
        assert next(row[5] for row in rows if row[2].startswith("expect_table_row_count")) == str(N_ROWS)
        assert "float64" in {row[5] for row in rows if row[3] == "Close"}
        assert dict(page.rows("summary"))["rows judged"] == str(N_ROWS)
        raw = client.get(f"/stockops/gx/{link.removesuffix('.html')}.json")
        assert raw.headers["content-type"] == "application/json" and raw.json()["results"] == results

    good = pages["GOOG-2007-01-05"]
    assert dict(good.rows("summary"))["outcome"] == f"passed: all {N_EXP} expectations passed"
    assert all(row[6] == "" for row in good.rows("expectations"))

    bad = pages["GOOG-2007-01-08"]
    assert dict(bad.rows("summary"))["outcome"] == f"failed: {len(docs.bad.failures)} of {N_EXP} expectations failed"
    failed = [row for row in bad.rows("expectations") if row[1] == "failed"]
    high = next(row for row in failed if row[3] == "close_outside_range")  # the tenfold close above the High
    assert high[5].startswith("1 of 600 rows unexpected")
    assert high[6].startswith(f"GOOG {docs.bad_day}: close_outside_range=")
    assert float(high[6].split("=")[1]) > 2, "log(Close / High): about log(10)"
    for failure in docs.bad.failures:
        row = next(row for row in failed if row[3] == failure.column)
        assert all(day in row[6] for day in failure.offending_dates), (failure.column, row[6])
    assert "null (not judged)" in next(row[5] for row in failed if row[3] == "extreme_range_share")

    held = pages[f"BAC-{HELD_DAY}"]
    assert dict(held.rows("summary"))["outcome"] == f"held: 1 of {N_EXP} expectations failed, a warning: a person decides"
    (warning,) = [row for row in held.rows("expectations") if row[1] != "passed"]
    assert (warning[1], warning[3], warning[6]) == ("warning", "operator_review",
                                                    f"BAC {HELD_DAY}: operator_review=awaiting_decision")


def test_no_served_page_names_another_host(client, docs):
    pages = crawl(client)
    results = {f"/stockops/gx/validations/{p.relative_to(datadocs.results_dir(docs.settings)).with_suffix('.html')}"
               for p in datadocs.result_files(docs.settings)}
    assert set(pages) == {"/stockops/gx/", "/stockops/gx/?ticker=BAC", "/stockops/gx/?ticker=GOOG"} | results
    for url, text in pages.items():
        page = Page(text)
        assert page.urls, url
        assert offsite(page.urls) == [], url
        assert page.scripts == 0, url  # the rows are in the HTML: no script of any origin needed
        assert "dataContextId" not in text and "googletagmanager" not in text, url
        policy = client.get(url).headers["content-security-policy"]
        assert "default-src 'none'" in policy and "http" not in policy
    # the check finds what GX's own pages load from elsewhere; none of GX's files is served: its
    # pages' addresses answer with ours, its styles, fonts and images are not there
    generated = (docs.settings.data_docs_dir / "index.html").read_text()
    hosts = {urlsplit(u).hostname for u in offsite(Page(generated).urls)}
    assert {"code.jquery.com", "cdn.jsdelivr.net", "unpkg.com"} <= hosts
    files = [p for p in docs.settings.data_docs_dir.rglob("*") if p.is_file()]
    assert len(files) > 20
    for path in files:
        url = f"/stockops/gx/{path.relative_to(docs.settings.data_docs_dir).as_posix()}"
        if url in pages or url == "/stockops/gx/index.html":
            assert offsite(Page(client.get(url).text).urls) == [] and offsite(Page(path.read_text()).urls), url
        else:
            assert client.get(url).status_code == 404, url


def test_paths_outside_the_results_are_refused(client, docs, tmp_path):
    secret = tmp_path / "secret.json"  # beside the home, not in it
    stored = json.loads(datadocs.result_files(docs.settings)[0].read_text())
    stored["results"][0]["expectation_config"]["description"] = "TOP SECRET"
    secret.write_text(json.dumps(stored))
    link = datadocs.results_dir(docs.settings) / "stock_prices" / "GOOG-2007-01-09" / "20300101T000000Z" / "leak.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    try:
        up = "../" * 9
        for path in (f"validations/{up}{secret.name}", f"validations/{up.replace('/', '%2F')}{secret.name}",
                     f"validations/{up}{secret.with_suffix('.html').name}",
                     "validations/stock_prices/GOOG-2007-01-09/20300101T000000Z/leak.html",
                     "validations/stock_prices/GOOG-2007-01-09/20300101T000000Z/leak.json",
                     "validations/stock_prices/GOOG-2007-01-05/nothing.html", "validations/.ge_store_backend_id"):
            answer = client.get(f"/stockops/gx/{path}")
            assert answer.status_code == 404, path
            assert "TOP SECRET" not in answer.text
        index = client.get("/stockops/gx/").text
        assert "TOP SECRET" not in index
        assert Page(index).rows("results")[0][:3] == ["2030-01-01 00:00:00", "GOOG-2007-01-09", "unreadable"]
    finally:
        shutil.rmtree(link.parent)


def test_no_results_yet_is_the_same_404(app, settings):
    from fastapi.testclient import TestClient

    settings.data_docs_dir.mkdir(parents=True)  # GX's own pages without a result: nothing to draw
    (settings.data_docs_dir / "index.html").write_text("<html>GX Data Docs index</html>")
    with TestClient(app, headers={"Authorization": f"Bearer {airflow_token()}"}) as http:
        for path in ("/stockops/gx/", "/stockops/gx/index.html", "/stockops/gx/validations/a/b/c/d.html"):
            answer = http.get(path)
            assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/plain"), path
            assert answer.text == ("No Great Expectations Data Docs yet: stock_ingest builds them when it "
                                   "validates a snapshot.\n")


def test_result_pages_are_behind_airflows_login(app, client, docs):
    from airflow.api_fastapi.app import get_auth_manager
    from fastapi.testclient import TestClient

    link = next(url for url in Page(client.get("/stockops/gx/").text).urls if url.startswith("validations/"))
    with TestClient(app) as anonymous:
        for path in (f"/stockops/gx/{link}", f"/stockops/gx/{link.removesuffix('.html')}.json", "/stockops/gx/"):
            answer = anonymous.get(path, follow_redirects=False)
            assert answer.status_code == 401 and "GOOG" not in answer.text, path
            page = anonymous.get(path, headers=PAGE, follow_redirects=False)
            assert page.status_code == 307 and page.headers["location"] == get_auth_manager().get_url_login(
                next_url=path)


# ---- in a browser --------------------------------------------------------------------------


@pytest.fixture
def server(app):
    """The app on a real socket on 127.0.0.1 (uvicorn in a thread); yields its base URL."""
    import uvicorn

    from stockops.core.processes import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_the_pages_show_their_rows_in_a_browser_offline(server, docs):
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make browser` installs Debian's chromium"
    requested: list[str] = []
    refused: list[str] = []

    def only_loopback(route) -> None:
        url = route.request.url
        requested.append(url)
        if urlsplit(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # no script runs: the rows must be in the page itself
            context = browser.new_context(java_script_enabled=False,
                                          extra_http_headers={"Authorization": f"Bearer {airflow_token()}"})
            context.route("**/*", only_loopback)
            page = context.new_page()
            answer = page.goto(f"{server}/stockops/gx/")
            assert answer is not None and answer.status == 200
            results = page.locator("#results tbody tr")
            assert results.count() == len(RUNS) and results.first.is_visible()
            assert page.get_by_text(docs.bad_day).first.is_visible()

            page.click("text=GOOG-2007-01-08")
            page.wait_for_url(re.compile(r".*/validations/stock_prices/GOOG-2007-01-08/.*\.html$"))
            rows = page.locator("#expectations tbody tr")
            assert rows.count() == N_EXP
            failed = page.locator("#expectations tbody tr.failed")
            assert failed.count() == len(docs.bad.failures)
            for i in range(failed.count()):
                assert failed.nth(i).is_visible() and docs.bad_day[:7] in failed.nth(i).inner_text()
            assert page.get_by_text(f"GOOG {docs.bad_day}: close_outside_range=").is_visible()
            assert rows.last.is_visible()  # passed ones too

            page.click("text=all validation results")
            page.wait_for_url(f"{server}/stockops/gx/")
            page.click("text=GOOG-2007-01-05")
            assert page.locator("#expectations tbody tr.passed").count() == N_EXP
            assert page.get_by_text(f"all {N_EXP} expectations passed").is_visible()
            context.close()
            assert refused == []
            assert requested and {urlsplit(url).hostname for url in requested} == {"127.0.0.1"}

            # the same guard catches what GX's own index would load (scripts on, as GX needs them)
            control = browser.new_context()
            control.route("**/*", only_loopback)
            control.new_page().set_content((docs.settings.data_docs_dir / "index.html").read_text())
            assert {"code.jquery.com", "cdn.jsdelivr.net", "unpkg.com"} <= {urlsplit(u).hostname for u in refused}
        finally:
            browser.close()

