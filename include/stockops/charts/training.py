"""The training run's figures (logged to MLflow as ``plots/<name>.png`` by :mod:`stockops.training.evaluate`)."""

from __future__ import annotations

from typing import Any


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure list

    figure = Figure(figsize=(width, height), layout="tight")
    return figure, figure.subplots()


def training_figures(forecasts: dict, returns, tickers, dates, scores: dict, ticker: str, history: dict[str, list],
                     models: tuple[str, ...]) -> dict[str, Any]:
    """Figures by name: ``fan_chart`` (one ticker's last 250 holdout days: intervals vs realised returns),
    ``calibration`` (reliability of the quantiles of ``models``, the first being the candidate and the second the
    reference), ``qlike_by_ticker`` (candidate vs reference) and ``loss_curve`` (``history``: Keras' losses)."""
    import numpy as np

    from stockops.model.portable.forecaster import LEVELS  # == stockops.model.scoring.LEVELS (tested)

    candidate_name, reference_name = models[0], models[1]
    candidate = forecasts[candidate_name]
    ticker = ticker if ticker in set(tickers) else str(tickers[0])
    sel = np.flatnonzero(tickers == ticker)[-250:]
    days = dates[sel]
    figures: dict[str, Any] = {}

    fig, ax = _figure(11, 4.5)
    q = candidate.quantiles[sel] * 100
    ax.fill_between(days, q[:, 1], q[:, 5], alpha=0.25, label="90 % interval", step="mid")
    ax.fill_between(days, q[:, 2], q[:, 4], alpha=0.45, label="50 % interval", step="mid")
    ax.scatter(days, returns[sel] * 100, s=6, color="black", label="realised return")
    ax.set_ylabel("next-day log return (%)")
    ax.set_title(f"{ticker}: forecast intervals vs realised returns on the holdout")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    figures["fan_chart"] = fig

    fig, ax = _figure(5.5, 5.5)
    for name in models:
        if name in forecasts:
            observed = [(returns < forecasts[name].quantile(level)).mean() for level in LEVELS]
            ax.plot(LEVELS, observed, marker="o", label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("quantile level")
    ax.set_ylabel("share of days below the quantile")
    ax.set_title("Reliability of the forecast quantiles (holdout)")
    ax.legend()
    figures["calibration"] = fig

    names = sorted(scores[candidate_name]["by_ticker"])
    fig, ax = _figure(11, 4)
    x = np.arange(len(names))
    for offset, name in ((-0.2, candidate_name), (0.2, reference_name)):
        ax.bar(x + offset, [scores[name]["by_ticker"][t]["qlike"] for t in names], width=0.4, label=name)
    ax.set_xticks(x, names, rotation=45)
    ax.set_ylabel("QLIKE (lower is better)")
    ax.set_title("QLIKE by ticker on the holdout")
    ax.legend()
    figures["qlike_by_ticker"] = fig

    fig, ax = _figure(7, 4)
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], marker="o", label="training loss")
    ax.plot(epochs, history["val_loss"], marker="o", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Gaussian NLL (QLIKE), returns in %")
    ax.set_title("Loss curve (best weights restored)")
    ax.legend()
    figures["loss_curve"] = fig
    return figures
