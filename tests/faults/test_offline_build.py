"""A bento is built with the network cut: its packages come pinned from the project's lock, nothing is resolved.

The build (``python -m stockops.serving pack``, the child process ``build_bento`` starts) runs in a network
namespace of its own (``unshare -n``: loopback only), on a real HARX-GKO baseline fitted to the shipped GOOG
series: the cheapest real model, no TensorFlow. BentoML 1.4 would otherwise lock the packages against the
index at build time (``uv pip compile``) and fail offline ("Failed to lock PyPI packages").
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from stockops.model.baselines import fit_harx
from stockops.serving import runtime
from stockops.serving.build import LOCK_FILE, existing_bento, read_lock, service_requirements

pytestmark = pytest.mark.faults


def no_network_prefix() -> list[str]:
    """``unshare -n`` (root) or ``unshare -rn`` (a user namespace), whichever this machine allows; else skip."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed: no way to cut the network of one process")
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    pytest.skip("neither `unshare -n` nor `unshare -rn` is allowed here (no network namespaces)")


def test_a_bento_builds_offline_with_the_lock_pins(settings, goog, tmp_path):
    offline = no_network_prefix()
    reach_out = "import socket; socket.create_connection(('192.0.2.1', 443), timeout=2)"  # TEST-NET-1
    cut = subprocess.run([*offline, sys.executable, "-c", reach_out], capture_output=True, text=True)
    assert cut.returncode != 0 and "unreachable" in cut.stderr, "the namespace must have no route out"

    staging = tmp_path / "staging"
    model = fit_harx({"GOOG": goog}, np.datetime64("2015-01-02"))
    model.save(staging)
    (staging / "metadata.json").write_text(json.dumps({
        "model_name": "stockops_risk", "registry_version": "1", "mlflow_run_id": "0fflinebuild0000",
        "snapshot_hash": "", "snapshot_last_date": "", "logical_date": "", "ticker": "GOOG", "gate_decision": "",
        "watchlist": "GOOG", "market": "", "window": model.calibration.window, "history": model.calibration.history,
        "model_kind": model.kind}))

    built = subprocess.run([*offline, sys.executable, "-m", "stockops.serving", "pack", str(staging)],
                           env=runtime.environment(settings), capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr[-3000:]
    record = json.loads(built.stdout.strip().splitlines()[-1])
    assert record["bento_tag"] == "goog_forecast:v1-0fflineb"
    assert existing_bento(settings, record["bento_tag"])["history"] == model.calibration.history

    # what the bento will install: exactly the lock's pins, the service's packages and all they depend on
    pins, _ = read_lock(LOCK_FILE)
    lines = [x for x in (settings.bentoml_home / "bentos" / "goog_forecast" / "v1-0fflineb" / "env" / "python"
                         / "requirements.txt").read_text().splitlines() if x.strip()]
    recorded = dict(x.split("==", 1) for x in lines)
    assert all(x.count("==") == 1 for x in lines), lines
    assert len(recorded) == len(lines), "one pin per package"
    assert recorded == {name: pins[name] for name in recorded}, "every pin is the lock's"
    assert {"bentoml", "numpy", "pandas", "pydantic", "pydantic-core", "pyarrow", "starlette", "uvicorn"} <= set(recorded)
    assert "tensorflow-cpu" not in recorded, "the baseline's bento carries no TensorFlow"
    assert set(recorded) - {"bentoml"} == {x.split("==")[0] for x in service_requirements("harx_gko")}


def test_the_lstm_needs_no_tensorflow_to_serve():
    """Its forward pass is the portable core's numpy: the LSTM's bento pins what the baseline's pins."""
    lstm = dict(x.split("==") for x in service_requirements("lstm"))
    assert "tensorflow-cpu" not in lstm and "keras" not in lstm
    assert lstm == dict(x.split("==") for x in service_requirements("harx_gko"))
    assert "mlflow" not in lstm and "apache-airflow" not in lstm, "only what the service needs"
