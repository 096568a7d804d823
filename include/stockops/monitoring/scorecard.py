"""The live calibration scorecard: the champion's own forecasts, scored with proper rules once they are realized.

Every record :func:`stockops.monitoring.score_watchlist` appended for the champion's version (all
watchlist tickers) is joined with the close its ticker's latest published snapshot holds for
``forecast_for``: the realized log return is ``log(that close / the record's last_close)``. Over
the last ``monitor_current_days`` trading days of each ticker's snapshot, per ticker and pooled:

* coverage of the 50 % and 90 % intervals (q25..q75, q05..q95);
* 95 % and 99 % VaR breach rates (returns below q05 / q01) with Kupiec's POF test p-value
  (pooled over ticker-days: the cross-section makes it somewhat liberal on a market-wide shock);
* QLIKE (of the recorded variance) and pinball loss (of all recorded quantiles), percent units as in
  :mod:`stockops.model.scoring`, of the champion and of HARX-GKO on the same (ticker, day) pairs.

HARX-GKO (:func:`stockops.model.baselines.log_har`) is refit once per ticker per check, on that ticker's
snapshot days strictly before the first day of the window, then run with those parameters over
the window (each day's forecast uses the days before it only) — the same fixed-parameter walk the
training gate scores it with; a ticker with fewer than ``MIN_TRAIN_DAYS`` days before its window
has no benchmark. Until ``monitor_min_forecast_days`` distinct days are realized the scorecard is
``insufficient`` and triggers nothing.

Imports numpy, scipy and arch at module level: :mod:`stockops.monitoring` imports it inside the check.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from stockops.model.baselines import MIN_TRAIN_DAYS, log_har
from stockops.model.portable.risk_inputs import daily_inputs
from stockops.model.scoring import LEVELS, coverage, date_average, diebold_mariano, kupiec, pinball, qlike

BENCHMARK = "harx_gko"
QUANTILES = tuple(f"q{round(level * 100):02d}" for level in LEVELS)
REFIT = ("harx_gko refit once per ticker per check on the snapshot's days before the window's first day, "
         "fixed over the window")


PAIR_COLUMNS = ["ticker", "as_of", "forecast_for", "ret", "variance", *QUANTILES]


def day_strings(dates: pd.Series | np.ndarray) -> np.ndarray:
    """Dates as ISO day strings (``YYYY-MM-DD``), as the forecast log writes them."""
    return np.datetime_as_string(np.asarray(dates, dtype="datetime64[D]"), unit="D")


def realized_pairs(records: list[dict], frames: dict[str, pd.DataFrame], version: str, days: int) -> pd.DataFrame:
    """The champion's realized forecasts in each ticker's last ``days`` trading days, one row per (ticker, day).

    ``records``: forecast-log entries (any tickers, versions); ``frames``: ticker -> its latest published
    snapshot. A record whose ``forecast_for`` the snapshot does not hold yet is not realized; a day
    recorded twice counts once, the first record. One join of the log with every ticker's window (no
    per-record lookups: the log holds every ticker's days of every version).
    """
    mine = [e for e in records if str(e.get("model_version")) == str(version) and e.get("ticker") in frames]
    windows = pd.concat([pd.DataFrame({"ticker": ticker, "forecast_for": day_strings(frame["Date"].iloc[-days:]),
                                       "close": frame["Close"].to_numpy(dtype="float64")[-days:]})
                         for ticker, frame in frames.items()] or [pd.DataFrame(columns=["ticker", "forecast_for"])],
                        ignore_index=True)
    realized = {(t, d) for t, d in zip(windows["ticker"], windows["forecast_for"], strict=True)}
    mine = [e for e in mine if (e["ticker"], e.get("forecast_for")) in realized]
    if not mine:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    table = pd.DataFrame({"ticker": [e["ticker"] for e in mine], "as_of": [e["as_of"] for e in mine],
                          "forecast_for": [e["forecast_for"] for e in mine],
                          "last_close": np.array([e["last_close"] for e in mine], dtype="float64"),
                          "variance": [e["variance"] for e in mine],
                          **{q: [e["quantiles"][q] for e in mine] for q in QUANTILES}})
    table = table.drop_duplicates(["ticker", "forecast_for"], keep="first")
    table = table.merge(windows, on=["ticker", "forecast_for"], how="left")
    table["ret"] = np.log(table["close"].to_numpy() / table["last_close"].to_numpy())
    return table[PAIR_COLUMNS].sort_values(["ticker", "forecast_for"], ignore_index=True)


def benchmark_forecasts(frame: pd.DataFrame, forecast_days: list[str]) -> tuple[pd.DataFrame | None, str]:
    """HARX-GKO's variance and quantiles for ``forecast_days`` of ``frame``'s ticker, and how it was fitted.

    One fit, on the days strictly before the first of ``forecast_days``; None (with the reason) when
    fewer than ``MIN_TRAIN_DAYS`` days precede it.
    """
    days = np.asarray(frame["Date"], dtype="datetime64[D]")
    rows = np.flatnonzero(np.isin(days, np.asarray(forecast_days, dtype="datetime64[D]")))
    first = int(rows.min())
    train_end = first - 1  # daily_inputs' first row (no return) is dropped: frame row k is inputs row k - 1
    if train_end < MIN_TRAIN_DAYS:
        return None, f"{train_end} days before {day_strings(days[first:first + 1])[0]}, fewer than the {MIN_TRAIN_DAYS} a fit needs"
    inputs = daily_inputs(frame.iloc[: rows.max() + 1]).iloc[1:].reset_index(drop=True)
    forecast = log_har(inputs, train_end)
    index: np.ndarray = rows - 1 - train_end
    table = pd.DataFrame({"forecast_for": day_strings(days[rows]), "variance": forecast.variance[index],
                          **{q: forecast.quantiles[index, i] for i, q in enumerate(QUANTILES)}})
    return table, f"fitted on {train_end} days through {day_strings(days[first - 1:first])[0]}"


def score_pairs(pairs: pd.DataFrame) -> dict[str, Any]:
    """Coverage, VaR breaches with Kupiec p-values, and the mean losses of the champion (and HARX-GKO where set)."""
    r = pairs["ret"].to_numpy(dtype="float64")
    n = len(r)
    breaches = {level: int(np.sum(r < pairs[q].to_numpy())) for level, q in ((95, "q05"), (99, "q01"))}
    quantiles = pairs[list(QUANTILES)].to_numpy(dtype="float64")
    out: dict[str, Any] = {
        "days": int(pairs["forecast_for"].nunique()), "pairs": n,
        "first_day": str(pairs["forecast_for"].min()), "last_day": str(pairs["forecast_for"].max()),
        "coverage_50": coverage(pairs["q25"].to_numpy(), pairs["q75"].to_numpy(), r),
        "coverage_90": coverage(pairs["q05"].to_numpy(), pairs["q95"].to_numpy(), r),
        "var95_breaches": breaches[95], "var95_breach_rate": breaches[95] / n,
        "kupiec95_p": kupiec(breaches[95], n, 0.05)[1],
        "var99_breaches": breaches[99], "var99_breach_rate": breaches[99] / n,
        "kupiec99_p": kupiec(breaches[99], n, 0.01)[1],
        "qlike": float(qlike(pairs["variance"].to_numpy(), r).mean()),
        "pinball": float(pinball(quantiles, r).mean()),
    }
    both = pairs.dropna(subset=[f"{BENCHMARK}_variance"])
    out[f"{BENCHMARK}_pairs"] = len(both)
    if len(both):
        rb = both["ret"].to_numpy(dtype="float64")
        champion_losses = qlike(both["variance"].to_numpy(), rb)
        benchmark_losses = qlike(both[f"{BENCHMARK}_variance"].to_numpy(), rb)
        champion_qlike, benchmark_qlike = float(champion_losses.mean()), float(benchmark_losses.mean())
        day = both["forecast_for"].to_numpy()
        # reported, not gated on: the DM t of date-averaged QLIKE (positive: the champion is better)
        dm_t = diebold_mariano(date_average(champion_losses, day)[1], date_average(benchmark_losses, day)[1])[0]
        out.update({
            "qlike_on_benchmark_pairs": champion_qlike,
            f"{BENCHMARK}_qlike": benchmark_qlike,
            f"{BENCHMARK}_pinball": float(pinball(both[[f"{BENCHMARK}_{q}" for q in QUANTILES]].to_numpy(), rb).mean()),
            f"qlike_minus_{BENCHMARK}": champion_qlike - benchmark_qlike,
            f"dm_qlike_t_vs_{BENCHMARK}": dm_t,
        })
    return out


def calibration_scorecard(records: list[dict], frames: dict[str, pd.DataFrame], version: str, days: int,
                          min_days: int) -> dict[str, Any]:
    """The scorecard of champion ``version``: ``{status, pooled, per_ticker, benchmark, ...}``, plain data.

    ``status`` is ``"ok"`` once the pooled pairs cover ``min_days`` distinct realized days, else
    ``"insufficient"`` (the numbers so far are still reported, and nothing triggers on them). A
    ticker's own entry is ``insufficient`` below ``min_days`` of its own.
    """
    pairs = realized_pairs(records, frames, version, days)
    base = {"model_version": str(version), "window_days": days, "min_days": min_days, "benchmark": BENCHMARK,
            "refit": REFIT}
    if pairs.empty:
        return {**base, "status": "insufficient", "days": 0, "pooled": {}, "per_ticker": {}, "benchmark_fits": {},
                "basis": f"none of champion v{version}'s own forecasts is realized in the last {days} days yet"}
    fits, tables = {}, []
    for ticker, days_of_ticker in pairs.groupby("ticker", sort=True)["forecast_for"]:
        table, fits[ticker] = benchmark_forecasts(frames[ticker], days_of_ticker.tolist())
        if table is not None:
            tables.append(table.add_prefix(f"{BENCHMARK}_").assign(ticker=ticker))
    if tables:
        pairs = pairs.merge(pd.concat(tables, ignore_index=True).rename(
            columns={f"{BENCHMARK}_forecast_for": "forecast_for"}), how="left", on=["ticker", "forecast_for"])
    else:
        pairs[f"{BENCHMARK}_variance"] = np.nan
    per_ticker = {}
    for ticker, group in pairs.groupby("ticker", sort=True):
        scores = score_pairs(group)
        per_ticker[ticker] = {"status": "ok" if scores["days"] >= min_days else "insufficient", **scores}
    pooled = score_pairs(pairs)
    status = "ok" if pooled["days"] >= min_days else "insufficient"
    basis = (f"{pooled['pairs']} realized forecasts of champion v{version} on {pooled['days']} days "
             f"({pooled['first_day']}..{pooled['last_day']}), {len(per_ticker)} ticker(s)")
    if status == "insufficient":
        basis += f": fewer than {min_days} days (STOCKOPS_MONITOR_MIN_FORECAST_DAYS)"
    return {**base, "status": status, "days": pooled["days"], "basis": basis, "pooled": pooled,
            "per_ticker": per_ticker, "benchmark_fits": fits}


def scorecard_verdict(scorecard: dict | None, kupiec_p: float, qlike_margin: float) -> tuple[list[str], list[str]]:
    """(crossed, calm): the decision's lines from the scorecard; an insufficient one only says so."""
    if not scorecard:
        return [], []
    pooled = scorecard.get("pooled") or {}
    if scorecard.get("status") != "ok":
        return [], [f"calibration scorecard insufficient: {scorecard.get('basis', 'no realized forecasts')}"]
    crossed, calm = [], []
    for level, nominal in ((99, 0.01), (95, 0.05)):
        p, breaches, n = pooled[f"kupiec{level}_p"], pooled[f"var{level}_breaches"], pooled["pairs"]
        text = (f"{level} % VaR breached on {breaches} of {n} ticker-days ({breaches / n:.1%}, nominal {nominal:.0%}), "
                f"Kupiec p = {p:.4f}")
        if p < kupiec_p:
            crossed.append(f"calibration rejected: {text} < {kupiec_p:g} over {pooled['days']} realized days")
        else:
            calm.append(f"calibration: {text} ≥ {kupiec_p:g}")
    gap = pooled.get(f"qlike_minus_{BENCHMARK}")
    if gap is not None and not math.isnan(gap):
        text = (f"champion's QLIKE {pooled['qlike_on_benchmark_pairs']:.3f} vs HARX-GKO's "
                f"{pooled[f'{BENCHMARK}_qlike']:.3f} on the same {pooled[f'{BENCHMARK}_pairs']} ticker-days "
                f"({gap:+.3f} nats/day")
        if gap > qlike_margin:
            crossed.append(f"losing to HARX-GKO: {text} > margin {qlike_margin:g})")
        else:
            calm.append(f"QLIKE vs HARX-GKO: {text} ≤ margin {qlike_margin:g})")
    return crossed, calm


def pooled_metrics(scorecard: dict | None) -> dict[str, float]:
    """The pooled numbers as MLflow metrics (``scorecard_<name>``); empty without a scorecard."""
    if not scorecard or not scorecard.get("pooled"):
        return {}
    return {f"scorecard_{k}": float(v) for k, v in scorecard["pooled"].items()
            if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(float(v))}


def compare_versions(records: list[dict], frames: dict[str, pd.DataFrame], champion: str, previous: str,
                     days: int, min_days: int) -> dict[str, Any]:
    """The champion against the previous champion on the same realized (ticker, day) pairs, by QLIKE and pinball.

    Both versions' records come from :func:`stockops.monitoring.score_watchlist` (the previous
    one forecasts in the shadow), so only days both forecast are compared. ``dm_qlike_t`` is the
    Diebold-Mariano t of the date-averaged QLIKE (positive: the champion is better);
    ``qlike_gap`` = champion - previous, nats/day (positive: the champion is worse).
    """
    base = {"champion": str(champion), "previous": str(previous), "window_days": days, "min_days": min_days}
    mine, theirs = (realized_pairs(records, frames, v, days) for v in (champion, previous))
    both = mine.merge(theirs, on=["ticker", "forecast_for"], suffixes=("", "_previous"))
    if both.empty:
        return {**base, "status": "insufficient", "days": 0, "pairs": 0,
                "basis": f"no realized day that both v{champion} and v{previous} forecast in the last {days} days"}
    r = both["ret"].to_numpy(dtype="float64")
    day = both["forecast_for"].to_numpy()
    losses = {v: qlike(both[f"variance{suffix}"].to_numpy(), r) for v, suffix in (("c", ""), ("p", "_previous"))}
    pin = {v: float(pinball(both[[f"{q}{suffix}" for q in QUANTILES]].to_numpy(dtype="float64"), r).mean())
           for v, suffix in (("c", ""), ("p", "_previous"))}
    n_days = int(both["forecast_for"].nunique())
    dm_t = (diebold_mariano(date_average(losses["c"], day)[1], date_average(losses["p"], day)[1])[0]
            if n_days > 2 else math.nan)
    out: dict[str, Any] = {**base, "status": "ok" if n_days >= min_days else "insufficient", "days": n_days,
                           "pairs": len(both),
           "first_day": str(both["forecast_for"].min()), "last_day": str(both["forecast_for"].max()),
           "qlike": float(losses["c"].mean()), "qlike_previous": float(losses["p"].mean()),
           "qlike_gap": float(losses["c"].mean() - losses["p"].mean()),
           "pinball": pin["c"], "pinball_previous": pin["p"], "dm_qlike_t": float(dm_t)}
    out["basis"] = (f"v{champion} vs v{previous} on the same {len(both)} realized ticker-days "
                    f"({out['first_day']}..{out['last_day']}, {n_days} days)")
    if out["status"] == "insufficient":
        out["basis"] += f": fewer than {min_days} days (STOCKOPS_MONITOR_MIN_FORECAST_DAYS)"
    return out


def rollback_verdict(comparison: dict | None, margin: float, dm_t: float) -> tuple[bool, str]:
    """(propose, why): the champion is clearly worse than the previous one — QLIKE gap > ``margin`` and DM t ≤ -``dm_t``."""
    if not comparison:
        return False, "no previous champion forecast in the shadow: nothing to compare"
    if comparison["status"] != "ok":
        return False, f"champion vs previous insufficient: {comparison['basis']}"
    text = (f"v{comparison['champion']}'s QLIKE {comparison['qlike']:.3f} vs v{comparison['previous']}'s "
            f"{comparison['qlike_previous']:.3f} ({comparison['qlike_gap']:+.3f} nats/day, DM t "
            f"{comparison['dm_qlike_t']:+.2f}; pinball {comparison['pinball']:.4f} vs {comparison['pinball_previous']:.4f}) "
            f"over {comparison['pairs']} ticker-days {comparison['first_day']}..{comparison['last_day']}")
    clearly_worse = comparison["qlike_gap"] > margin and comparison["dm_qlike_t"] <= -dm_t
    if clearly_worse:
        return True, f"champion clearly worse than the previous one: {text} (margin {margin:g}, |t| ≥ {dm_t:g})"
    return False, f"champion not clearly worse than the previous one: {text}"
