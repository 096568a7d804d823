"""The promotion gate as a pure decision, in proper scoring rules.

A candidate risk forecaster is promoted only if, on the holdout (every ticker, the same days):

(a) its pooled QLIKE is not worse than HARX-GKO's (the strongest classical baseline), by more
    than ``harx_tolerance`` (default 0);
(b) its 90 % interval covers between ``coverage_90`` of the days;
(c) its point forecast's RMSE is at most persistence x (1 + ``rmse_tolerance``);
(d) there is no champion, or it beats the champion on QLIKE or pinball loss with a
    Diebold–Mariano t of at least ``dm_t``, or — once the champion's data is older than
    ``champion_max_age_days`` — it is no worse than the champion by more than ``margin`` in
    QLIKE (non-inferiority: a stale champion can be refreshed; seed noise never replaces a good one).
"""

from __future__ import annotations

from dataclasses import dataclass

from stockops.contracts import GateDecision
from stockops.core.settings import Settings

__all__ = ["PERMISSIVE_ENV", "GateDecision", "GatePolicy", "decide"]

# Every threshold wide open (as environment variables): for runs that time or exercise the deploy
# path rather than judge a model (bench/lead_time.py --gate promote, the Celery platform test).
PERMISSIVE_ENV = {"STOCKOPS_GATE_HARX_TOLERANCE": "100", "STOCKOPS_GATE_COVERAGE_90_MIN": "0",
                  "STOCKOPS_GATE_COVERAGE_90_MAX": "1", "STOCKOPS_GATE_TOLERANCE": "1", "STOCKOPS_GATE_DM_T": "-100"}


@dataclass(frozen=True)
class GatePolicy:
    rmse_tolerance: float = 0.001
    coverage_90: tuple[float, float] = (0.88, 0.92)
    dm_t: float = 2.0
    champion_max_age_days: float = 7.0
    margin: float = 0.03  # QLIKE nats/day; see bench/gate_thresholds.py
    harx_tolerance: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> GatePolicy:
        return cls(rmse_tolerance=settings.gate_tolerance, coverage_90=settings.gate_coverage_90,
                   dm_t=settings.gate_dm_t, champion_max_age_days=settings.gate_champion_max_age_days,
                   margin=settings.gate_margin, harx_tolerance=settings.gate_harx_tolerance)


def decide(candidate: dict, reference: dict, champion: dict | None, policy: GatePolicy, *,
           champion_age_days: float | None = None, force: bool = False, force_reason: str = "") -> GateDecision:
    """Promote iff (a)–(d) of the module docstring hold; every number goes into the reason.

    ``candidate``, ``reference`` (HARX-GKO) and ``champion`` are pooled holdout scores; the
    candidate's carries ``dm_qlike_vs_champion`` and ``dm_pinball_vs_champion`` when a champion
    was re-scored (positive: the candidate is better). ``force`` promotes anyway, with a reason.
    """
    failed, text = [], []
    gain = reference["qlike"] - candidate["qlike"]
    text.append(f"QLIKE {candidate['qlike']:.4f} vs HARX-GKO {reference['qlike']:.4f} (gain {gain:+.4f} nats/day)")
    if gain < -policy.harx_tolerance:
        failed.append("worse than HARX-GKO on QLIKE")
    low, high = policy.coverage_90
    cover = candidate["coverage_90"]
    text.append(f"90 % coverage {cover:.3f} (must be in [{low:.2f}, {high:.2f}])")
    if not low <= cover <= high:
        failed.append("90 % interval miscalibrated")
    limit = 1 + policy.rmse_tolerance
    text.append(f"point RMSE {candidate['rmse_ratio']:.4f} x persistence (limit {limit:.4f})")
    if candidate["rmse_ratio"] > limit:
        failed.append("point forecast worse than persistence")
    if champion is None:
        text.append("no champion to beat")
    else:
        # an undefined DM statistic (None) is no evidence of a win
        dm_q, dm_p = (candidate.get(f"dm_{loss}_vs_champion") or 0.0 for loss in ("qlike", "pinball"))
        lead = champion["qlike"] - candidate["qlike"]
        text.append(f"vs champion: QLIKE {lead:+.4f}, DM t {dm_q:.2f} (QLIKE) / {dm_p:.2f} (pinball), "
                    f"needs >= {policy.dm_t:.1f}")
        beats = max(dm_q, dm_p) >= policy.dm_t
        stale = champion_age_days is not None and champion_age_days > policy.champion_max_age_days
        if not beats and stale:
            text.append(f"champion's data is {champion_age_days:.0f} days old (> {policy.champion_max_age_days:.0f}):"
                        f" non-inferior within {policy.margin:.4f} is enough")
            if lead < -policy.margin:
                failed.append("worse than the stale champion by more than the margin")
        elif not beats:
            age = "unknown" if champion_age_days is None else f"{champion_age_days:.0f} days"
            text.append(f"champion's data age {age} (a champion is refreshed without a significant win only "
                        f"once older than {policy.champion_max_age_days:.0f} days)")
            failed.append("does not beat the champion significantly")
    detail = "; ".join(text)
    if force:
        if not force_reason.strip():
            raise ValueError("force_promote needs a reason")
        verdict = "passes" if not failed else f"would be refused ({', '.join(failed)})"
        return GateDecision(True, True, f"FORCED by request ({force_reason.strip()}); on its merits it {verdict}: "
                                        f"{detail}")
    if failed:
        return GateDecision(False, False, f"refused: {', '.join(failed)}: {detail}")
    return GateDecision(True, False, f"promoted: {detail}")
