"""The real BentoML server on loopback applies the champion's online calibration state and says which one it used.

A promotion seeds ``<home>/monitoring/online_calibration.json`` with the version's holdout walk, and the monitor
replaces it (``OnlineState.save``: whole, then renamed) each day; the bento reads it when it makes an answer: a state
for the served version corrects the variance (market-wide scale, and the ticker's own on ``/forecast``) and the
quantiles before prices and intervals are built; any other state, none, or a torn file is not applied and the answer's
``online_calibration`` says why, never refusing the request. Every test removes the state file it wrote and waits for
the uncorrected answers again.
"""

from __future__ import annotations

import http.client
import json
import math
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from stockops.core import pointers
from stockops.core.processes import http_json
from stockops.model.portable.online_calibration import LEVELS, OnlineState, TickerState
from stockops.registry.online_states import has_state, load_state, save_state
from stockops.storage import state_store
from tests.integration.helpers import served_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]

THROUGH = "2026-05-29"
OFFSETS = [0.3, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3]  # per level of LEVELS: every quantile moves towards the median


@pytest.fixture(scope="module")
def served(model_home, tmp_path_factory):
    """The session's two small models (v1 ``@champion``), v1 served from a copy of their home with the state its
    promotion seeded (v1's holdout walk); stopped afterwards. Yields (settings, a /predict body: the model ticker's
    last 90 days with the market reference's closes, that seeded state, the model ticker's /forecast answer with it).
    The served state is removed before the tests: each writes its own."""
    from stockops.data import store_for
    from stockops.serving import market_frame, request_body, serve_champion, stop_serving

    mp = pytest.MonkeyPatch()
    settings = model_home.copy_to(mp, tmp_path_factory.mktemp("online-calibration") / "home")
    try:
        assert serve_champion(settings, reason="online calibration tests: serve v1")["version"] == "1"
        seeded = load_state(settings.online_calibration_path)
        answer = _forecast(settings, settings.ticker)
        _remove_state(settings)
        yield settings, request_body(store_for(settings).load(), market=market_frame(settings), rows=90), seeded, answer
    finally:
        stop_serving(settings)
        mp.undo()


@pytest.fixture
def state_file(served) -> Iterator:
    """The path that names the state the bento reads; whatever a test wrote there is removed afterwards, and the test
    ends only once the server answers uncorrected again (other tests of this server see no state)."""
    settings = served[0]
    path = settings.online_calibration_path
    assert not has_state(path)
    try:
        yield path
    finally:
        _remove_state(settings)


def _remove_state(settings) -> None:
    state_store(settings).delete("monitoring/online_calibration")
    _wait_until(lambda: not _forecast(settings, settings.ticker)["online_calibration"]["applied"],
                "answered without a state again")


def _forecast(settings, ticker: str) -> dict:
    status, body = http_json(f"{settings.serve_url}/forecast", {"ticker": ticker}, timeout=30)
    assert status == 200, body
    return body


def _batch(settings, tickers: list[str]) -> list[dict]:
    status, body = http_json(f"{settings.serve_url}/forecast/batch", {"tickers": tickers}, timeout=30)
    assert status == 200, body
    return body


def _predict(settings, request: dict) -> dict:
    status, body = http_json(f"{settings.serve_url}/predict", request, timeout=30)
    assert status == 200, body
    return body


def _answered_by(settings, ticker: str) -> tuple[str | None, dict]:
    """(``memory`` when RequestGuard served kept bytes, else None; the /forecast answer)."""
    parts = urlsplit(settings.serve_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("POST", "/forecast", body=json.dumps({"ticker": ticker}), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    return resp.getheader("x-stockops-answer"), json.loads(resp.read())


def _wait_until(check, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"the server never {what} within {timeout} s"
        time.sleep(0.2)


def _unserved(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "served_at"}


def _numbers(answer: dict) -> dict:
    return {k: answer[k] for k in ("point_return", "variance", "quantiles", "forecast", "intervals", "volatility")}


def _corrected(state: OnlineState, answer: dict, ticker: str | None) -> dict:
    """``answer``'s numbers as the state corrects them (the uncorrected answer's are the model's own)."""
    import numpy as np

    raw = {"point": np.array([answer["point_return"]]), "variance": np.array([answer["variance"]]),
           "quantiles": np.array([list(answer["quantiles"].values())])}
    fixed = state.adjust(raw, [ticker])
    return {"variance": float(fixed["variance"][0]),
            "quantiles": dict(zip(answer["quantiles"], fixed["quantiles"][0].tolist(), strict=True))}


def _assert_corrected(answer: dict, before: dict, expected: dict, factor: float) -> None:
    """Every number of ``answer`` is built from the corrected forecast; ``before`` is the uncorrected answer."""
    assert answer["variance"] == pytest.approx(before["variance"] * factor, rel=1e-9)
    assert answer["variance"] == pytest.approx(expected["variance"], rel=1e-12)
    assert answer["volatility"] == pytest.approx(math.sqrt(answer["variance"]), rel=1e-12)
    assert answer["quantiles"] == pytest.approx(expected["quantiles"], rel=1e-9, abs=1e-12)
    assert answer["point_return"] == before["point_return"] and answer["forecast"] == before["forecast"]
    last = answer["last_close"]
    assert answer["intervals"]["90"] == pytest.approx([last * math.exp(answer["quantiles"]["q05"]),
                                                       last * math.exp(answer["quantiles"]["q95"])], rel=1e-12)
    assert answer["intervals"]["98"] != before["intervals"]["98"]


def test_the_state_a_promotion_seeded_is_applied_from_the_first_answer(served):
    """The promotion made v1's holdout walk the served state; the bento applied it from its start."""
    settings, _, seeded, answer = served
    assert seeded.model_version == "1" and seeded.days > 0
    assert answer["online_calibration"] == seeded.lineage(settings.ticker) | {"applied": True}
    uncorrected = _forecast(settings, settings.ticker)
    factor = math.exp(seeded.market_log_scale + seeded.tickers[settings.ticker].log_scale)
    _assert_corrected(answer, uncorrected, _corrected(seeded, uncorrected, settings.ticker), factor)


def test_without_a_state_file_answers_say_none_was_applied(served):
    settings, request, _, _ = served
    assert not has_state(settings.online_calibration_path)
    reason = "no online calibration state yet (monitoring/online_calibration)"
    forecast = _forecast(settings, settings.ticker)
    batch = _batch(settings, [settings.ticker, settings.market])
    predicted = _predict(settings, request)
    for answer in (forecast, *batch, predicted):
        assert answer["online_calibration"] == {"applied": False, "reason": reason}
    assert _unserved(batch[0]) == _unserved(forecast)
    last = json.loads(settings.prediction_log.read_text().splitlines()[-1])
    assert "calibration_through" in last and last["calibration_through"] is None


def test_a_state_for_the_served_version_corrects_every_answer_at_once(served, state_file):
    """The first request after the state is in place gets the corrected answer (the kept ones depend on the file's
    stamp); within a second or two the watch loop has recomputed the watchlist, answered from memory again."""
    settings, request, _, _ = served
    version = served_version(settings)
    ticker, market = settings.ticker, settings.market
    before = {t: _forecast(settings, t) for t in (ticker, market)}
    predicted_before = _predict(settings, request)
    state = OnlineState(model_version=version, market_log_scale=0.5, days=3, through=THROUGH,
                        updated_at="2026-06-01T22:30:00+00:00",
                        tickers={ticker: TickerState(log_scale=0.25, offsets=OFFSETS, days=3, through=THROUGH)})
    assert len(OFFSETS) == len(LEVELS)
    save_state(state, state_file)

    own = _forecast(settings, ticker)
    assert own["online_calibration"] == state.lineage(ticker) | {"applied": True}
    assert {k: own["online_calibration"][k] for k in ("model_version", "through", "ticker_through", "scope")} == {
        "model_version": version, "through": THROUGH, "ticker_through": THROUGH, "scope": "ticker"}
    assert own["online_calibration"]["variance_factor"] == pytest.approx(math.exp(0.75), rel=1e-6)
    _assert_corrected(own, before[ticker], _corrected(state, before[ticker], ticker), math.exp(0.75))
    # the market reference has no state of its own: the market-wide scale only, its quantiles only rescaled
    other = _forecast(settings, market)
    assert other["online_calibration"] == state.lineage(market) | {"applied": True}
    assert other["online_calibration"]["scope"] == "market" and other["online_calibration"]["ticker_through"] is None
    assert other["online_calibration"]["variance_factor"] == pytest.approx(math.exp(0.5), rel=1e-6)
    _assert_corrected(other, before[market], _corrected(state, before[market], market), math.exp(0.5))
    # /predict's rows belong to no ticker: the market-wide part
    predicted = _predict(settings, request)
    assert predicted["online_calibration"] == state.lineage(None) | {"applied": True}
    _assert_corrected(predicted, predicted_before, _corrected(state, predicted_before, None), math.exp(0.5))
    assert json.loads(settings.prediction_log.read_text().splitlines()[-1])["calibration_through"] == THROUGH

    batch = _batch(settings, [ticker, market])
    assert [_unserved(e) for e in batch] == [_unserved(own), _unserved(other)]
    _wait_until(lambda: _answered_by(settings, ticker)[0] == "memory", "answered the new state from memory")
    answered_by, kept = _answered_by(settings, ticker)
    assert answered_by == "memory" and _unserved(kept) == _unserved(own)

    # the next day's state replaces it: applied from the first request on, never the older one
    newer = OnlineState(model_version=version, market_log_scale=-0.25, days=4, through="2026-06-01")
    save_state(newer, state_file)
    answer = _forecast(settings, ticker)
    assert answer["online_calibration"]["through"] == "2026-06-01" and answer["online_calibration"]["scope"] == "market"
    assert answer["variance"] == pytest.approx(before[ticker]["variance"] * math.exp(-0.25), rel=1e-9)


def test_a_state_for_another_version_is_not_applied(served, state_file):
    settings, request, _, _ = served
    version = served_version(settings)
    before, predicted_before = _forecast(settings, settings.ticker), _predict(settings, request)
    save_state(OnlineState(model_version="99", market_log_scale=0.5, through=THROUGH), state_file)
    reason = f"the online calibration state is for model version 99 while v{version} is served"
    answer = _forecast(settings, settings.ticker)
    (entry,) = _batch(settings, [settings.ticker])
    predicted = _predict(settings, request)
    for got, uncorrected in ((answer, before), (entry, before), (predicted, predicted_before)):
        assert got["online_calibration"] == {"applied": False, "reason": reason}
        assert _numbers(got) == _numbers(uncorrected), "the model's own numbers, to the bit"


@pytest.mark.parametrize("content", [
    pytest.param({"model_version": "1", "market_log_sc": 1}, id="another-shape"),
    pytest.param({"model_version": "1", "market_log_scale": float("nan")}, id="not-a-number"),
    pytest.param(["not", "a", "state"], id="not-a-state"),
])
def test_an_unreadable_state_is_not_applied_and_refuses_nothing(served, state_file, content):
    settings, request, _, _ = served
    before, predicted_before = _forecast(settings, settings.ticker), _predict(settings, request)
    warned_before = _warnings(settings, state_file)
    pointers.write(state_file, content)
    reason = ("the online calibration state (monitoring/online_calibration) is unreadable: answered without it "
              "(the bento's log says why)")
    for _ in range(3):
        answer = _forecast(settings, settings.ticker)
        (entry,) = _batch(settings, [settings.ticker])
        predicted = _predict(settings, request)
        for got, uncorrected in ((answer, before), (entry, before), (predicted, predicted_before)):
            assert got["online_calibration"] == {"applied": False, "reason": reason}
            assert _numbers(got) == _numbers(uncorrected)
    # one warning per bento process for this state (its version), however many requests read it
    new = [after - warned_before.get(log, 0) for log, after in _warnings(settings, state_file).items()]
    assert 1 in new and set(new) <= {0, 1}, new


def _warnings(settings, state_file) -> dict:
    """Bento log file -> how many times it says the state is unusable."""
    return {log: log.read_text().count("online calibration state monitoring/online_calibration is unusable")
            for log in settings.serving_logs_dir.glob("*.log")}
