"""``make demo``: the pipeline end to end, in-process, no UI; prints a short summary."""

from __future__ import annotations

import logging
import time
from datetime import date, timedelta

from stockops.contracts import IngestStatus, MonitorRecord, TrainingOutcome, WatchlistOutcome
from stockops.core.settings import Settings, get_settings
from stockops.data import store_for
from stockops.ingest import format_watchlist, ingest_watchlist, watchlist_status


def recent_sessions(n: int, until: date | None = None) -> list[date]:
    """The last ``n`` NYSE sessions up to and including ``until`` (default: today)."""
    from stockops.data.calendar import sessions

    until = until or date.today()
    found = sessions(until - timedelta(days=2 * n + 14), until)[-n:]
    return [date.fromisoformat(str(d)) for d in found]


def train_in_process(settings: Settings, reason: str = "in-process run", epochs: int | None = None,
                     window: int | None = None, force_promote: bool = False) -> TrainingOutcome:
    """The whole ``stock_train`` chain without Airflow (``make demo``, the benches), build and deploy included;
    every step gets ``settings``."""
    from stockops.serving import build_candidate_bento, deploy_candidate
    from stockops.training import (
        evaluate_models,
        gate_candidate,
        gate_passed,
        load_snapshots,
        prepare_features,
        register_candidate,
        train_candidate,
    )

    features = prepare_features(load_snapshots(settings=settings), window=window, settings=settings)
    trained = train_candidate(features, epochs=epochs, reason=reason, settings=settings)
    registered = register_candidate(evaluate_models(trained, settings=settings), settings=settings)
    decision = gate_candidate(registered, force_promote=force_promote, reason=reason, settings=settings)
    deployed = None
    if gate_passed(decision):
        deployed = deploy_candidate(build_candidate_bento(registered, decision, settings=settings), reason=reason,
                                    settings=settings)
    return TrainingOutcome(registered=registered, decision=decision, deployed=deployed)


def run_demo(days: int = 5) -> list[WatchlistOutcome]:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    print(f"stockops demo: watchlist of {len(settings.tickers)} ({' '.join(settings.tickers)}), model ticker "
          f"{settings.ticker}, source {settings.source}, home {settings.home}")
    results: list[WatchlistOutcome] = []
    statuses: dict[str, IngestStatus] = {}  # ticker -> its newest outcome
    for day in recent_sessions(days):
        started = time.monotonic()
        outcome = ingest_watchlist(day.isoformat(), settings=settings)
        counts = {IngestStatus.PUBLISHED: len(outcome.published), IngestStatus.HELD: len(outcome.held_for_review),
                  IngestStatus.QUARANTINED: len(outcome.quarantined)}
        print(f"{day}: {', '.join(f'{n} {s.value}' for s, n in counts.items() if n)} "
              f"({time.monotonic() - started:.1f} s)", flush=True)
        results.append(outcome)
        statuses |= outcome.statuses
    print(f"\n{'ticker':<7} {'status':<12} {'rows':>5} {'market day':<11} {'snapshot':<13}")
    for ticker in settings.tickers:
        latest = store_for(settings, ticker).latest()
        status = statuses[ticker].value if ticker in statuses else "not ingested"
        print(f"{ticker:<7} {status:<12} {latest.rows if latest else 0:>5} {latest.last_date if latest else '-':<11} "
              f"{latest.hash[:12] if latest else '-':<13}")
    print("\n" + format_watchlist(watchlist_status(settings)))
    print("held moves wait for a person: `make run` > Airflow UI > Required actions, or "
          ".venv/bin/stockops decide <TICKER> <day> approve|reject --reason ...")
    print("GX Data Docs (every validation, its expectations and offending rows): `make run`, then "
          "http://127.0.0.1:8080/stockops/gx/")
    store = store_for(settings)

    from stockops.registry import champion_version
    from stockops.serving import current
    from stockops.training import format_scores

    was_serving = bool(current(settings))  # e.g. make run is up on the same home: leave its endpoint up
    print("\ntraining a candidate on the latest snapshot of every ticker (this imports TensorFlow and MLflow) ...", flush=True)
    try:
        trained = train_in_process(settings, reason="make demo")
    except Exception:
        if not was_serving:
            from stockops.serving import stop_serving

            stop_serving(settings)
        raise
    registered = trained.registered
    holdout = registered.evaluated.holdout
    print(f"\nholdout: {holdout.days} days, {holdout.first}..{holdout.last}  "
          f"(MLflow run {registered.run_id}, {registered.model_name} v{registered.version})")
    print(format_scores(registered.scores))
    print(f"\ngate: {trained.decision.label.upper()}: {trained.decision.reason}")
    champion = champion_version(settings)
    print(f"champion: {f'{settings.model_name} v{champion.version}' if champion else 'none: no model has passed the gate yet'}")
    print(f"MLflow store: {settings.mlflow_tracking_uri} (make run serves its UI)")
    forecast_over_http(settings, store, was_serving)
    show_monitor_decision(settings)
    return results


def show_monitor_decision(settings: Settings) -> MonitorRecord:
    """One stock_monitor check on the latest snapshot, as a dry run (it never counts as a trigger)."""
    from stockops.monitoring import run_monitor

    print("\nmonitoring the champion (Evidently drift + live error; what stock_monitor does after each ingest) ...",
          flush=True)
    decision = run_monitor(settings=settings, dry_run=True)
    print(f"  decision: {'RETRAIN' if 'would trigger' in decision.reason else 'no retrain'}: {decision.reason}")
    if decision.current_window:
        ratio = decision.live_rmse_ratio
        reference = decision.reference_window or ["?", "?"]
        print(f"  current {decision.current_window[0]}..{decision.current_window[1]} vs the champion's "
              f"training window {reference[0]}..{reference[1]}: "
              f"drift share {decision.drift_share:.2f}, live error "
              f"{'n/a' if ratio is None else f'{ratio:.2f}'}× holdout, "
              f"{decision.persistence_ratio:.3f}× persistence")
        print(f"  report: {decision.report}\n  decision: {decision.decision_path}")
    return decision


def forecast_over_http(settings, store, was_serving: bool) -> dict | None:
    """Serve the champion (unless it already answers) and ask it for tomorrow over real HTTP."""
    from stockops.core.processes import http_json
    from stockops.serving import market_frame, request_body, serve_champion, stop_serving

    print("\nserving the champion (bento build + health-checked deploy, if not done yet) ...", flush=True)
    try:
        state = serve_champion(settings, reason="make demo")
        if state is None:
            print("no champion, so nothing is served: the endpoint waits for a model that passes the gate")
            return None
        market = market_frame(settings)
        request = request_body(store.load(), market=market, as_of=True, rows=90)
        print(f"POST {settings.serve_url}/predict  ({len(request['closes'])} days of OHLCV up to {request['as_of']}"
              f"{f', with {settings.market} closes' if 'market' in request else ''}) -> ", end="", flush=True)
        status, body = http_json(f"{settings.serve_url}/predict", request)
        print(f"HTTP {status}")
        if status == 200 and isinstance(body, dict):
            low, high = body["intervals"]["90"]
            print(f"  forecast for {body['forecast_for']}: {body['forecast']:.2f}  (last close {body['last_close']:.2f}); "
                  f"90 % interval {low:.2f} .. {high:.2f}, daily volatility {100 * body['volatility']:.2f} %")
            print(f"  model {body['model_name']} v{body['model_version']}, bento {body['bento_tag']}, "
                  f"snapshot {body['snapshot_hash'][:12]}")
        else:
            print(f"  {body}")
        return body if isinstance(body, dict) else None
    finally:
        if not was_serving:
            stop_serving(settings)
            print("(the demo stopped the endpoint it started; make run keeps one up)")
