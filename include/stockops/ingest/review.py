"""The question a held ticker puts to a person (Airflow's Required actions), and the answer remembered."""

from __future__ import annotations

from stockops.contracts import HeldMove, Validated
from stockops.core.settings import Settings


def review_request(validated: Validated) -> dict[str, str]:
    """Subject and Markdown body of the question a held ticker puts to a person (Required actions)."""
    ticker = validated.ticker
    held = validated.held
    first = held[0]
    subject = (f"{ticker}: {first.move_pct:+.1f} % on {first.day} — a real move or a feed error?"
               if len(held) == 1 else f"{ticker}: {len(held)} extreme moves — real or feed errors?")
    rows = "\n".join(_evidence_row(h) for h in held)
    body = f"""**{ticker}** closed with an extreme move in the newest session of its data (logical date
{validated.logical_date}, source `{validated.fetched.source}`). The day's own prices and volume back the move,
but no later session can confirm it yet, so the rules do not decide it alone.

| day | previous close | open | high | low | close | move | opening gap | range / move | volume vs 50-session median |
|---|---|---|---|---|---|---|---|---|---|
{rows}

* **Approve** if the move is real (earnings, news, a crash): the data is published and this day is never asked about again.
* **Reject** if it is a feed error: the data is quarantined, and this day stays refused while the feed serves it.

Other tickers are not waiting for this decision. Validation result: `{validated.validation_path}`."""
    return {"subject": subject, "body": body}


def _evidence_row(h: HeldMove) -> str:
    volume = "n/a" if h.volume_ratio is None else f"{h.volume_ratio:.1f} x"
    return (f"| {h.day} | {h.previous_close:.4g} | {h.open:.4g} | {h.high:.4g} | {h.low:.4g} | "
            f"{h.close:.4g} | **{h.move_pct:+.2f} %** | {h.gap_pct:+.2f} % | {h.range_share:.2f} | {volume} |")


def record_review(validated: Validated, approved: bool, by: str, reason: str, dag_run_id: str = "", *,
                  settings: Settings) -> list[dict]:
    """Remember a person's decision on every held day of ``validated`` (per ticker and in the audit log)."""
    from stockops.data import decisions

    return decisions.record_decision(settings, validated.ticker, validated.held_days,
                                     decisions.APPROVED if approved else decisions.REJECTED, by=by, reason=reason,
                                     logical_date=validated.logical_date, dag_run_id=dag_run_id,
                                     evidence=[move.to_xcom() for move in validated.held])
