"""Serving: build a bento for a registry version, deploy it behind a health check, stop serving.

build:  MLflow version (a pyfunc risk forecaster) -> its network's compiled TF SavedModel +
        its calibration (``forecaster.json``) + the preprocessing code it needs
        (``stockops/forecaster.py``, ``risk_inputs.py``) -> BentoML model store -> ``bentoml build``
        of ``bento/service.py`` whose tag and labels carry the registry version, the MLflow run
        id and the snapshot hash. The BentoML part runs in a child process with ``BENTOML_HOME``
        under the stockops home (BentoML fixes its home per process).
deploy: the new bento starts on a free loopback port, must pass ``/readyz`` and a smoke
        prediction on the latest snapshot (real OHLCV, with the market reference's closes), and
        only then becomes the upstream of the stable address (``stockops.proxy``); the old bento
        is stopped after in-flight requests finish.
        A failure stops the new process and leaves the old one serving. Every attempt is
        recorded in ``deploys.jsonl`` for the DORA report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from stockops import audit, registry
from stockops.config import REPO_ROOT, Settings, get_settings
from stockops.processes import free_port, http_json, pid_alive, port_in_use, stop_pid_tree, venv_bin, wait_until

log = logging.getLogger(__name__)

BENTO_DIR = REPO_ROOT / "bento"


class DeployError(RuntimeError):
    """A bento failed its health check or smoke prediction; the old one keeps serving."""


def bentoml_environment(settings: Settings) -> dict[str, str]:
    """Environment for BentoML processes: the stores and the prediction log under the home."""
    return {"BENTOML_HOME": str(settings.bentoml_home), "BENTOML_DO_NOT_TRACK": "True",
            "STOCKOPS_HOME": str(settings.home), "STOCKOPS_PREDICTION_LOG": str(settings.prediction_log)}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---- build -------------------------------------------------------------------------------------
def build_bento(settings: Settings, model_name: str, version: str) -> dict:
    """Pack registry version ``version`` of ``model_name`` into a bento; reuse one already built."""
    registry.setup(settings)
    mv = registry.get_version(settings, version, model_name=model_name)
    existing = existing_bento(settings, mv.tags.get("bento_tag", ""))
    if existing is not None:  # e.g. a rollback: no TensorFlow import, no export, no build
        log.info("reusing bento %s for %s v%s", existing["bento_tag"], model_name, version)
        return {**existing, "model_name": model_name, "version": str(version)}
    return _build_bento(settings, mv)


def existing_bento(settings: Settings, bento_tag: str) -> dict | None:
    """The build record of a bento already in this home's BentoML store, read from its YAML files."""
    import yaml

    if ":" not in bento_tag:
        return None
    name, tag_version = bento_tag.split(":", 1)
    bento_yaml = settings.bentoml_home / "bentos" / name / tag_version / "bento.yaml"
    if not bento_yaml.exists():
        return None
    bento = yaml.safe_load(bento_yaml.read_text())
    (model_tag,) = [m["tag"] for svc in bento.get("services", []) for m in svc.get("models", [])]
    model_name, model_version = model_tag.split(":", 1)
    model_yaml = settings.bentoml_home / "models" / model_name / model_version / "model.yaml"
    if not model_yaml.exists():
        return None
    metadata = yaml.safe_load(model_yaml.read_text())["metadata"]
    if "history" not in metadata:  # a bento of the retired close-only model: build a new one
        return None
    return {"bento_tag": bento_tag, "bento_model": model_tag, "bento_path": str(bento_yaml.parent),
            **{k: metadata[k] for k in ("mlflow_run_id", "snapshot_hash", "window", "history")}}


def _build_bento(settings: Settings, mv) -> dict:
    from dataclasses import asdict

    model_name, version = mv.name, mv.version
    run = registry.get_run(mv.run_id)
    metadata = {
        "model_name": model_name, "registry_version": str(version), "mlflow_run_id": mv.run_id,
        "snapshot_hash": run.data.tags.get("snapshot_hash", mv.tags.get("snapshot_hash", "")),
        "snapshot_last_date": run.data.tags.get("snapshot_last_date", ""),
        "logical_date": run.data.tags.get("logical_date", ""), "ticker": settings.ticker,
        "gate_decision": mv.tags.get("gate_decision", ""),
    }
    staging = settings.serving_dir / "staging" / f"{model_name}-v{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    started = time.perf_counter()
    forecaster = registry.load_forecaster(registry.model_uri(model_name, version))
    metadata["window"] = forecaster.calibration.window
    metadata["history"] = forecaster.calibration.history
    # the compiled graph takes standardised feature windows: signature "serve", input "features" (n, window, 8)
    forecaster.network.export(str(staging / "saved_model"), format="tf_saved_model", verbose=False)
    (staging / "forecaster.json").write_text(json.dumps(asdict(forecaster.calibration), indent=1))
    (staging / "metadata.json").write_text(json.dumps(metadata, indent=2))
    result = subprocess.run([sys.executable, "-m", "stockops.serving", "pack", str(staging)],
                            env={**os.environ, **bentoml_environment(settings)}, capture_output=True, text=True,
                            timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"bento build for {model_name} v{version} failed:\n{result.stderr[-4000:]}")
    built = json.loads(result.stdout.strip().splitlines()[-1])
    shutil.rmtree(staging, ignore_errors=True)
    registry.tag_version(settings, version, model_name=model_name, bento_tag=built["bento_tag"])
    log.info("bento %s (model %s) for %s v%s in %.1f s", built["bento_tag"], built["bento_model"], model_name,
             version, time.perf_counter() - started)
    return {**built, "model_name": model_name, "version": str(version), **{k: metadata[k] for k in
            ("mlflow_run_id", "snapshot_hash", "window", "history")}}


# What a bento needs of stockops to turn raw OHLCV into the network's input, copied into its model
# (``code/stockops/``): a bento served outside this project's environment imports it from there.
SERVED_CODE = ("forecaster.py", "risk_inputs.py")


def _pack(staging: Path) -> dict:
    """In a child process with BENTOML_HOME set: model store entry + ``bentoml build``."""
    import bentoml
    from bentoml.exceptions import NotFound

    metadata = json.loads((staging / "metadata.json").read_text())
    version = f"v{metadata['registry_version']}-{metadata['mlflow_run_id'][:8]}"
    model_tag = f"{metadata['model_name'].lower()}:{version}"
    try:
        bentoml.models.get(model_tag)
    except NotFound:
        with bentoml.models.create(model_tag, labels={"registry_version": metadata["registry_version"]},
                                   metadata=metadata) as model:
            shutil.copytree(staging / "saved_model", model.path_of("saved_model"))
            shutil.copy2(staging / "forecaster.json", model.path_of("forecaster.json"))
            code = Path(model.path_of("code")) / "stockops"
            code.mkdir(parents=True)
            (code / "__init__.py").write_text("")
            package = Path(__file__).resolve().parent
            for name in SERVED_CODE:
                shutil.copy2(package / name, code / name)
    bento_tag = f"{metadata['ticker'].lower()}_forecast:{version}"
    try:
        bento = bentoml.bentos.get(bento_tag)
    except NotFound:
        with contextlib.chdir(BENTO_DIR):
            bento = bentoml.bentos.build(
                "service:StockForecast", name=bento_tag.split(":")[0], version=version, build_ctx=str(BENTO_DIR),
                include=["service.py"], args={"model_tag": model_tag},
                description=f"{metadata['model_name']} v{metadata['registry_version']}: next-day return distribution",
                labels={"registry_version": metadata["registry_version"], "model_name": metadata["model_name"],
                        "mlflow_run_id": metadata["mlflow_run_id"], "snapshot_hash": metadata["snapshot_hash"],
                        "ticker": metadata["ticker"]},
                python={"packages": _service_requirements()})
    return {"bento_tag": str(bento.tag), "bento_model": model_tag, "bento_path": bento.path}


def _service_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("bentoml", "tensorflow-cpu", "numpy", "pandas", "pydantic")]


# ---- the serving state ----------------------------------------------------------------------
def state_path(settings: Settings) -> Path:
    return settings.serving_dir / "current.json"


def proxy_path(settings: Settings) -> Path:
    return settings.serving_dir / "proxy.json"


def standby_path(settings: Settings) -> Path:
    return settings.serving_dir / "standby.json"


def current(settings: Settings) -> dict:
    """What the stable address routes to now (empty if nothing was deployed)."""
    path = state_path(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def standby(settings: Settings) -> dict:
    """The previous bento, kept running after a switch so that going back to it is only a switch."""
    path = standby_path(settings)
    record = json.loads(path.read_text()) if path.exists() else {}
    return record if pid_alive(record.get("pid")) else {}


def _write_json(path: Path, data: dict) -> None:
    from stockops.data.store import atomic_write_json

    atomic_write_json(path, data)


def ensure_proxy(settings: Settings) -> dict:
    """Start the stable-address proxy unless it already runs; return its record."""
    path = proxy_path(settings)
    record = json.loads(path.read_text()) if path.exists() else {}
    url = settings.serve_url
    if pid_alive(record.get("pid")) and _proxy_answers(url):
        return record
    if port_in_use(settings.serve_host, settings.serve_port):
        raise DeployError(f"{url} is taken by a process that is not the stockops proxy: free the port or set "
                          "STOCKOPS_SERVE_PORT")
    settings.serving_dir.mkdir(parents=True, exist_ok=True)
    with open(_logs_dir(settings) / "proxy.log", "ab") as log_file:  # the child keeps its own copy
        proc = subprocess.Popen([sys.executable, "-m", "stockops.proxy", "--state", str(state_path(settings)),
                                 "--host", settings.serve_host, "--port", str(settings.serve_port)],
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    wait_until(lambda: _proxy_answers(url), timeout=30, interval=0.2, what=f"proxy at {url}", proc=proc)
    record = {"pid": proc.pid, "url": url, "started_at": _now()}
    _write_json(path, record)
    log.info("serving proxy started at %s (pid %d)", url, proc.pid)
    return record


def _proxy_answers(url: str) -> bool:
    status, _ = http_json(f"{url}/-/stockops/upstream", timeout=2)
    return status == 200


def _logs_dir(settings: Settings) -> Path:
    folder = settings.serving_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---- deploy ------------------------------------------------------------------------------------
def start_bento(settings: Settings, bento_tag: str, port: int) -> subprocess.Popen:
    """``bentoml serve <bento_tag>`` on loopback, in a session of its own so it outlives the task."""
    log_path = _logs_dir(settings) / f"{bento_tag.replace(':', '-')}-{port}.log"
    log.info("starting %s on 127.0.0.1:%d (log %s)", bento_tag, port, log_path)
    with open(log_path, "ab") as log_file:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([venv_bin("bentoml"), "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)],
                                cwd=settings.serving_dir, env={**os.environ, **bentoml_environment(settings)},
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


# ---- requests ------------------------------------------------------------------------------------
def request_body(frame, market=None, as_of=None, rows: int | None = None) -> dict:
    """The ``/predict`` body for daily OHLCV rows (oldest first): its last ``rows`` rows (all if None).

    ``market``: the market reference's closes, either a frame with ``Date`` and ``Close`` (a
    snapshot: aligned on ``frame``'s dates, the last known close carried over a day it lacks) or
    a sequence with one close per row of ``frame``. ``as_of``: the trading day of the last row
    (a date or ISO string; ``True`` takes it from ``frame``'s ``Date``).
    """
    import numpy as np
    import pandas as pd

    frame = frame.reset_index(drop=True)
    if market is not None and not isinstance(market, pd.DataFrame):
        market = np.asarray(market, dtype=np.float64)
        if len(market) != len(frame):
            raise ValueError(f"market has {len(market)} closes for {len(frame)} OHLCV rows")
    if rows is not None:
        frame = frame.iloc[-rows:]
        market = market if market is None or isinstance(market, pd.DataFrame) else market[-rows:]
    body: dict = {key: frame[column].to_numpy(dtype=np.float64).tolist()
                  for key, column in (("open", "Open"), ("high", "High"), ("low", "Low"), ("closes", "Close"))}
    body["volume"] = [int(v) if v.is_integer() else v for v in frame["Volume"].to_numpy(dtype=np.float64).tolist()]
    if isinstance(market, pd.DataFrame):  # a snapshot: its closes on the frame's days, carried over gaps
        dates = frame["Date"].to_numpy(dtype="datetime64[D]")
        closes = pd.Series(market["Close"].to_numpy(np.float64), index=market["Date"].to_numpy(dtype="datetime64[D]"))
        closes = closes[~closes.index.duplicated(keep="last")].sort_index()
        market = closes.reindex(closes.index.union(dates)).ffill().reindex(dates).to_numpy()
    if market is not None and np.all(np.isfinite(market)):  # else: the reference starts after these rows
        body["market"] = market.tolist()
    if as_of is True:
        as_of = pd.Timestamp(frame["Date"].iloc[-1]).date()
    if as_of:
        body["as_of"] = as_of if isinstance(as_of, str) else as_of.isoformat()
    return body


def market_frame(settings: Settings):
    """The market reference's latest published snapshot (``settings.market``, QQQ), or None."""
    from stockops.ingest import store_for

    if not settings.market:
        return None
    store = store_for(settings, settings.market)
    return store.load() if store.latest() is not None else None


def smoke_body(settings: Settings, history: int) -> dict:
    """A real request: the model ticker's latest snapshot, its last ``2 * history`` rows, with the market
    reference's closes when it has a snapshot; a synthetic OHLCV series in a home without data."""
    from stockops.forecaster import synthetic_ohlcv
    from stockops.ingest import store_for

    store = store_for(settings)
    if store.latest() is not None:
        return request_body(store.load(), market=market_frame(settings), rows=2 * history)
    return request_body(synthetic_ohlcv(2 * history))


def check_bento(url: str, body: dict, version: str) -> dict:
    """A smoke prediction: a finite forecast within 50 % of the last close, quantiles in order, a positive
    volatility, from the right version."""
    status, answer = http_json(f"{url}/predict", body, timeout=30, headers={"X-Stockops-Smoke": "1"})
    if status != 200 or not isinstance(answer, dict):
        raise DeployError(f"smoke prediction at {url} answered HTTP {status}: {str(answer)[:500]}")
    last_close = body["closes"][-1]
    forecast = answer.get("forecast")
    if not _finite(forecast) or forecast <= 0 or abs(forecast / last_close - 1) > 0.5:
        raise DeployError(f"smoke prediction at {url} is implausible: {forecast!r} after a last close of {last_close}")
    quantiles = list((answer.get("quantiles") or {}).values())
    if len(quantiles) != 7 or not all(_finite(q) for q in quantiles) \
            or any(b < a for a, b in zip(quantiles, quantiles[1:], strict=False)):
        raise DeployError(f"smoke prediction at {url} has missing, non-finite or crossing quantiles: "
                          f"{answer.get('quantiles')!r}")
    volatility = answer.get("volatility")
    if not _finite(volatility) or volatility <= 0:
        raise DeployError(f"smoke prediction at {url} has a volatility of {volatility!r}")
    if answer.get("model_version") != str(version):
        raise DeployError(f"smoke prediction at {url} came from version {answer.get('model_version')!r}, "
                          f"not {version}")
    return answer


def _finite(value) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


def deploy(settings: Settings, bento_tag: str, version: str, *, reason: str = "", dag_run_id: str = "",
           window: int | None = None, kind: str = "promotion", snapshot_hash: str = "", request_id: str = "") -> dict:
    """Start ``bento_tag``, check it, switch the stable address to it, stop the old one.

    Raises DeployError (after stopping the new process) if the new bento fails; the old
    one keeps serving and the record says why. Deploys of one home run one at a time.
    ``kind`` (promotion, rollback, serve) and ``snapshot_hash`` go into the deploy record
    for the DORA report.
    """
    from stockops.data.store import file_lock

    base = {"kind": kind, "snapshot_hash": snapshot_hash, "reason": reason, "dag_run_id": dag_run_id}
    if request_id:
        base["request_id"] = request_id
    if settings.serving_mode == "agent":
        return _deploy_through_agent(settings, {**base, "bento_tag": bento_tag, "version": str(version),
                                                "window": window})
    with file_lock(settings.serving_dir / ".deploy.lock"):
        return _deploy(settings, bento_tag, str(version), window=window, base=base)


def _deploy(settings: Settings, bento_tag: str, version: str, *, window: int | None, base: dict) -> dict:
    started, started_at = time.monotonic(), _now()
    previous, warm = current(settings), standby(settings)
    base = {**base, "bento_tag": bento_tag, "version": str(version), "previous_version": previous.get("version"),
            "previous_bento_tag": previous.get("bento_tag"), "started_at": started_at}
    ensure_proxy(settings)
    proc = None
    if warm.get("bento_tag") == bento_tag:  # going back to the previous bento: it is still running
        port, url, pid = int(warm["port"]), warm["upstream"], int(warm["pid"])
        base["warm_standby"] = True
        log.info("%s is the warm standby (pid %d): checking it and switching back, no start-up", bento_tag, pid)
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_bento(settings, bento_tag, port)
        pid = proc.pid
    try:
        wait_until(lambda: http_json(f"{url}/readyz", timeout=2)[0] == 200, timeout=settings.serve_ready_timeout_s,
                   interval=0.2, what=f"{bento_tag} /readyz at {url}", proc=proc)
        smoke = check_bento(url, smoke_body(settings, _history(window)), version)
    except Exception as exc:
        stop_pid_tree(pid, grace=10)
        if warm.get("pid") == pid:
            standby_path(settings).unlink(missing_ok=True)
        _record_deploy(settings, {**base, "outcome": "failed", "error": str(exc),
                                  "seconds": round(time.monotonic() - started, 2)})
        where = (f"v{previous.get('version')} ({previous.get('bento_tag')}) keeps serving at {settings.serve_url}"
                 if previous else f"nothing was serving at {settings.serve_url} and nothing is now")
        raise DeployError(f"deploy of {bento_tag} failed its health check: {exc}. {where}") from exc

    _write_json(state_path(settings), {"upstream": url, "port": port, "pid": pid, "bento_tag": bento_tag,
                                       "version": str(version), "since": _now(), "reason": base["reason"]})
    wait_until(lambda: http_json(f"{settings.serve_url}/-/stockops/upstream", timeout=2)[1].get("upstream") == url,
               timeout=10, interval=0.05, what="proxy switch")
    switched = time.monotonic()
    _keep_previous_warm(settings, previous, warm, pid)
    record = _record_deploy(settings, {**base, "outcome": "succeeded", "url": settings.serve_url,
                                       "seconds": round(time.monotonic() - started, 2),
                                       "switched_after_s": round(switched - started, 2),
                                       "smoke_forecast": smoke["forecast"]})
    log.info("%s v%s now answers at %s (%.1f s; previous: %s)", bento_tag, version, settings.serve_url,
             record["seconds"], previous.get("bento_tag") or "none")
    return record


def _history(window: int | None) -> int:
    """Rows the model of ``window`` needs (window + the features' warm-up)."""
    from stockops.forecaster import WARMUP

    return (window or 100) + WARMUP  # no window given: enough days for any usual one


# ---- agent mode: the endpoint runs elsewhere (compose: the `serving` container) ------------------
def _deploy_through_agent(settings: Settings, request: dict) -> dict:
    """Hand the deploy to the serving agent through the shared home and wait for its record."""
    import uuid

    from stockops.data.store import atomic_write_json

    request = {**request, "request_id": uuid.uuid4().hex, "requested_at": _now()}
    settings.deploy_requests_dir.mkdir(parents=True, exist_ok=True)
    path = settings.deploy_requests_dir / f"{request['requested_at']}-{request['request_id']}.json"
    atomic_write_json(path, request)
    log.info("deploy of %s v%s handed to the serving agent (request %s)", request["bento_tag"], request["version"],
             request["request_id"])
    deadline = time.monotonic() + settings.serve_ready_timeout_s + 60
    while time.monotonic() < deadline:
        record = next((r for r in deploys(settings) if r.get("request_id") == request["request_id"]), None)
        if record is not None:
            if record["outcome"] != "succeeded":
                raise DeployError(f"the serving agent could not deploy {request['bento_tag']}: {record['error']}")
            return record
        time.sleep(0.2)
    path.unlink(missing_ok=True)
    raise DeployError(f"no serving agent took deploy request {path.name} within "
                      f"{settings.serve_ready_timeout_s + 60:.0f} s: is `python -m stockops.serving agent` (the "
                      "compose `serving` service) running with the same STOCKOPS_HOME? Nothing was changed.")


def run_agent(settings: Settings, interval: float = 0.25, once: bool = False) -> None:
    """The serving agent: keep the endpoint up (serving the champion at start) and carry out deploy requests."""
    import signal

    settings = replace(settings, serving_mode="local")  # the agent is where deploys happen
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    ensure_proxy(settings)
    try:
        serve_champion(settings, reason="serving agent start")
    except Exception as exc:  # noqa: BLE001 - the agent must keep taking requests
        log.error("could not serve the champion at start: %s", exc)
    log.info("serving agent: endpoint %s, waiting for requests in %s", settings.serve_url,
             settings.deploy_requests_dir)
    while not stopping:
        settings.deploy_requests_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(settings.deploy_requests_dir.glob("*.json")):
            request = json.loads(path.read_text())
            try:
                deploy(settings, request["bento_tag"], request["version"],
                       reason=request.get("reason", ""), dag_run_id=request.get("dag_run_id", ""),
                       window=request.get("window"), kind=request.get("kind", "promotion"),
                       snapshot_hash=request.get("snapshot_hash", ""), request_id=request["request_id"])
            except DeployError as exc:
                log.error("%s", exc)  # recorded by _deploy, with the request id, for the requester
            except Exception as exc:  # noqa: BLE001
                _record_deploy(settings, {**request, "outcome": "failed", "error": f"agent error: {exc}"})
            path.unlink(missing_ok=True)
        if once:
            return
        time.sleep(interval)
    stop_serving(settings)


def _keep_previous_warm(settings: Settings, previous: dict, warm: dict, serving_pid: int) -> None:
    """The bento just replaced becomes the warm standby (a rollback to it is then a switch, seconds);
    the standby before it, which took no traffic, is stopped. So at most two bentos run."""
    keep = previous if previous.get("pid") not in (None, serving_pid) and pid_alive(previous.get("pid")) else {}
    if keep:
        _write_json(standby_path(settings), {**keep, "standby_since": _now()})
    else:
        standby_path(settings).unlink(missing_ok=True)
    if warm.get("pid") not in (None, serving_pid, keep.get("pid")):
        stop_pid_tree(int(warm["pid"]), grace=15)


def _record_deploy(settings: Settings, fields: dict) -> dict:
    return audit.record(settings.deploy_log, "deploy", **{"ticker": settings.ticker, **fields})


def deploys(settings: Settings) -> list[dict]:
    return audit.read(settings.deploy_log)


def stop_serving(settings: Settings) -> None:
    """Stop the current bento, the warm standby and the proxy (by process id) and forget them."""
    for state in (current(settings), standby(settings)):
        if state.get("pid"):
            stop_pid_tree(int(state["pid"]), grace=15)
    state_path(settings).unlink(missing_ok=True)
    standby_path(settings).unlink(missing_ok=True)
    path = proxy_path(settings)
    if path.exists():
        stop_pid_tree(int(json.loads(path.read_text())["pid"]), grace=5)
        path.unlink(missing_ok=True)


def serve_champion(settings: Settings, reason: str = "serve the current champion") -> dict | None:
    """Make the stable address serve ``@champion`` (build its bento if needed); None without a champion."""
    registry.setup(settings)
    champion = registry.champion_version(settings)
    if champion is None:
        return None
    state = current(settings)
    if state.get("version") == str(champion.version) and pid_alive(state.get("pid")) \
            and _proxy_answers(settings.serve_url):
        return state
    built = build_bento(settings, settings.model_name, champion.version)
    return deploy(settings, built["bento_tag"], champion.version, reason=reason, window=built["window"], kind="serve",
                  snapshot_hash=built["snapshot_hash"])


# ---- the stock_train steps ----------------------------------------------------------------------
def build_candidate_bento(registered: dict) -> dict:
    """``stock_train``'s build step (only after the gate said yes)."""
    settings = get_settings()
    built = build_bento(settings, registered["model_name"], registered["version"])
    return {**registered, "bento": built}


def deploy_candidate(built: dict, trigger_reason: str = "", dag_run_id: str = "") -> dict:
    """``stock_train``'s deploy step: health-checked switch; a failure leaves champion and endpoint as they were."""
    settings = get_settings()
    registry.setup(settings)
    bento = built["bento"]
    try:
        record = deploy(settings, bento["bento_tag"], built["version"], reason=trigger_reason or "gate passed",
                        dag_run_id=dag_run_id, window=bento["window"], kind="promotion",
                        snapshot_hash=bento["snapshot_hash"])
    except DeployError as exc:
        registry.tag_version(settings, built["version"], model_name=built["model_name"],
                             deploy=f"failed: {str(exc)[:4000]}")
        log.error("%s; champion stays where it was", exc)
        raise
    registry.tag_version(settings, built["version"], model_name=built["model_name"],
                         deploy=f"succeeded {record['at']} as {bento['bento_tag']}")
    return {**built, "deploy": record}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stockops.serving")
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("pack", help="(internal) put a staged model into the BentoML store and build its bento")
    pack.add_argument("staging", type=Path)
    sub.add_parser("stop", help="stop the serving proxy and bento of this home")
    agent = sub.add_parser("agent", help="serve the champion here and carry out deploy requests (compose `serving`)")
    agent.add_argument("--interval", type=float, default=0.25, help="seconds between looks for requests")
    args = parser.parse_args(argv)
    if args.command == "pack":
        print(json.dumps(_pack(args.staging)))
    elif args.command == "stop":
        stop_serving(get_settings())
    elif args.command == "agent":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        run_agent(get_settings(), interval=args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
