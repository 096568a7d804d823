"""The bento's last lines of defence that no request to a healthy served model can reach.

A model whose output is NaN never serves (its start-up probe refuses it), so the 422 for a
non-finite forecast is checked on the function that builds the answer's prices. The log cap is
checked in a fresh interpreter, where ``log_to_rotating_file`` may rewire logging freely. The
rest (bad input, Host check, one-line refusals, torn prediction log) runs on the real server in
``tests/integration/test_serving.py``.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults

BENTO_DIR = Path(__file__).resolve().parents[2] / "bento"


@pytest.fixture(scope="module")
def service():
    spec = importlib.util.spec_from_file_location("stockops_bento_service", BENTO_DIR / "service.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # no model at hand: the import still works (as for reading the spec)
    yield module
    sys.modules.pop(spec.name, None)


QUANTILES = {"q05": -0.02, "q50": 0.0, "q95": 0.02}


@pytest.mark.parametrize(("point", "variance", "quantiles"), [
    (math.nan, 1e-4, QUANTILES),
    (0.0, math.inf, QUANTILES),
    (800.0, 1e-4, QUANTILES),  # exp(800) overflows: math.exp raised OverflowError (a 500) before
    (0.0, 1e-4, {**QUANTILES, "q95": 1e6}),
])
def test_a_non_finite_forecast_is_a_422_not_a_500(service, point, variance, quantiles):
    with pytest.raises(service.UnusableForecast, match="not a finite number") as refused:
        service.implied_prices(100.0, point, variance, quantiles)
    assert refused.value.error_code == 422


def test_finite_forecasts_give_prices(service):
    prices = service.implied_prices(100.0, 0.01, 1e-4, QUANTILES)
    assert prices["point"] == pytest.approx(100.0 * math.exp(0.01)) and prices["q50"] == pytest.approx(100.0)


def test_service_logs_rotate_under_their_size_cap(tmp_path):
    """STOCKOPS_LOG_MAX_BYTES caps each file; 3 older files are kept; nothing goes to stdout."""
    script = f"""
import importlib.util, logging, sys
spec = importlib.util.spec_from_file_location("svc", {str(BENTO_DIR / "service.py")!r})
svc = importlib.util.module_from_spec(spec); sys.modules[spec.name] = svc; spec.loader.exec_module(svc)
logging.basicConfig()  # a console handler, as BentoML's server configuration has
print(svc.log_to_rotating_file())
for i in range(2000):
    logging.getLogger("bentoml").warning("line %d %s", i, "x" * 80)
    logging.getLogger("uvicorn.error").warning("uvicorn line %d", i)
"""
    log = tmp_path / "logs" / "bento.log"
    env = {"STOCKOPS_BENTO_LOG": str(log), "STOCKOPS_LOG_MAX_BYTES": "20000", "PATH": "/usr/bin:/bin",
           "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(log) and "line 1999" not in done.stderr
    files = sorted(log.parent.iterdir())
    assert [f.name for f in files] == ["bento.log", "bento.log.1", "bento.log.2", "bento.log.3"]
    assert all(f.stat().st_size <= 20000 for f in files)
    assert "uvicorn line 1999" in log.read_text()


def test_more_than_one_host_header_is_refused_before_the_service(service):
    """uvicorn hands every Host header on: the check would read one and the app another. Refused (400)."""
    import asyncio
    import json

    reached = []

    async def app(scope, receive, send):
        reached.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def call(*hosts: bytes) -> tuple[int, dict]:
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "method": "GET", "path": "/readyz",
                 "headers": [(b"host", h) for h in hosts] + [(b"accept", b"*/*")]}
        asyncio.run(service.RequestGuard(app, allowed_hosts="127.0.0.1,localhost")(scope, receive, send))
        return sent[0]["status"], json.loads(sent[1]["body"] or b"{}")

    for hosts in ((b"evil.example", b"localhost"), (b"localhost", b"evil.example"), (b"localhost", b"localhost")):
        status, answer = call(*hosts)
        assert status == 400 and answer["error"] == "2 Host headers: send exactly one", hosts
    assert reached == []
    assert call(b"localhost:3000")[0] == 200 and len(reached) == 1
