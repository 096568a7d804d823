"""Numbers and durations as people read them: ``38 s``, ``14 min``, ``6.5 h``; ``2.5``; ``3 tickers``."""

from __future__ import annotations

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


def human_duration(seconds: float | None) -> str:
    """``38 s``, ``14 min``, ``6.5 h``, ``3.2 d``; an em dash for None."""
    if seconds is None:
        return "—"
    if abs(seconds) < 2 * MINUTE:
        return f"{seconds:.0f} s"
    if abs(seconds) < 2 * HOUR:
        return f"{seconds / MINUTE:.0f} min"
    if abs(seconds) < 2 * DAY:
        return f"{seconds / HOUR:.1f} h"
    return f"{seconds / DAY:.1f} d"


def number(value: float) -> str:
    """Two decimals at most, trailing zeros dropped: 2.5, 0.38, 17.5, 0."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
