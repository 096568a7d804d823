"""The promotion gate as a pure decision: promote only a model that beats persistence and the champion."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    forced: bool
    reason: str

    @property
    def label(self) -> str:
        return "forced" if self.forced else ("promoted" if self.promote else "refused")

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


def decide(candidate_rmse: float, persistence_rmse: float, champion_rmse: float | None, *,
           tolerance: float, margin: float, force: bool = False, force_reason: str = "") -> GateDecision:
    """Promote iff RMSE <= persistence x (1 + tolerance) and (no champion, or RMSE <= champion x (1 - margin)).

    ``force`` promotes anyway, but the reason must say why and is kept with the decision.
    """
    limit = persistence_rmse * (1 + tolerance)
    beats_persistence = candidate_rmse <= limit
    text = (f"candidate RMSE {candidate_rmse:.4f} vs persistence {persistence_rmse:.4f} "
            f"(ratio {candidate_rmse / persistence_rmse:.4f}, limit {limit:.4f} with tolerance {tolerance:.2%})")
    if champion_rmse is None:
        beats_champion, text = True, text + "; no champion yet"
    else:
        needed = champion_rmse * (1 - margin)
        beats_champion = candidate_rmse <= needed
        text += f"; champion RMSE {champion_rmse:.4f} on the same holdout (must be <= {needed:.4f}, margin {margin:.2%})"
    if force:
        if not force_reason.strip():
            raise ValueError("force_promote needs a reason")
        verdict = "passes" if beats_persistence and beats_champion else "would be refused"
        return GateDecision(True, True, f"FORCED by request ({force_reason.strip()}); on its merits it {verdict}: {text}")
    if not beats_persistence:
        return GateDecision(False, False, f"refused: does not beat persistence: {text}")
    if not beats_champion:
        return GateDecision(False, False, f"refused: does not beat the champion by the margin: {text}")
    return GateDecision(True, False, f"promoted: {text}")
