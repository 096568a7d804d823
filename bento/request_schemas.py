"""The request bodies of ``/predict``, ``/forecast`` and ``/forecast/batch``: pydantic models whose every check
names the field (and, for a value, its row), with examples that are valid requests."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from served_code import _model_path, fc

MAX_ROWS = 5000  # a request with more days than this is refused (413-style 400)
MAX_TICKER_CHARS = 32  # longer is refused with 400; a symbol has at most 15 (stockops.core.settings.TICKER_PATTERN)
MAX_BATCH_TICKERS = 1024  # a universe (421 tickers) in one request
# Finite inputs can still break the features: a close of 5e-324 after 100 makes c / prev_close
# infinite, 1e308 gives log-ratio features in the tens of thousands, and 3.5e38 is past float32
# (the network's type). Within these bounds every log ratio stays under ~35, and they hold every
# listed stock's prices and volumes with room to spare.
MIN_PRICE, MAX_PRICE = 1e-6, 1e9
MAX_VOLUME = 1e15
EARLIEST_AS_OF, LATEST_AS_OF = date(1900, 1, 1), date(2199, 12, 31)  # the next business day stays a date


def _history() -> int:
    """Days the packed model needs (its calibration's ``history``): the request model's minimum rows.

    Without a model at hand (an import to read the OpenAPI spec) nothing is served: the minimum
    is then the fewest rows that give one complete feature row.
    """
    path = _model_path()
    if path is None:
        return fc.WARMUP + 1
    return fc.read_calibration(path).history


HISTORY = _history()
EXAMPLE = fc.synthetic_ohlcv(HISTORY + 10)
EXAMPLE_MARKET = fc.synthetic_ohlcv(len(EXAMPLE), start=300.0, seed=1)["Close"]


def _example(values) -> dict:
    """An OpenAPI 3.0 ``example`` (3.0 has no JSON-Schema ``examples`` list)."""
    return {"example": [float(x) for x in values]}


def _within(low: float, high: float) -> AfterValidator:
    """Every value in [low, high]; the message names the first row outside (the field comes with it)."""
    def check(values: list[float]) -> list[float]:
        v = np.asarray(values, dtype=np.float64)
        outside = (v < low) | (v > high)
        if outside.any():
            i = int(np.argmax(outside))
            raise ValueError(f"row {i} (0 = oldest) is {values[i]!r}; values must be between {low:g} and {high:g}")
        return values
    return AfterValidator(check)


def _series(low: float, high: float):
    """One value per day, finite and in [low, high]; documented with the model's real minimum rows."""
    return Annotated[list[Annotated[float, Field(strict=True, allow_inf_nan=False)]],
                     Field(max_length=MAX_ROWS, json_schema_extra={
                         "minItems": HISTORY, "items": {"type": "number", "minimum": low, "maximum": high}}),
                     _within(low, high)]


def _enough_days(closes: list[float]) -> list[float]:
    if len(closes) < HISTORY:
        raise ValueError(f"{len(closes)} days; the model needs at least {HISTORY} (a window + {fc.WARMUP} days of "
                         f"warm-up for its features; the last {HISTORY} are used)")
    return closes


Prices = _series(MIN_PRICE, MAX_PRICE)
Volumes = _series(0.0, MAX_VOLUME)


class ForecastRequest(BaseModel):
    """Recent daily OHLCV, oldest first, one value per day in every field; the last ``history`` days are used."""

    model_config = ConfigDict(extra="forbid", strict=True)

    closes: Annotated[Prices, AfterValidator(_enough_days)] = Field(
        description=f"Daily closes, oldest first: at least {HISTORY} days (the model's window + warm-up), "
                    f"prices between {MIN_PRICE:g} and {MAX_PRICE:g}.", json_schema_extra=_example(EXAMPLE["Close"]))
    open: Prices = Field(description="Daily opens, the same days as closes, in the same price range.",
                         json_schema_extra=_example(EXAMPLE["Open"]))
    high: Prices = Field(description="Daily highs, the same days: >= max(open, close) of the day.",
                         json_schema_extra=_example(EXAMPLE["High"]))
    low: Prices = Field(description="Daily lows, the same days: <= min(open, close) of the day.",
                        json_schema_extra=_example(EXAMPLE["Low"]))
    volume: Volumes = Field(description=f"Daily volumes, the same days: between 0 (where unknown) and "
                                        f"{MAX_VOLUME:g}.", json_schema_extra=_example(EXAMPLE["Volume"]))
    market: Prices | None = Field(
        default=None, description="Optional: the market reference's closes (QQQ) on the same days, as in "
                                  "training; without them the model sees a flat market.",
        json_schema_extra=_example(EXAMPLE_MARKET))
    as_of: date | None = Field(
        default=None, description=f"Trading day of the last row (YYYY-MM-DD, {EARLIEST_AS_OF} to {LATEST_AS_OF}); "
                                  "echoed and logged for monitoring.",
        json_schema_extra={"example": EXAMPLE["Date"].iloc[-1].date().isoformat()})

    @field_validator("as_of")
    @classmethod
    def _a_plausible_day(cls, day: date | None) -> date | None:
        if day is not None and not EARLIEST_AS_OF <= day <= LATEST_AS_OF:
            raise ValueError(f"{day} is outside {EARLIEST_AS_OF} to {LATEST_AS_OF}")
        return day

    @model_validator(mode="after")
    def _one_value_per_day(self) -> ForecastRequest:
        days = len(self.closes)
        for name in ("open", "high", "low", "volume", "market"):
            values = getattr(self, name)
            if values is not None and len(values) != days:
                raise ValueError(f"{name} has {len(values)} values but closes has {days}: every field holds one "
                                 "value per day, the same days")
        o, h, lo, c = (np.asarray(v, dtype=np.float64) for v in (self.open, self.high, self.low, self.closes))
        for bad, what in ((h < np.maximum(o, c), "high is below max(open, close)"),
                          (lo > np.minimum(o, c), "low is above min(open, close)")):
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"row {i} (0 = oldest): {what} (open {o[i]}, high {h[i]}, low {lo[i]}, "
                                 f"close {c[i]})")
        return self


class TickerRequest(BaseModel):
    """A watchlist ticker whose latest published snapshot the forecast is made from."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ticker: str = Field(min_length=1, max_length=MAX_TICKER_CHARS, json_schema_extra={"example": "GOOG"},
                        description="A symbol of the watchlist (STOCKOPS_TICKERS), e.g. GOOG; case does not matter.")


class TickersRequest(BaseModel):
    """Several watchlist tickers (none: the whole watchlist)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tickers: list[Annotated[str, Field(min_length=1, max_length=MAX_TICKER_CHARS)]] | None = Field(
        default=None, max_length=MAX_BATCH_TICKERS, json_schema_extra={"example": ["GOOG", "MSFT"]},
        description=f"Symbols of the watchlist (at most {MAX_BATCH_TICKERS}); left out, null or empty: every "
                    "ticker of the watchlist.")
