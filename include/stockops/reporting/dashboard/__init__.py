"""The ``/stockops/`` dashboard: what the platform is doing, on one page, from its own records.

Everything comes from files under the stockops home (and, for pending approvals, Airflow's
metadata DB), read when the page is asked for:

* per ticker, from the forecast log (``monitoring/forecasts.jsonl``, the champion's records, one
  per forecast day: the first recorded) and the ticker's latest published snapshot: a **fan chart**
  of the last :data:`~stockops.charts.dashboard.FAN_DAYS` one-day-ahead forecasts (the
  5-95 % and 25-75 % intervals and the median as prices, ``last_close * exp(quantile)``) against
  the closes that followed, and the **coverage over time** of the 50 % and 90 % intervals (rolling
  over :data:`~stockops.charts.dashboard.COVERAGE_WINDOW` realized forecasts);
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

One job per module:

* :mod:`~stockops.reporting.dashboard.panels` — the data: a panel per ticker (kept until its sources
  change), the champion, the latest records;
* :mod:`~stockops.charts.dashboard` — the fan and coverage charts (matplotlib, the SVG data URIs);
* :mod:`~stockops.reporting.dashboard.page` — the HTML page
  (:func:`~stockops.reporting.dashboard.page.render_page`, what the plugin's web app calls).
"""
