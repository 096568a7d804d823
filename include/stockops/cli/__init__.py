"""Command line: ``stockops {run,demo,history,dora,gx-init,decide,watchlist,migrate-home}`` (the venv's console script,
``.venv/bin/stockops``; ``python -m stockops`` is the same)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stockops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start Airflow locally with this repo's DAGs (make run)")
    run.add_argument("--port", type=int, default=None, help="Airflow UI port (default 8080)")
    demo = sub.add_parser("demo", help="run the pipeline in-process and print a summary (make demo)")
    demo.add_argument("--days", type=int, default=5, help="how many recent business days to ingest")
    sub.add_parser("gx-init", help="rewrite the committed Great Expectations project from the code")
    decide = sub.add_parser("decide", help="approve or reject a held extreme move (what Required actions does in the UI)")
    decide.add_argument("ticker")
    decide.add_argument("day", help="the held day, YYYY-MM-DD")
    decide.add_argument("decision", choices=["approve", "reject"])
    decide.add_argument("--reason", required=True, help="why: kept in the audit trail")
    sub.add_parser("watchlist", help="each ticker's latest ingest outcome (published, quarantined, held, ...)")
    sub.add_parser("history", help="every champion change: when, from -> to, why, which DAG run")
    sub.add_parser("migrate-home", help="move an older home's file manifests and pointers into the stores "
                   "(STOCKOPS_STATE_DB, STOCKOPS_BLOB_URL); run once, again after an interruption")
    sub.add_parser("dora", help="DORA metrics from the platform's records (table, JSON, chart); --help for options",
                   add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command != "dora" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    if args.command == "run":
        from stockops.launch.local import run_local

        return run_local(args.port)
    if args.command == "demo":
        from stockops.launch.demo import run_demo

        run_demo(args.days)
        return 0
    if args.command == "history":
        from stockops.core.settings import get_settings
        from stockops.registry.changes import format_history, history

        print(format_history(history(get_settings())))
        return 0
    if args.command == "dora":
        from stockops.reporting.dora import main as dora_main

        return dora_main(rest)
    if args.command == "decide":
        import getpass

        from stockops.core.settings import get_settings
        from stockops.data.decisions import APPROVED, REJECTED, record_decision

        settings = get_settings()
        ticker = args.ticker.upper()
        if ticker not in settings.tickers:
            parser.error(f"{ticker} is not in the watchlist ({' '.join(settings.tickers)})")
        record_decision(settings, ticker, [args.day], APPROVED if args.decision == "approve" else REJECTED,
                        by=f"cli:{getpass.getuser()}", reason=args.reason)
        print(f"{ticker} {args.day}: {args.decision}d; the next ingest of {ticker} acts on it")
        return 0
    if args.command == "watchlist":
        from stockops.core.settings import get_settings
        from stockops.ingest import format_watchlist, watchlist_status

        print(format_watchlist(watchlist_status(get_settings())))
        return 0
    if args.command == "migrate-home":
        import logging

        from stockops.core.settings import get_settings
        from stockops.data.migrate import migrate_home

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        done = migrate_home(get_settings())
        print(done.summary())
        return 1 if done.skipped else 0
    if args.command == "gx-init":
        from stockops.core.settings import get_settings
        from stockops.data.gxproject import write_gx_project

        print(write_gx_project(get_settings().gx_project_dir))
        return 0
    return 2

