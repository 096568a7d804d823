"""The global LSTM risk forecaster: date split with purge, behaviour, the served contract, the pyfunc model.

One small model is trained once for the module (3 real series, a few epochs, ~15 s) and shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from stockops.model import scoring
from stockops.model.portable import forecaster

TICKERS = ("GOOG", "JPM", "QQQ")
SMALL = {"window": 20, "units": 8, "dense": 8, "epochs": 3, "patience": 2}


@pytest.fixture(scope="module")
def frames():
    from stockops.data.sources import shipped_series

    return {t: shipped_series(t).iloc[:1800].reset_index(drop=True) for t in TICKERS}  # 2004-08 .. 2011-10


@pytest.fixture(scope="module")
def panel(frames):
    from stockops.model.risk_model import build_panel

    return build_panel(frames)


@pytest.fixture(scope="module")
def trained(panel):
    from stockops.model.risk_model import RiskModelConfig, fraction_split, train_risk

    return train_risk(panel, fraction_split(panel), RiskModelConfig(**SMALL))


def test_levels_are_the_scoring_levels():
    assert forecaster.LEVELS == scoring.LEVELS


def test_date_split_purges_one_window_between_parts(panel):
    from stockops.model.risk_model import DateSplit, sample_dates

    window = 20
    split = DateSplit(val_start=np.datetime64("2009-01-02"), test_start=np.datetime64("2010-01-04"))
    parts = split.parts(panel, window)
    first_window_day = {k: panel.dates[s.end - window + 1].min() for k, s in parts.items()}
    last_target = {k: sample_dates(panel, s).max() for k, s in parts.items()}
    # no window of a later part holds a day an earlier part was fitted on
    assert last_target["train"] < first_window_day["val"]
    assert last_target["val"] < first_window_day["test"]
    # the purge comes out of the earlier part: the test part starts on its first day, for every ticker
    test_days = sample_dates(panel, parts["test"])
    assert test_days.min() == np.datetime64("2010-01-04")
    assert len(parts["test"]) == len(TICKERS) * int(np.sum(panel.dates >= np.datetime64("2010-01-04")))
    assert set(parts["train"].ticker) == {0, 1, 2}


def test_training_learns_and_calibrates(trained):
    history = trained.history
    assert history["val_loss"][trained.best_epoch - 1] == min(history["val_loss"])
    cal = trained.forecaster.calibration
    assert 0.5 <= cal.variance_scale <= 2.0 and 0.0 <= cal.shrink <= 1.0
    assert cal.z == sorted(cal.z) and cal.z[0] < -1.5 and cal.z[-1] > 1.5  # 1 % and 99 % standardised quantiles


def test_scalers_are_those_of_the_stacked_windows(panel):
    from stockops.model.risk_model import fraction_split, sample_windows, window_scalers

    train = fraction_split(panel).parts(panel, 20)["train"]
    rows = sample_windows(panel, train, 20).astype(np.float64).reshape(-1, len(forecaster.FEATURES))
    mean, std = window_scalers(panel, train, 20)
    assert np.allclose(mean, rows.mean(axis=0), rtol=1e-6, atol=1e-7)  # the windows hold float32 features
    assert np.allclose(std, rows.std(axis=0), rtol=1e-6, atol=1e-7)


def test_an_epoch_is_a_fresh_seeded_draw_of_the_budget(panel):
    """Each epoch: ``samples_per_epoch`` distinct training windows, a new draw each epoch, the same for the same
    seed; every batch is the windows ``sample_windows`` builds; a model trains on it."""
    from stockops.model.risk_model import (
        RiskModelConfig,
        _window_batches,
        fraction_split,
        sample_windows,
        train_risk,
    )

    split = fraction_split(panel)
    train = split.parts(panel, 20)["train"]
    inputs = np.stack([panel.features[t] for t in panel.tickers]).astype(np.float32)
    targets = np.arange(len(train), dtype=np.float32)[:, None]

    def epochs(seed: int, n: int = 2) -> list[np.ndarray]:
        batches, drawn = _window_batches(inputs, train, targets, 20, 64, budget=300, seed=seed), []
        for _ in range(n):
            drawn.append(np.concatenate([batches[i][1][:, 0] for i in range(batches.num_batches)]).astype(int))
            batches.on_epoch_end()
        return drawn

    first, second = epochs(1)
    assert len(first) == 300 and len(set(first)) == 300 and set(first) != set(second)
    assert all(np.array_equal(a, b) for a, b in zip(epochs(1), (first, second), strict=True))
    whole = _window_batches(inputs, train, targets, 20, 64, budget=0, seed=1)
    assert whole.num_batches * 64 >= len(train) > (whole.num_batches - 1) * 64  # 0: every window
    x, y = _window_batches(inputs, train, targets, 20, 64, budget=300, seed=1)[0]
    assert np.array_equal(x, sample_windows(panel, train, 20)[y[:, 0].astype(int)], equal_nan=True)

    sampled = train_risk(panel, split, RiskModelConfig(**{**SMALL, "epochs": 2, "samples_per_epoch": 512}))
    assert len(sampled.history["loss"]) == 2 and np.isfinite(sampled.history["val_loss"]).all()


def _calmer(frame: pd.DataFrame, factor: float) -> pd.DataFrame:
    """The same days with every log-price move scaled by ``factor`` (OHLC order kept: a monotone map)."""
    base = np.log(frame["Close"].iloc[0])
    out = frame.copy()
    for column in ("Open", "High", "Low", "Close"):
        out[column] = np.exp(base + factor * (np.log(frame[column]) - base))
    return out


def test_calmer_inputs_forecast_a_smaller_variance(trained, frames):
    model = trained.forecaster
    recent = frames["JPM"].iloc[-200:].reset_index(drop=True)  # 2011: a volatile year for banks
    frame = pd.concat([recent.assign(ticker="JPM"), _calmer(recent, 0.4).assign(ticker="calm")])
    out = model.predict_frame(frame).set_index("ticker")
    assert out.loc["calm", "variance"] < 0.8 * out.loc["JPM", "variance"]  # 0.61 x measured (moves x 0.4)
    width = out["q95"] - out["q05"]
    assert width["calm"] < width["JPM"]
    quantiles = out[[f"q{round(level * 100):02d}" for level in forecaster.LEVELS]].to_numpy()
    assert np.all(np.diff(quantiles, axis=1) >= 0), "quantiles must not cross"
    assert np.allclose(out["volatility"] ** 2, out["variance"])
    assert np.allclose(out["forecast_close"], out["last_close"] * np.exp(out["point"]))


def _after_a_fall(frame: pd.DataFrame, move: float) -> pd.DataFrame:
    """The same days, but the last one falls by ``move`` (log), half of it overnight, with a 1 % wider range."""
    out = frame.copy()
    last, before = out.index[-1], float(out["Close"].iloc[-2])
    open_, close = before * np.exp(move / 2), before * np.exp(move)
    out.loc[last, ["Open", "High", "Low", "Close"]] = [open_, max(open_, before) * 1.01, min(open_, close) * 0.99, close]
    return out


def test_a_variance_jump_moves_the_forecast_the_next_day(trained, frames):
    """The forecast made on a crash day's close is already higher: no lag of a day or more."""
    recent = frames["GOOG"].iloc[-200:].reset_index(drop=True)
    frame = pd.concat([recent.assign(ticker="calm"), _after_a_fall(recent, -0.04).assign(ticker="fall4"),
                       _after_a_fall(recent, -0.08).assign(ticker="fall8")])
    variance = trained.forecaster.predict_frame(frame).set_index("ticker")["variance"]
    assert variance["calm"] * 1.08 < variance["fall4"] < variance["fall8"]  # 1.16 x calm measured (this small model)
    assert variance["fall8"] > 1.25 * variance["calm"]  # 1.36 x


def test_bad_input_is_refused_with_what_is_wrong(trained, frames):
    model = trained.forecaster
    need = model.calibration.history
    with pytest.raises(ValueError, match=f"needs at least {need} daily OHLCV rows"):
        model.predict_frame(frames["GOOG"].iloc[: need - 1])
    with pytest.raises(ValueError, match="lacks column"):
        model.predict_frame(frames["GOOG"].drop(columns=["High"]).iloc[-need:])
    bad = frames["GOOG"].iloc[-need:].copy()
    bad.loc[bad.index[-1], "Low"] = 0.0
    with pytest.raises(ValueError, match="finite and > 0"):
        model.predict_frame(bad)


def test_saved_forecaster_answers_the_same(trained, frames, tmp_path):
    window = frames["GOOG"].iloc[-100:]
    again = forecaster.Forecaster.load(trained.forecaster.save(tmp_path / "f"))
    pd.testing.assert_frame_equal(again.predict_frame(window), trained.forecaster.predict_frame(window))


@pytest.mark.slow
def test_registered_model_loads_and_serves_without_stockops(trained, frames, tmp_path):
    """``mlflow.pyfunc.load_model`` in a fresh interpreter and ``mlflow models serve`` both answer."""
    import mlflow

    from stockops import registry
    from stockops.core.processes import free_port

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("risk", artifact_location=(tmp_path / "artifacts").as_uri())
    need = trained.forecaster.calibration.history
    example = frames["GOOG"].assign(Market=frames["QQQ"]["Close"]).iloc[-need:][list(forecaster.OHLCV_INPUT)]
    example = example.reset_index(drop=True)
    with mlflow.start_run(experiment_id=experiment):
        info = registry.log_forecaster(trained.forecaster.save(tmp_path / "forecaster"), example)
    version = mlflow.register_model(info.model_uri, "risk_test")
    mlflow.MlflowClient().set_registered_model_alias("risk_test", "champion", version.version)
    expected = trained.forecaster.predict_frame(example)

    bin_dir = os.path.dirname(sys.executable)  # mlflow models serve runs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    script = textwrap.dedent("""
        import json, sys, pandas as pd, mlflow
        assert "stockops" not in sys.modules
        model = mlflow.pyfunc.load_model("models:/risk_test@champion")
        out = model.predict(pd.read_json(sys.stdin, orient="split"))
        import stockops.model.portable.forecaster
        print(json.dumps({"out": out.to_dict(orient="list"), "code": stockops.model.portable.forecaster.__file__,
                          "outputs": [c.name for c in model.metadata.get_output_schema().inputs]}))
    """)
    done = subprocess.run([sys.executable, "-c", script], input=example.to_json(orient="split"), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert f"{os.sep}code{os.sep}stockops{os.sep}" in answer["code"], "the model must carry its own code"
    assert {"q01", "q05", "q25", "q50", "q75", "q95", "q99", "variance"} <= set(answer["outputs"])
    assert np.allclose(answer["out"]["variance"], expected["variance"], rtol=1e-5)

    port = free_port()
    mlflow_bin = os.path.join(bin_dir, "mlflow")
    server = subprocess.Popen([mlflow_bin, "models", "serve", "-m", "models:/risk_test@champion", "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        import httpx

        body = {"dataframe_split": json.loads(example.to_json(orient="split", date_format="iso"))}
        deadline, reply = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
                break
            except httpx.TransportError:
                time.sleep(1)
        if reply is None:
            server.wait(timeout=30)
            pytest.fail(f"mlflow models serve exited {server.returncode}: {server.stderr.read().decode()[-3000:]}")
        assert reply.status_code == 200, reply.text
        served = pd.DataFrame(reply.json()["predictions"])
        assert np.allclose(served["q95"], expected["q95"], rtol=1e-5)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
