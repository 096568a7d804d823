"""Data drift: Evidently's ``DataDriftPreset`` per ticker on the monitor's features, the champion's training days against the last days."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from stockops.model.drift_features import FEATURES, current_features

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

MIN_REFERENCE_ROWS = 60  # training-window days a ticker needs for its drift to be tested


def assess_watchlist_drift(references: dict[str, pd.DataFrame], currents: dict[str, pd.DataFrame],
                           threshold: float, share: float, tickers_share: float = 0.5):
    """Every ticker's drift in ONE Evidently report; returns (summary, snapshot).

    One ``DataDriftPreset`` per ticker (normed Wasserstein distance per feature) over the columns
    ``<TICKER>:<feature>``: a feature drifted when its distance (in reference standard deviations)
    is ≥ ``threshold``; a ticker drifted when the share of its features that drifted is ≥ ``share``
    (the thresholds ``bench/monitor_drift.py`` measured on one ticker); the watchlist's
    ``drift_share`` is the share of checked tickers that drifted, compared with ``tickers_share``
    (one bad ticker is named in the reason, it does not retrain a global model on its own).
    Tickers are padded with missing values to one table: Evidently drops them per column.
    """
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    tickers = sorted(set(references) & set(currents))
    if not tickers:
        raise ValueError("no ticker has both a training-window reference and current features")
    columns = {t: [f"{t}:{c}" for c in FEATURES] for t in tickers}

    def wide(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
        return pd.concat([frames[t][list(FEATURES)].reset_index(drop=True).set_axis(columns[t], axis=1)
                          for t in tickers], axis=1)

    every = [c for t in tickers for c in columns[t]]
    definition = DataDefinition(numerical_columns=every)
    report = Report([DataDriftPreset(columns=columns[t], method="wasserstein", threshold=threshold, drift_share=share)
                     for t in tickers])
    snapshot = report.run(Dataset.from_pandas(wide(currents), data_definition=definition),
                          Dataset.from_pandas(wide(references), data_definition=definition))
    metrics = snapshot.dict()["metrics"]
    distances = {m["config"]["column"]: float(m["value"]) for m in metrics
                 if m["config"]["type"].endswith("ValueDrift")}
    counts = {tuple(m["config"]["columns"]): m["value"] for m in metrics
              if m["config"]["type"].endswith("DriftedColumnsCount")}
    per_ticker: dict[str, dict[str, Any]] = {}
    for t in tickers:
        drifted = [c.split(":", 1)[1] for c in columns[t] if distances[c] >= threshold]
        counted = counts[tuple(columns[t])]
        if len(drifted) != int(counted["count"]):
            raise RuntimeError(f"Evidently counted {counted['count']} drifted columns of {t}, the distances say {drifted}")
        per_ticker[t] = {"drift_share": float(counted["share"]), "drifted": float(counted["share"]) >= share,
                         "drifted_columns": drifted,
                         "distances": {c.split(":", 1)[1]: round(distances[c], 4) for c in columns[t]},
                         "reference_rows": len(references[t]), "current_rows": len(currents[t])}
    drifted_tickers = [t for t in tickers if per_ticker[t]["drifted"]]
    summary = {"drift_share": len(drifted_tickers) / len(tickers), "drifted_tickers": drifted_tickers,
               "drifted_columns": [f"{t}:{c}" for t in drifted_tickers for c in per_ticker[t]["drifted_columns"]],
               "tickers_checked": tickers, "per_ticker": per_ticker, "method": "wasserstein (normed)",
               "threshold": threshold, "feature_share": share, "tickers_share": tickers_share}
    return summary, snapshot


def assess_drift(reference: pd.DataFrame, current: pd.DataFrame, threshold: float, share: float):
    """One series' drift (:func:`assess_watchlist_drift` of one ticker): ({drift_share, drifted_columns, distances}, snapshot).

    ``drift_share`` here is the share of the series' features that drifted.
    """
    summary, snapshot = assess_watchlist_drift({"series": reference}, {"series": current}, threshold, share)
    one = summary["per_ticker"]["series"]
    return {"drift_share": one["drift_share"], "drifted_columns": one["drifted_columns"],
            "distances": one["distances"], "method": summary["method"], "threshold": threshold}, snapshot


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
