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
    history = validated.scope.startswith(("first", "history differs"))
    where = (f"{len(held)} extreme move(s) that the rules cannot settle alone ({validated.scope}; source "
             f"`{validated.fetched.source}`): in its history, moves backed by their day's own range and heavy volume "
             "but undone by the session after (a real whipsaw, or a bad print?); in the newest session, a move no "
             "later session can confirm yet. Every such day of the ticker is in this one question." if history else
             f"an extreme move in the newest session of its data (logical date {validated.logical_date}, source "
             f"`{validated.fetched.source}`). The day's own prices and volume back the move, but no later session "
             "can confirm it yet, so the rules do not decide it alone.")
    body = f"""**{ticker}** has {where}

| day | previous close | open | high | low | close | move | opening gap | range / move | volume vs 50-session median |
|---|---|---|---|---|---|---|---|---|---|
{rows}

* **Approve** if the moves are real (earnings, news, a crash): the data is published and these days are never asked
  about again. To approve **some**, list them in *Approve only these days*: the others are rejected.
* **Reject** if they are feed errors: the data is quarantined, and the days stay refused while the feed serves them
  (`STOCKOPS_HISTORY_START` after the last of them starts the ticker's history later).

Other tickers are not waiting for this decision. Validation result: `{validated.validation_path}`."""
    return {"subject": subject, "body": body}


def _evidence_row(h: HeldMove) -> str:
    volume = "n/a" if h.volume_ratio is None else f"{h.volume_ratio:.1f} x"
    return (f"| {h.day} | {h.previous_close:.4g} | {h.open:.4g} | {h.high:.4g} | {h.low:.4g} | "
            f"{h.close:.4g} | **{h.move_pct:+.2f} %** | {h.gap_pct:+.2f} % | {h.range_share:.2f} | {volume} |")


def record_review(validated: Validated, approved: bool, by: str, reason: str, dag_run_id: str = "", *,
                  settings: Settings, approve_only: list[str] | None = None) -> list[dict]:
    """Remember a person's decision on every held day of ``validated`` (per ticker and in the audit log).

    ``approve_only`` (with ``approved``): the days approved; the ticker's other held days are rejected. A day that
    is not held is named in a ``ValueError`` before anything is recorded.
    """
    from stockops.data import decisions

    held = validated.held_days
    chosen = [d.strip() for d in approve_only or [] if d.strip()]
    unknown = [d for d in chosen if d not in held]
    if unknown:
        raise ValueError(f"{validated.ticker}: {', '.join(unknown)} not among the held days ({', '.join(held)}); "
                         "nothing was recorded")
    approved_days = (chosen or held) if approved else []
    entries = []
    evidence = [move.to_xcom() for move in validated.held]
    for decision, days in ((decisions.APPROVED, approved_days),
                           (decisions.REJECTED, [d for d in held if d not in approved_days])):
        if days:
            entries += decisions.record_decision(settings, validated.ticker, days, decision, by=by, reason=reason,
                                                 logical_date=validated.logical_date, dag_run_id=dag_run_id,
                                                 evidence=evidence)
    return entries
