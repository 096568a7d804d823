"""``make demo``: the pipeline end to end, in-process, no UI; prints a short summary."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import numpy as np

from stockops.config import get_settings
from stockops.ingest import ingest_day, store_for


def recent_business_days(n: int, until: date | None = None) -> list[date]:
    """The last ``n`` business days up to and including ``until`` (default: today)."""
    day = until or date.today()
    days: list[date] = []
    while len(days) < n:
        if np.is_busday(day):
            days.append(day)
        day -= timedelta(days=1)
    return days[::-1]


def run_demo(days: int = 5) -> list[dict]:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    print(f"stockops demo: ticker {settings.ticker}, source {settings.source}, home {settings.home}")
    results = []
    for day in recent_business_days(days):
        published = ingest_day(day.isoformat())
        results.append({"logical_date": day.isoformat(), **published})
    print(f"\n{'logical date':<13} {'market day':<11} {'rows':>5}  {'snapshot':<13} new")
    for r in results:
        print(f"{r['logical_date']:<13} {r['last_date']:<11} {r['rows']:>5}  {r['hash'][:12]:<13} {r['new']}")
    store = store_for(settings)
    latest = store.latest()
    print(f"\nmanifest: {len(store.entries())} snapshots in {store.manifest_path}")
    if latest:
        print(f"latest:   {latest.hash[:12]} ({latest.rows} rows, {latest.first_date}..{latest.last_date})")
    print(f"GX Data Docs: {settings.data_docs_dir / 'index.html'}")

    from stockops.serving import current
    from stockops.training import champion_version, format_scores, train_in_process

    was_serving = bool(current(settings))  # e.g. make run is up on the same home: leave its endpoint up
    print("\ntraining a candidate on the latest snapshot (this imports TensorFlow and MLflow) ...", flush=True)
    try:
        outcome = train_in_process(trigger_reason="make demo")
    except Exception:
        if not was_serving:
            from stockops.serving import stop_serving

            stop_serving(settings)
        raise
    holdout = outcome["holdout"]
    print(f"\nholdout: {holdout['days']} days, {holdout['first']}..{holdout['last']}  "
          f"(MLflow run {outcome['run_id']}, {outcome['model_name']} v{outcome['version']})")
    print(format_scores(outcome["scores"]))
    print(f"\ngate: {outcome['decision']['decision'].upper()}: {outcome['decision']['reason']}")
    champion = champion_version(settings)
    print(f"champion: {f'{settings.model_name} v{champion.version}' if champion else 'none: no model has passed the gate yet'}")
    print(f"MLflow store: {settings.mlflow_tracking_uri} (make run serves its UI)")
    forecast_over_http(settings, store, was_serving)
    show_monitor_decision()
    return results


def show_monitor_decision() -> dict:
    """One stock_monitor check on the latest snapshot, as a dry run (it never counts as a trigger)."""
    from stockops.monitoring import run_monitor

    print("\nmonitoring the champion (Evidently drift + live error; what stock_monitor does after each ingest) ...",
          flush=True)
    decision = run_monitor(dry_run=True)
    print(f"  decision: {'RETRAIN' if 'would trigger' in decision['reason'] else 'no retrain'}: {decision['reason']}")
    if decision.get("current_window"):
        ratio = decision["live_rmse_ratio"]
        print(f"  current {decision['current_window'][0]}..{decision['current_window'][1]} vs the champion's "
              f"training window {decision['reference_window'][0]}..{decision['reference_window'][1]}: "
              f"drift share {decision['drift_share']:.2f}, live error "
              f"{'n/a' if ratio is None else f'{ratio:.2f}'}× holdout, "
              f"{decision['persistence_ratio']:.3f}× persistence")
        print(f"  report: {decision['report']}\n  decision: {decision['decision_path']}")
    return decision


def forecast_over_http(settings, store, was_serving: bool) -> dict | None:
    """Serve the champion (unless it already answers) and ask it for tomorrow over real HTTP."""
    from stockops.processes import http_json
    from stockops.serving import serve_champion, stop_serving

    print("\nserving the champion (bento build + health-checked deploy, if not done yet) ...", flush=True)
    try:
        state = serve_champion(settings, reason="make demo")
        if state is None:
            print("no champion, so nothing is served: the endpoint waits for a model that passes the gate")
            return None
        frame = store.load()
        closes = [float(c) for c in frame["Close"].to_numpy()[-90:]]
        as_of = frame["Date"].iloc[-1].date().isoformat()
        status, body = http_json(f"{settings.serve_url}/predict", {"closes": closes, "as_of": as_of})
        print(f"POST {settings.serve_url}/predict  ({len(closes)} closes up to {as_of}) -> HTTP {status}")
        if status == 200:
            print(f"  forecast for {body['forecast_for']}: {body['forecast']:.2f}  (last close {body['last_close']:.2f})")
            print(f"  model {body['model_name']} v{body['model_version']}, bento {body['bento_tag']}, "
                  f"snapshot {body['snapshot_hash'][:12]}")
        else:
            print(f"  {body}")
        return body
    finally:
        if not was_serving:
            stop_serving(settings)
            print("(the demo stopped the endpoint it started; make run keeps one up)")
