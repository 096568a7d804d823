"""``python -m stockops.serving``: pack (internal), stop, reconcile, supervise, agent."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

from stockops.core.settings import get_settings


def _logging(settings, name: str) -> None:
    """Log to a rotating file under the serving logs (stdout only carries start-up failures)."""
    from stockops.serving.state import logs_dir

    handler = RotatingFileHandler(logs_dir(settings) / f"{name}.log", maxBytes=settings.log_max_bytes, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _alive(settings, kill_stale: bool) -> int:
    import os
    import signal

    from stockops.serving.runtime import supervisor_state

    record, problem = supervisor_state(settings)
    if problem is None:
        print(f"alive: pid {record['pid']}, last heartbeat {record['heartbeat_at']:.0f}")
        return 0
    print(f"{problem}: {record or 'no record'} ({settings.serving_dir})")
    if problem == "hung" and kill_stale and int(record.get("pid") or 0) > 1:
        os.kill(int(record["pid"]), signal.SIGKILL)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stockops.serving")
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("pack", help="(internal) put a staged model into the BentoML store and build its bento")
    pack.add_argument("staging", type=Path)
    sub.add_parser("stop", help="stop the serving proxy, bentos and supervisor of this home")
    sub.add_parser("reconcile", help="make the endpoint and the audit log follow @champion now")
    sub.add_parser("supervise", help="(started with the proxy) heal the proxy and bento, reconcile, record incidents")
    alive = sub.add_parser("alive", help="exit 0 if the supervisor (or agent) beats, 1 if it is gone or hung "
                                         "(the compose health check)")
    alive.add_argument("--kill-stale", action="store_true",
                       help="SIGKILL a hung one (its container's init exits and the restart policy restarts it)")
    agent = sub.add_parser("agent", help="serve the champion here and carry out deploy requests (compose `serving`)")
    agent.add_argument("--interval", type=float, default=0.25, help="seconds between looks for requests")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command == "pack":
        from stockops.serving.build import pack as pack_staged

        print(json.dumps(pack_staged(args.staging)))
    elif args.command == "stop":
        from stockops.serving.runtime import stop_serving

        stop_serving(settings)
    elif args.command == "reconcile":
        from stockops.serving.deploy import reconcile

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        print(json.dumps(reconcile(settings)))
    elif args.command == "supervise":
        from stockops.serving import runtime, supervisor

        _logging(settings, "supervisor")
        runtime.SUPERVISED_HERE = True
        supervisor.run(settings)
    elif args.command == "alive":
        return _alive(settings, args.kill_stale)
    elif args.command == "agent":
        from stockops.serving import runtime
        from stockops.serving.agent import run_agent

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        runtime.SUPERVISED_HERE = True
        run_agent(settings, interval=args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
