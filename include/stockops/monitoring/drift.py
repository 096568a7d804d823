"""Data drift of every ticker on the monitor's features, the champion's training days against the last days.

The statistic is Evidently's ``wasserstein`` drift method (the first Wasserstein distance over the
reference's standard deviation), computed here with numpy for every (ticker, feature) at once: a
universe of 421 tickers is 2,105 distances, which one Evidently preset per ticker took minutes and
tens of MB of HTML to compute and draw. Evidently still draws the report a person reads, for the tickers
nearest drift only (:data:`REPORT_TICKERS`), and its numbers for those tickers are checked against ours.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockops.model.drift_features import FEATURES, current_features

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

MIN_REFERENCE_ROWS = 60  # training-window days a ticker needs for its drift to be tested
REPORT_TICKERS = 10  # tickers whose Evidently plots the report holds, drifted first: ~0.27 MB each on a ~3.7 MB page
STD_FLOOR = 0.001  # Evidently's floor under the reference's standard deviation (stattests/wasserstein_distance_norm.py)
PARITY_RTOL = 1e-9  # how closely Evidently's distances must repeat ours on the tickers it draws


def normed_wasserstein(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Per column of two (rows, columns) arrays: Evidently's normed Wasserstein distance, all columns at once.

    ``W1(reference, current) / max(std(reference), 0.001)``, with ``W1`` the area between the two
    empirical CDFs (as ``scipy.stats.wasserstein_distance``: each CDF evaluated at every value of
    the pooled, sorted sample, times the gap to the next value) and the population standard
    deviation, as Evidently's ``wasserstein`` method computes it for one column. No missing values.
    """
    import numpy as np

    n, m = len(reference), len(current)
    pooled = np.concatenate([reference, current]).astype("float64")
    order = np.argsort(pooled, axis=0, kind="stable")
    ordered = np.take_along_axis(pooled, order, axis=0)
    from_reference = order < n
    # after the i-th pooled value, the share of each sample at or below it (ties: the gap to the next is 0)
    gap = np.abs(np.cumsum(from_reference, axis=0)[:-1] / n - np.cumsum(~from_reference, axis=0)[:-1] / m)
    distance = np.sum(gap * np.diff(ordered, axis=0), axis=0)
    return distance / np.maximum(np.std(reference.astype("float64"), axis=0), STD_FLOOR)


def feature_distances(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    """``{feature: normed Wasserstein distance}`` of one ticker; missing and infinite values are dropped per
    feature, as Evidently does."""
    import numpy as np

    ref = reference[list(FEATURES)].to_numpy(dtype="float64")
    cur = current[list(FEATURES)].to_numpy(dtype="float64")
    if np.isfinite(ref).all() and np.isfinite(cur).all():
        return dict(zip(FEATURES, normed_wasserstein(ref, cur).tolist(), strict=True))
    out = {}
    for i, feature in enumerate(FEATURES):
        r, c = ref[:, i][np.isfinite(ref[:, i])], cur[:, i][np.isfinite(cur[:, i])]
        out[feature] = float(normed_wasserstein(r[:, None], c[:, None])[0]) if len(r) and len(c) else float("nan")
    return out


def drift_ranking(per_ticker: dict[str, dict[str, Any]]) -> list[str]:
    """Tickers nearest drift first: drifted before not, then by drift share, then by their largest distance."""
    def key(ticker: str):
        one = per_ticker[ticker]
        largest = max((d for d in one["distances"].values() if d == d), default=0.0)  # d == d: not NaN
        return (not one["drifted"], -one["drift_share"], -largest, ticker)

    return sorted(per_ticker, key=key)


def assess_watchlist_drift(references: dict[str, pd.DataFrame], currents: dict[str, pd.DataFrame],
                           threshold: float, share: float, tickers_share: float = 0.5,
                           report_tickers: int = REPORT_TICKERS) -> tuple[dict[str, Any], DriftReport]:
    """Every ticker's drift; returns (summary, report).

    Per ticker and feature the normed Wasserstein distance (:func:`normed_wasserstein`): a feature
    drifted when its distance (in reference standard deviations) is ≥ ``threshold``; a ticker
    drifted when the share of its features that drifted is ≥ ``share`` (the thresholds
    ``bench/monitor_drift.py`` measured on one ticker); the watchlist's ``drift_share`` is the share
    of checked tickers that drifted, compared with ``tickers_share`` (one bad ticker is named in the
    reason, it does not retrain a global model on its own). ``summary["ranking"]`` lists the tickers
    nearest drift first; the report (:class:`DriftReport`) tabulates all of them and holds Evidently's
    plots of the first ``report_tickers``.
    """
    tickers = sorted(set(references) & set(currents))
    if not tickers:
        raise ValueError("no ticker has both a training-window reference and current features")
    distances = {t: feature_distances(references[t], currents[t]) for t in tickers}
    per_ticker: dict[str, dict[str, Any]] = {}
    for t in tickers:
        drifted = [c for c in FEATURES if distances[t][c] >= threshold]
        per_ticker[t] = {"drift_share": len(drifted) / len(FEATURES), "drifted": len(drifted) / len(FEATURES) >= share,
                         "drifted_columns": drifted, "distances": {c: round(d, 4) for c, d in distances[t].items()},
                         "reference_rows": len(references[t]), "current_rows": len(currents[t])}
    drifted_tickers = [t for t in tickers if per_ticker[t]["drifted"]]
    ranking = drift_ranking(per_ticker)
    shown = ranking[:max(0, report_tickers)]
    summary = {"drift_share": len(drifted_tickers) / len(tickers), "drifted_tickers": drifted_tickers,
               "drifted_columns": [f"{t}:{c}" for t in drifted_tickers for c in per_ticker[t]["drifted_columns"]],
               "tickers_checked": tickers, "per_ticker": per_ticker, "method": "wasserstein (normed)",
               "threshold": threshold, "feature_share": share, "tickers_share": tickers_share,
               "ranking": ranking, "report_tickers": shown}
    snapshot = evidently_snapshot({t: references[t] for t in shown}, {t: currents[t] for t in shown},
                                  threshold, share) if shown else None
    if snapshot is not None:
        _check_parity(snapshot, distances)
    return summary, DriftReport(summary, snapshot)


def evidently_snapshot(references: dict[str, pd.DataFrame], currents: dict[str, pd.DataFrame], threshold: float,
                       share: float):
    """Evidently's report of ``references``' tickers: one ``DataDriftPreset`` each, over columns ``<TICKER>:<feature>``
    in the order given. Tickers are padded with missing values to one table: Evidently drops them per column."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    tickers = list(references)
    columns = {t: [f"{t}:{c}" for c in FEATURES] for t in tickers}

    def wide(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
        return pd.concat([frames[t][list(FEATURES)].reset_index(drop=True).set_axis(columns[t], axis=1)
                          for t in tickers], axis=1)

    definition = DataDefinition(numerical_columns=[c for t in tickers for c in columns[t]])
    report = Report([DataDriftPreset(columns=columns[t], method="wasserstein", threshold=threshold, drift_share=share)
                     for t in tickers])
    return report.run(Dataset.from_pandas(wide(currents), data_definition=definition),
                      Dataset.from_pandas(wide(references), data_definition=definition))


def evidently_distances(snapshot) -> dict[str, float]:
    """``{"<TICKER>:<feature>": distance}``: the ``ValueDrift`` values of an :func:`evidently_snapshot`."""
    return {m["config"]["column"]: float(m["value"]) for m in snapshot.dict()["metrics"]
            if m["config"]["type"].endswith("ValueDrift")}


def _check_parity(snapshot, distances: dict[str, dict[str, float]]) -> None:
    """Evidently's distances on the tickers it drew must be ours (else the table and the plots disagree)."""
    import math

    for column, theirs in evidently_distances(snapshot).items():
        ticker, feature = column.split(":", 1)
        ours = distances[ticker][feature]
        if not math.isclose(theirs, ours, rel_tol=PARITY_RTOL, abs_tol=1e-12):
            raise RuntimeError(f"Evidently's normed Wasserstein distance of {column} is {theirs!r}, ours {ours!r}: "
                               "the drift statistic no longer matches Evidently's (see normed_wasserstein)")


class DriftReport:
    """The page a person reads: every ticker in one table, nearest drift first, then Evidently's plots of the first.

    ``save_html(path)`` writes one self-contained HTML file (Evidently's page, the table on top). The
    table is drawn from the summary when saved, so what the check adds to it later (``not_checked``)
    is on the page.
    """

    def __init__(self, summary: dict[str, Any], snapshot=None):
        self.summary, self.snapshot = summary, snapshot

    def get_html_str(self) -> str:
        section = summary_html(self.summary)
        if self.snapshot is None:
            return f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"UTF-8\"></head><body>{section}</body></html>"
        page = self.snapshot.get_html_str(as_iframe=False)
        body = re.search(r"<body[^>]*>", page)
        at = body.end() if body else 0
        return page[:at] + section + page[at:]

    def save_html(self, path: str | Path) -> None:
        Path(path).write_text(self.get_html_str(), encoding="utf-8")


_STYLE = ("<style>.stockops-drift{font-family:Roboto,Helvetica,Arial,sans-serif;font-size:13px;margin:16px 24px}"
          ".stockops-drift .rows{max-height:60vh;overflow:auto;border:1px solid #ccc}"
          ".stockops-drift table{border-collapse:collapse}"
          ".stockops-drift td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
          ".stockops-drift th{padding:4px 8px;border-bottom:2px solid #999;text-align:right;position:sticky;top:0;"
          "background:#fff}.stockops-drift tr.drifted{background:#fff0f0}.stockops-drift .over{color:#c00;"
          "font-weight:bold}</style>")


def summary_html(summary: dict[str, Any]) -> str:
    """The drift table of every ticker (nearest drift first) as an HTML section, distances ≥ the threshold in bold red."""
    per_ticker, threshold = summary["per_ticker"], summary["threshold"]
    ranking = summary.get("ranking") or drift_ranking(per_ticker)
    shown = set(summary.get("report_tickers", ()))
    drifted = summary["drifted_tickers"]
    rows = []
    for rank, ticker in enumerate(ranking, 1):
        one = per_ticker[ticker]
        cells = [str(rank), f"<b>{html.escape(ticker)}</b>", "yes" if one["drifted"] else "no",
                 f"{one['drift_share']:.2f}"]
        for feature in FEATURES:
            value = one["distances"][feature]
            text = f"{value:.3f}"
            cells.append(f"<span class='over'>{text}</span>" if value >= threshold else text)
        cells += [str(one["reference_rows"]), str(one["current_rows"]), "below" if ticker in shown else ""]
        rows.append(("<tr class='drifted'>" if one["drifted"] else "<tr>") + "".join(f"<td>{c}</td>" for c in cells)
                    + "</tr>")
    heads = ["#", "ticker", "drifted", "share", *FEATURES, "reference rows", "current rows", "plots"]
    not_checked = summary.get("not_checked") or {}
    skipped = ("<p>Not checked: " + "; ".join(f"<b>{html.escape(t)}</b>: {html.escape(why)}"
                                             for t, why in sorted(not_checked.items())) + "</p>") if not_checked else ""
    plots = (f"Evidently's plots below: the {len(shown)} ticker(s) nearest drift (the first rows), one "
             "DataDriftPreset each, columns named <code>TICKER:feature</code>." if shown else "")
    return (
        f"{_STYLE}<section class='stockops-drift'>"
        f"<h2>Data drift: {len(drifted)} of {len(per_ticker)} tickers drifted "
        f"(share {summary['drift_share']:.2f})</h2>"
        f"<p>Normed Wasserstein distance per input feature, the champion's training window against the last days "
        f"(in reference standard deviations): a feature drifts at ≥ {threshold:g}, a ticker when ≥ "
        f"{summary['feature_share']:g} of its {len(FEATURES)} features do, the watchlist when ≥ "
        f"{summary['tickers_share']:g} of its tickers do. {plots}</p>{skipped}"
        "<div class='rows'><table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in heads) + "</tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></div></section>")


def assess_drift(reference: pd.DataFrame, current: pd.DataFrame, threshold: float, share: float):
    """One series' drift (:func:`assess_watchlist_drift` of one ticker): ({drift_share, drifted_columns, distances}, report).

    ``drift_share`` here is the share of the series' features that drifted.
    """
    summary, report = assess_watchlist_drift({"series": reference}, {"series": current}, threshold, share)
    one = summary["per_ticker"]["series"]
    return {"drift_share": one["drift_share"], "drifted_columns": one["drifted_columns"],
            "distances": one["distances"], "method": summary["method"], "threshold": threshold}, report


def drift_inputs(reference: pd.DataFrame | None, frames: dict[str, pd.DataFrame], days: int, model_ticker: str
                 ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], dict[str, str]]:
    """(references, currents, not checked: ticker -> why) for the tickers in ``frames``.

    ``reference``: the champion's training-window features (a ``ticker`` column since the watchlist
    model; without one it is ``model_ticker``'s, as older champions recorded it).
    """
    references: dict[str, pd.DataFrame] = {}
    if reference is not None:
        if "ticker" in reference:
            references = {str(t): g.drop(columns="ticker") for t, g in reference.groupby("ticker", sort=True)}
        else:
            references = {model_ticker: reference}
    currents, skipped = {}, {}
    for ticker, frame in frames.items():
        if len(references.get(ticker, ())) < MIN_REFERENCE_ROWS:
            skipped[ticker] = (f"the champion's training window holds {len(references.get(ticker, ()))} days of it "
                               f"with complete features, fewer than {MIN_REFERENCE_ROWS}")
            continue
        try:
            currents[ticker] = current_features(frame, days)
        except ValueError as exc:
            skipped[ticker] = str(exc)
    return {t: references[t] for t in currents}, currents, skipped
