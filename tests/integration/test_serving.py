"""The real BentoML server on loopback: lineage in every answer, strict input, safe switches.

One module-wide home: a small model trained on the real replay series, promoted, built into a
bento and deployed behind the stable address (what ``stock_train`` does after a yes from the
gate). Every request below is real HTTP to that server.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from urllib.parse import urlsplit

import pytest

from stockops.processes import free_port, http_json, pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Train (small profile), promote, build and deploy v1; stop everything afterwards."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("serving") / "home"
    mp.setenv("STOCKOPS_HOME", str(home))
    mp.setenv("STOCKOPS_SOURCE", "replay")
    mp.setenv("STOCKOPS_TRAIN_PROFILE", "small")
    mp.setenv("STOCKOPS_SERVE_PORT", str(free_port()))
    from stockops.config import get_settings
    from stockops.ingest import ingest_day
    from stockops.serving import stop_serving
    from stockops.training import train_in_process

    settings = get_settings()
    try:
        ingest_day("2026-06-01")
        outcome = train_in_process(trigger_reason="serving test: v1", force_promote=True)
        assert outcome["deploy"]["outcome"] == "succeeded"
        closes = [float(c) for c in _store(settings).load()["Close"].to_numpy()[-90:]]
        yield settings, closes
    finally:
        stop_serving(settings)
        mp.undo()


def _store(settings):
    from stockops.ingest import store_for

    return store_for(settings)


def _predict(settings, payload, **kwargs):
    return http_json(f"{settings.serve_url}/predict", payload, **kwargs)


def _raw(settings, body: bytes, content_type: str | None = "application/json") -> tuple[int, str]:
    parts = urlsplit(settings.serve_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Content-Type": content_type} if content_type else {}
    conn.request("POST", "/predict", body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read().decode(errors="replace")


def _register_candidate(reason: str) -> dict:
    """A new registry version (not promoted) from the same snapshot, as stock_train's first steps make it."""
    from stockops.training import evaluate_models, load_snapshot, prepare_features, register_candidate, train_candidate

    return register_candidate(evaluate_models(train_candidate(prepare_features(load_snapshot()),
                                                              trigger_reason=reason)))


def test_valid_request_answers_a_forecast_with_lineage(served):
    settings, closes = served
    status, body = _predict(settings, {"closes": closes, "as_of": "2026-05-29"})
    assert status == 200, body
    assert math.isfinite(body["forecast"]) and abs(body["forecast"] / closes[-1] - 1) < 0.2
    assert body["model_name"] == settings.model_name and body["model_version"] == "1"
    assert body["bento_tag"].startswith(f"{settings.bento_name}:v1-")
    assert body["snapshot_hash"] == _store(settings).latest().hash
    assert body["as_of"] == "2026-05-29" and body["forecast_for"] == "2026-06-01"  # a Friday -> Monday
    assert body["window"] == 60 and body["last_close"] == closes[-1]
    # only the last `window` closes matter
    status, again = _predict(settings, {"closes": [1.0] * 30 + closes[-60:]})
    assert status == 200 and again["forecast"] == pytest.approx(body["forecast"], rel=1e-6)

    logged = [json.loads(line) for line in settings.prediction_log.read_text().splitlines()]
    assert not any(entry["n_closes"] == 120 for entry in logged), "deploy smoke checks stay out of the log"
    last = logged[-1]
    assert last["model_version"] == "1" and last["n_closes"] == 90 and last["forecast"] == again["forecast"]
    assert logged[-2]["as_of"] == "2026-05-29" and logged[-2]["forecast_for"] == "2026-06-01"


def test_bentoml_endpoints_work_through_the_stable_address(served):
    settings, _ = served
    for path in ("/livez", "/readyz"):
        assert http_json(settings.serve_url + path)[0] == 200
    status, metrics = http_json(settings.serve_url + "/metrics")
    assert status == 200 and "bentoml_service_request_total" in metrics
    status, spec = http_json(settings.serve_url + "/docs.json")
    assert status == 200 and "/predict" in spec["paths"]
    status, upstream = http_json(settings.serve_url + "/-/stockops/upstream")
    assert status == 200 and upstream["version"] == "1"


GOOD = [100.0 + 0.25 * i for i in range(60)]
BAD_REQUESTS = {
    "too few closes": ({"closes": GOOD[:10]}, "at least 60"),
    "NaN": ({"closes": [float("nan")] + GOOD}, "finite"),
    "infinity": ({"closes": GOOD + [float("inf")]}, "finite"),
    "negative price": ({"closes": [-5.0] + GOOD}, "greater than 0"),
    "zero price": ({"closes": GOOD + [0]}, "greater than 0"),
    "string price": ({"closes": ["101.5"] + GOOD}, "valid number"),
    "null price": ({"closes": [None] + GOOD}, "valid number"),
    "closes is null": ({"closes": None}, "valid array"),
    "closes is a number": ({"closes": 101.5}, "valid array"),
    "wrong field name": ({"prices": GOOD}, "closes"),
    "unknown extra field": ({"closes": GOOD, "ticker": "GOOG"}, "Extra inputs"),
    "oversized list": ({"closes": [100.0] * 6000}, "at most 5000"),
    "bad as_of date": ({"closes": GOOD, "as_of": "yesterday"}, "as_of"),
    "not an object": ([1.0, 2.0], "object"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_json_gets_a_4xx_that_says_what_is_wrong(served, case):
    settings, closes = served
    payload, expected = BAD_REQUESTS[case]
    body = json.dumps(payload).encode()  # NaN and Infinity go out as the JSON extensions they are
    status, text = _raw(settings, body)
    assert 400 <= status < 500, (status, text)
    assert expected in text, text
    status, ok = _predict(settings, {"closes": closes})
    assert status == 200 and math.isfinite(ok["forecast"]), "the server keeps answering"


@pytest.mark.parametrize(("case", "body", "content_type", "expected_status", "expected"), [
    ("wrong content type", json.dumps({"closes": GOOD}).encode(), "text/plain", 415, "application/json"),
    ("no content type", json.dumps({"closes": GOOD}).encode(), None, 415, "application/json"),
    ("form body", b"closes=1&closes=2", "application/x-www-form-urlencoded", 415, "application/json"),
    ("truncated JSON", b'{"closes": [1.0, 2.0', "application/json", 400, "Invalid JSON"),
    ("empty body", b"", "application/json", 400, "closes"),
    ("oversized body", json.dumps({"closes": [123.456789012] * 40000}).encode(), "application/json", 413, "limit"),
])
def test_bad_bodies_get_a_4xx_that_says_what_is_wrong(served, case, body, content_type, expected_status, expected):
    settings, closes = served
    status, text = _raw(settings, body, content_type)
    assert status == expected_status, (status, text)
    assert expected in text
    assert _predict(settings, {"closes": closes})[0] == 200


def test_a_switch_under_load_fails_no_request(served):
    """Deploy v2 while clients hammer the stable address: every request answers 200, v1 then v2."""
    from stockops.serving import build_candidate_bento, current, deploy, deploy_candidate, standby

    settings, closes = served
    candidate = _register_candidate("serving test: v2")
    built = build_candidate_bento(candidate)
    new = str(built["version"])
    old_pid = current(settings)["pid"]
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            status, body = _predict(settings, {"closes": closes}, timeout=30)
            results.append((status, body.get("model_version") if status == 200 else str(body)[:300]))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        record = deploy_candidate(built, trigger_reason="serving test: switch under load")["deploy"]
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    failed = [r for r in results if r[0] != 200]
    versions = [v for _, v in results]
    print(f"switch under load: {len(results)} requests, {len(failed)} failed, "
          f"{versions.count('1')} from v1, {versions.count(new)} from v{new}")
    assert failed == []
    assert versions[0] == "1" and versions[-1] == new
    assert record["outcome"] == "succeeded" and current(settings)["version"] == new
    assert pid_alive(old_pid) and standby(settings)["pid"] == old_pid, "the old bento stays warm for a rollback"

    # going back is a switch to the warm standby: no new process, the newer one becomes the standby
    new_pid = current(settings)["pid"]
    back = deploy(settings, standby(settings)["bento_tag"], "1", reason="serving test: back to v1", kind="rollback")
    assert back["warm_standby"] is True and back["switched_after_s"] < 5
    assert current(settings)["pid"] == old_pid and standby(settings)["pid"] == new_pid
    assert _predict(settings, {"closes": closes})[1]["model_version"] == "1"


def test_a_deploy_that_fails_its_health_check_changes_nothing(served):
    """A bento whose packed model is corrupt never takes traffic; champion and endpoint stay."""
    from stockops import registry
    from stockops.serving import DeployError, build_candidate_bento, current, deploy_candidate, deploys

    settings, closes = served
    before = current(settings)
    registry.setup(settings)
    champion = registry.champion_version(settings).version
    candidate = _register_candidate("serving test: a broken bento")
    built = build_candidate_bento(candidate)
    name, version = built["bento"]["bento_model"].split(":")
    graphs = list((settings.bentoml_home / "models" / name / version).rglob("saved_model.pb"))
    assert graphs, "the bento's model is in the BentoML model store"
    for pb in graphs:
        pb.write_bytes(b"this is not a TensorFlow graph")

    with pytest.raises(DeployError, match="failed its health check") as failure:
        deploy_candidate(built, trigger_reason="serving test: must fail")
    assert f"v{before['version']}" in str(failure.value) and "keeps serving" in str(failure.value)

    assert current(settings) == before
    status, body = _predict(settings, {"closes": closes})
    assert status == 200 and body["model_version"] == before["version"]
    assert registry.champion_version(settings).version == champion
    version = registry.get_version(settings, candidate["version"])
    assert version.tags["deploy"].startswith("failed")
    last = deploys(settings)[-1]
    assert last["outcome"] == "failed" and last["bento_tag"] == built["bento"]["bento_tag"]
    assert last["previous_version"] == before["version"] and last["error"]
