"""Serving: bentos of registry versions behind one stable address that cannot split from ``@champion``.

One job per module:

* :mod:`~stockops.serving.build` — a registry version → a bento (the compiled network, its
  calibration and the feature code);
* :mod:`~stockops.serving.change` — what a deploy is asked to do: :class:`Change`, the :class:`Deployer`
  interface, :class:`DeployError`;
* :mod:`~stockops.serving.deploy` — the local critical section (switch → ``@champion`` → audit log)
  and :func:`reconcile`;
* :mod:`~stockops.serving.records` — the deploy log's attempts and the audit log's champion changes;
* :mod:`~stockops.serving.checks` — the smoke check of a bento and :func:`verify` (serving == ``@champion``
  == audit);
* :mod:`~stockops.serving.agent` — the same deploys carried out by the serving agent (compose);
* :mod:`~stockops.serving.fleet` — several serving hosts: the agents' heartbeats, the version the front proxy
  routes to;
* :mod:`~stockops.serving.steps` — the entry points (``deploy``, ``serve_champion``, the
  ``stock_train`` steps) and the one choice of deployer;
* :mod:`~stockops.serving.supervisor` — heals a dead proxy or bento, reconciles, records incidents;
* :mod:`~stockops.serving.runtime` — starting and stopping the processes (owned, by pid);
* :mod:`~stockops.serving.state` — the state files and their locks;
* :mod:`~stockops.serving.requests` — ``/predict`` bodies from snapshots.

The names below are the package's public face; DAG files import them from here.
"""

from stockops.serving.build import build_bento
from stockops.serving.change import Change, Deployer, DeployError
from stockops.serving.checks import check_bento, smoke_body, verify
from stockops.serving.deploy import reconcile
from stockops.serving.records import deploys
from stockops.serving.requests import market_frame, request_body
from stockops.serving.runtime import ServingError, ensure_running, stop_serving
from stockops.serving.state import CorruptState, current, standby
from stockops.serving.steps import (
    build_candidate_bento,
    check_serving,
    deploy,
    deploy_candidate,
    deployer,
    serve_champion,
    verify_candidate,
)

__all__ = ["Change", "CorruptState", "DeployError", "Deployer", "ServingError", "build_bento", "build_candidate_bento",
           "check_bento", "check_serving", "current", "deploy", "deploy_candidate", "deployer", "deploys", "ensure_running",
           "market_frame", "reconcile", "request_body", "serve_champion", "smoke_body", "standby", "stop_serving",
           "verify", "verify_candidate"]
