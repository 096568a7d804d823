"""The platform's own forecasts: the champion's next-session forecast of every watchlist ticker, recorded once per
(ticker, day, model version) in the forecast log, each a :class:`~stockops.contracts.ForecastRecord`; the endpoint's
log is counted as traffic, never scored.

The champion's forecasts are recorded as the bento serves them: corrected by its online calibration state
(:mod:`stockops.monitoring.online`), brought up to date with the days realised since the last run first, and each
record names the state it used (``calibration``). The previous champion's shadow forecasts stay as its model made
them."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockops import registry
from stockops.contracts import ForecastRecord, Scored, ShadowScored
from stockops.core import audit
from stockops.core.settings import Settings
from stockops.model.portable.prediction_log import request_counts as prediction_log_counts
from stockops.monitoring.online import quantile_names, update_online_calibration

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from stockops.model.portable.online_calibration import OnlineState

log = logging.getLogger(__name__)


FORECAST_EVENT = "forecast"
INTERVALS = {"coverage_50": ("q25", "q75"), "coverage_90": ("q05", "q95")}
TABLE_COLUMNS = ("as_of", "forecast_for", "last_close", "point", "q05", "q25", "q75", "q95")


def next_session(day: str) -> str:
    """The NYSE session after ``day`` (ISO date): the day a forecast made on ``day``'s close is for."""
    from datetime import date

    from stockops.data.calendar import sessions

    after = date.fromisoformat(day) + timedelta(days=1)
    return str(sessions(after, after + timedelta(days=14))[0])


def market_series(settings: Settings) -> pd.Series | None:
    """The market reference's closes by date (its latest published snapshot), or None without one."""
    from stockops.data import store_for

    if not settings.market:
        return None
    store = store_for(settings, settings.market)
    if store.latest() is None:
        return None
    return store.load().set_index("Date")["Close"]


def market_closes(market: pd.Series | None, frame: pd.DataFrame) -> np.ndarray | None:
    """``market``'s closes on ``frame``'s days (:func:`stockops.model.portable.risk_inputs.align_market`), or None."""
    from stockops.model.portable.risk_inputs import align_market

    return align_market(frame["Date"], market)


def forecast_records(model, snapshots: dict[str, tuple[Any, pd.DataFrame]], market: pd.Series | None,
                     version: str, made_at: str, online: OnlineState | None = None,
                     ) -> tuple[list[ForecastRecord], dict[str, str]]:
    """One forecast record per ticker, for the session after its snapshot's last day; and the tickers skipped, why.

    ``snapshots``: ticker -> (snapshot entry, its frame). The whole watchlist goes through the
    model's pyfunc contract (:meth:`Forecaster.predict_frame`) in one batch. ``online``: the version's online
    calibration state; the forecasts are corrected with it (:func:`calibrated`) and each record carries its
    lineage for the ticker (``calibration``).
    """
    import pandas as pd

    from stockops.model.portable.forecaster import OUTPUT_COLUMNS

    need = model.calibration.history
    skipped = {t: f"{len(frame)} published days, the model needs {need}" for t, (_, frame) in snapshots.items()
               if len(frame) < need}
    tails = []
    for ticker, (_, frame) in snapshots.items():
        if ticker not in skipped:
            tail = frame.iloc[-need:].assign(ticker=ticker)
            closes = market_closes(market, tail)
            tails.append(tail if closes is None else tail.assign(Market=closes))
    if not tails:
        return [], skipped
    quantiles = [c for c in OUTPUT_COLUMNS if c.startswith("q")]
    records = []
    table = model.predict_frame(pd.concat(tails, ignore_index=True))
    for row in (table if online is None else calibrated(table, online)).itertuples(index=False):
        entry = snapshots[row.ticker][0]
        records.append(ForecastRecord(
            ticker=row.ticker, as_of=entry.last_date, forecast_for=next_session(entry.last_date),
            model_version=version, snapshot_hash=entry.hash, last_close=float(row.last_close),
            point=float(row.point), forecast=float(row.forecast_close),
            quantiles={q: float(getattr(row, q)) for q in quantiles}, variance=float(row.variance),
            made_at=made_at, calibration=None if online is None else online.lineage(row.ticker)))
    return records, skipped


def calibrated(table: pd.DataFrame, online: OnlineState) -> pd.DataFrame:
    """The model's forecasts (:meth:`Forecaster.predict_frame`'s columns) corrected by ``online`` as the bento
    corrects them: variance (and volatility) scaled, quantiles moved; the point, and so the forecast close, kept."""
    import numpy as np

    names = list(quantile_names())
    fixed = online.adjust({"point": table["point"].to_numpy(np.float64),
                           "variance": table["variance"].to_numpy(np.float64),
                           "quantiles": table[names].to_numpy(np.float64)}, table["ticker"].to_numpy())
    return table.assign(variance=fixed["variance"], volatility=np.sqrt(fixed["variance"]),
                        **{q: fixed["quantiles"][:, i] for i, q in enumerate(names)})


def _forecast_key(entry: dict) -> tuple[str, str, str]:
    return str(entry.get("ticker")), str(entry.get("as_of")), str(entry.get("model_version"))


def record_forecasts(forecast_log: Path, records: Iterable[ForecastRecord], logged: list[dict] | None = None,
                     ) -> list[dict]:
    """Append the records the log does not hold yet (same ticker, as_of and model version); returns the log
    entries written. ``logged``: the log's entries when the caller has just read them.

    Re-scoring a day (a retried task, a second check on the same snapshot) therefore adds nothing.
    """
    held = {_forecast_key(e) for e in (audit.read(forecast_log) if logged is None else logged)}
    written = []
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for record in records:
        line = record.to_record()
        if _forecast_key(line) not in held:
            written.append({"at": now, "event": FORECAST_EVENT, **line})
            held.add(_forecast_key(line))
    return audit.append_many(forecast_log, written)  # together: one transaction for the whole watchlist


def score_watchlist(dag_run_id: str = "", *, settings: Settings) -> Scored:
    """Bring the champion's online calibration up to date, then forecast the next session of every watchlist ticker
    with the champion, corrected by it, and log each forecast once.

    Only the platform's own inputs go in — the champion loaded in this process from the registry,
    each ticker's latest published snapshot (validated, and checked against its hash on load) —
    so no client can put a forecast, a day or a close into these records: live error is measured
    on them. The calibration is updated here, from the snapshots just loaded, so it always runs before the
    forecasts it corrects, whoever calls this.
    """
    registry.setup(settings)
    champion = registry.champion_version(settings)
    if champion is None:
        log.info("no champion yet: nothing to score")
        return Scored(model_version=None, recorded=[], already_recorded=[], skipped={})
    version = str(champion.version)
    snapshots, skipped = latest_snapshots(settings)
    logged = audit.read(settings.forecast_log)  # read once: the calibration's outcomes and what is held already
    online = update_online_calibration(settings=settings, version=version, records=logged,
                                       frames={t: frame for t, (_, frame) in snapshots.items()})
    made_at, market = datetime.now(UTC).isoformat(timespec="seconds"), market_series(settings)
    model = registry.load_forecaster(registry.model_uri(settings.model_name, version))
    records, too_short = forecast_records(model, snapshots, market, version, made_at=made_at, online=online)
    skipped.update(too_short)
    written = record_forecasts(settings.forecast_log, [replace(r, role="champion", dag_run_id=dag_run_id)
                                                       for r in records], logged)
    recorded = [e["ticker"] for e in written]
    log.info("champion v%s scored %d ticker(s) into %s (online calibration through %s): %d new, %d already "
             "recorded%s", version, len(records), settings.forecast_log, online.through, len(recorded),
             len(records) - len(recorded), "".join(f"; {t} skipped: {why}" for t, why in skipped.items()))
    shadow = _score_previous(settings, version, snapshots, market, made_at, dag_run_id)
    return Scored(model_version=version, recorded=recorded,
                  already_recorded=[r.ticker for r in records if r.ticker not in recorded], skipped=skipped,
                  previous=shadow, online_calibration=online.lineage(None))


def latest_snapshots(settings: Settings) -> tuple[dict[str, tuple[Any, pd.DataFrame]], dict[str, str]]:
    """Every watchlist ticker's latest published snapshot (entry, frame; hash-checked on load), and those without."""
    from stockops.data import store_for

    snapshots: dict[str, tuple[Any, pd.DataFrame]] = {}
    skipped: dict[str, str] = {}
    for ticker in settings.tickers:
        store = store_for(settings, ticker)
        entry = store.latest()
        if entry is None:
            skipped[ticker] = "no published snapshot yet"
        else:
            snapshots[ticker] = (entry, store.load(entry))
    return snapshots, skipped


def _score_previous(settings: Settings, champion: str, snapshots: dict, market, made_at: str,
                    dag_run_id: str) -> ShadowScored | None:
    """The previous champion forecasts the same days in the shadow (``role: shadow``): what a rollback is judged on.

    A previous version that cannot be loaded any more (deleted, an older model format) is logged and
    skipped: the champion's own scoring never depends on it.
    """
    from stockops.registry.changes import previous_champion

    previous = previous_champion(settings, champion)
    if previous is None or str(previous) == str(champion):
        return None
    try:
        model = registry.load_forecaster(registry.model_uri(settings.model_name, previous))
        records, _ = forecast_records(model, snapshots, market, str(previous), made_at=made_at)
    except Exception as exc:  # noqa: BLE001 - the shadow is optional; its absence is reported
        log.warning("the previous champion v%s could not forecast in the shadow (%s: %s): no rollback can be "
                    "proposed until it does", previous, type(exc).__name__, exc)
        return ShadowScored(model_version=str(previous), error=f"{type(exc).__name__}: {exc}")
    written = record_forecasts(settings.forecast_log, [replace(r, role="shadow", dag_run_id=dag_run_id)
                                                       for r in records])
    log.info("previous champion v%s scored %d ticker(s) in the shadow: %d new", previous, len(records), len(written))
    return ShadowScored(model_version=str(previous), recorded=[e["ticker"] for e in written])


def own_forecasts(forecast_log: Path, ticker: str, version: str, records: list[dict] | None = None) -> pd.DataFrame:
    """The platform's forecasts for ``ticker`` by model ``version``, one per ``as_of`` (the first recorded).

    ``records``: the log's entries when the caller has read them already (the log holds every ticker's days).
    """
    import pandas as pd

    found: dict[str, dict] = {}
    for entry in audit.read(forecast_log) if records is None else records:  # a torn line is skipped there
        if entry.get("ticker") == ticker and str(entry.get("model_version")) == str(version):
            found.setdefault(entry["as_of"], {"as_of": entry["as_of"], "forecast_for": entry["forecast_for"],
                                              "last_close": entry["last_close"], "point": entry["point"],
                                              **{q: entry["quantiles"][q] for q in TABLE_COLUMNS[4:]}})
    return pd.DataFrame(list(found.values()), columns=list(TABLE_COLUMNS))


def traffic_requests(prediction_log: Path, version: str) -> int:
    """How many requests the endpoint logged for ``version``: traffic only, as any client can write anything there.

    The log rotates at its size cap: the files rotated out are counted in its summary
    (:mod:`stockops.model.portable.prediction_log`), so this reads at most two capped files and a small JSON.
    """
    return prediction_log_counts(prediction_log)[str(version)]
