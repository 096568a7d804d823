"""Every figure stockops draws, in one place: matplotlib's object API (``Figure``, no pyplot: no GUI backend, no
global figure list, safe in the api-server's threads), imported when drawing.

* :mod:`~stockops.charts.training` — the training run's figures logged to MLflow (holdout fan chart, calibration,
  QLIKE by ticker, the learning curve);
* :mod:`~stockops.charts.dashboard` — the dashboard's SVG charts (a ticker's fan chart, rolling coverage);
* :mod:`~stockops.charts.dora` — the DORA report's PNG.

Each takes plain numbers and frames; none reads a file or a log.
"""
