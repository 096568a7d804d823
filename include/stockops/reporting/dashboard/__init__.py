"""The ``/stockops/`` dashboard: what the platform is doing, from its own records, for a universe of any size.

Everything comes from files under the stockops home (and, for pending approvals, Airflow's
metadata DB), read when a page is asked for.

The **overview** (``/stockops/``) opens on one table of every watchlist ticker: its last published close, the
newest forecast's volatility and 90 % interval, the realized coverage of the 90 % intervals over the last
:data:`~stockops.charts.dashboard.FAN_DAYS` forecast days, the champion's online calibration's variance factor on
it (the state the monitor keeps and the bento applies; the line above the table names its version and last day),
the latest monitor check's drift verdict, its data status (published, quarantined, waiting for a person), and a
sparkline of its recent closes inside the forecasts' band; searchable and sortable in the browser (one small inline script, allowed by its hash in the page's
Content-Security-Policy). Below it: the **champion** (its version and age: the last promotion, rollback or
reconciliation in the audit log) and the **latest gate decision** (the last ``gate`` event there); **pending
approvals** (Airflow's human-in-the-loop requests still waiting); the **latest monitor decision**
(``monitoring/decisions.jsonl``); the **DORA measures** with the serving **incidents**
(:func:`stockops.reporting.dora.report`, computed now); the links to the tools around Airflow.

A **ticker's page** (``/stockops/ticker/<TICKER>``, a click on its row) draws, from the forecast log (the
champion's records, one per forecast day: the first recorded) and its latest published snapshot, a **fan chart**
of the last :data:`~stockops.charts.dashboard.FAN_DAYS` one-day-ahead forecasts (the 5-95 % and 25-75 % intervals
and the median as prices, ``last_close * exp(quantile)``) against the closes that followed, and the **coverage
over time** of the 50 % and 90 % intervals (rolling over :data:`~stockops.charts.dashboard.COVERAGE_WINDOW`
realized forecasts), and the **online calibration**'s lineage for it (version, last day, days, variance factor,
quantile offsets). Before any of the platform's own forecasts is realized (day one, or a new champion's first
day), it shows the champion's **holdout forecasts** instead, from its evaluation
(``evaluation/v<version>.parquet``: the days it was judged on and never fitted on), and says so; so does the
overview's coverage column.

Missing data never breaks a page: a ticker without forecasts or a snapshot shows a dash (its page says why), a
chart of one forecast draws it as a bar, coverage is drawn once enough forecasts are realized (else the page says
how many are), a torn line of a log is skipped (:func:`stockops.core.audit.read`). Nothing is fetched from
elsewhere: the charts are inline SVG (the overview's written as markup, a ticker page's drawn with matplotlib as
``data:`` URIs). The overview's rows are kept until one of their sources changes (file stamps, snapshot hashes),
a ticker page's charts likewise. Imported by the plugin's web app when a page is asked for.

One job per module:

* :mod:`~stockops.reporting.dashboard.universe` — the overview's data: a row per ticker gathered in one pass over
  cheap records (the forecast log parsed once per change, each snapshot's last closes, the ingest statuses, the monitor's
  drift), and a ticker page's charts from the same records;
* :mod:`~stockops.reporting.dashboard.panels` — a ticker's panel (its forecasts as prices against its closes, their
  coverage, its charts), the champion, the latest records;
* :mod:`~stockops.charts.dashboard` — the fan and coverage charts (matplotlib, the SVG data URIs) and the sparklines;
* :mod:`~stockops.reporting.dashboard.online` — the online calibration state, read directly (missing, unreadable
  or another version's: the pages say so);
* :mod:`~stockops.reporting.dashboard.table` — the overview's table as HTML, its script and the page's
  Content-Security-Policy;
* :mod:`~stockops.reporting.dashboard.page` — the pages (:func:`~stockops.reporting.dashboard.page.render_page`,
  :func:`~stockops.reporting.dashboard.page.render_ticker_page`: what the plugin's web app calls).
"""
