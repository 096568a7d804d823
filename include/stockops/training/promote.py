"""Steps 5-7: register the candidate (``challenger``), the gate's decision, promotion to ``champion``; a
HARX-GKO baseline registered when the gate wants one."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from stockops import registry
from stockops.contracts import (
    BASELINE,
    Baseline,
    ChampionCompared,
    Evaluated,
    Features,
    GateDecision,
    Promoted,
    Registered,
)
from stockops.core import audit
from stockops.core.settings import Settings
from stockops.training.common import CANDIDATE, CHAMPION, REFERENCE, mlflow_run
from stockops.training.evaluate import keep_holdout, score_of
from stockops.training.features import load_frames
from stockops.training.fit import input_example

log = logging.getLogger(__name__)


def register_candidate(evaluated: Evaluated, *, settings: Settings) -> Registered:
    """Register the candidate as a new version with alias ``challenger`` and lineage tags."""
    import mlflow

    from stockops.model.portable.forecaster import LSTM

    registry.setup(settings)
    scores = evaluated.scores
    qlike, harx = score_of(scores, CANDIDATE, "qlike"), score_of(scores, REFERENCE, "qlike")
    version = registry.register(settings, evaluated.trained.model_uri, snapshot_hash=evaluated.snapshot.hash,
                                logical_date=evaluated.snapshot.logical_date, run_id=evaluated.run_id,
                                qlike=f"{qlike:.4f}", qlike_vs_harx_gko=f"{harx - qlike:+.4f}",
                                rmse_ratio=f"{score_of(scores, CANDIDATE, 'rmse_ratio'):.4f}", model_kind=LSTM)
    registry.set_alias(settings, registry.CHALLENGER, version.version)
    with mlflow.start_run(run_id=evaluated.run_id):
        mlflow.set_tag("registered_version", version.version)
    keep_holdout(settings, evaluated.trained.features, CANDIDATE, str(version.version))
    log.info("registered %s v%s (alias challenger)", settings.model_name, version.version)
    return Registered(evaluated=evaluated, model_name=settings.model_name, version=str(version.version))


def gate_candidate(registered: Registered, force_promote: bool = False, reason: str | None = None,
                   dag_run_id: str = "", *, settings: Settings) -> GateDecision:
    """Apply the gate; record the decision on the version, in the run and in the audit log; return it.

    A refusal is a normal outcome, not an error: ``stock_train``'s ``gate_passed`` stops the deploy path
    unless the decision deploys. ``force_promote`` promotes anyway, with ``reason`` (required then) recorded.
    The champion is always the best model the platform has: a refused candidate with no champion to keep
    (none yet, or a baseline champion fitted on data older than ``STOCKOPS_GATE_CHAMPION_MAX_AGE_DAYS``) gets the
    strongest classical baseline registered and deployed in its place (:func:`register_baseline`); the decision
    names it (``baseline``).
    """
    import mlflow

    from stockops.model.gate import GatePolicy, decide

    registry.setup(settings)
    scores = registered.scores
    champion = registered.evaluated.champion
    decision = decide(scores[CANDIDATE], scores[REFERENCE], scores.get(CHAMPION), GatePolicy.from_settings(settings),
                      champion_age_days=_age_days(champion, registered.snapshot.last_date),
                      force=force_promote, force_reason=reason or "")
    registry.tag_version(settings, registered.version, model_name=registered.model_name,
                         gate_decision=decision.label, gate_reason=decision.reason[:5000])
    with mlflow.start_run(run_id=registered.run_id):
        mlflow.set_tags({"gate_decision": decision.label})
    lineage = {"run_id": registered.run_id, "snapshot_hash": registered.snapshot.hash,
               "snapshots": _snapshot_hashes(registered.evaluated.trained.features), "dag_run_id": dag_run_id}
    audit.record(settings.audit_log, "gate", ticker=settings.ticker, model=registered.model_name,
                 version=registered.version, decision=decision.label, reason=decision.reason,
                 request_reason=reason or "",  # the field name existing audit logs use for the run's reason
                 **lineage)
    if decision.promote:
        log.info("GATE: %s", decision.reason)
        return decision
    log.warning("GATE: %s.", decision.reason)
    why = _baseline_needed(settings, registered)
    if why is None:
        log.warning("The champion is unchanged; the deploy path stops here.")
        return decision
    baseline = register_baseline(registered, why, dag_run_id=dag_run_id, settings=settings)
    log.warning("v%s (%s) serves instead: %s", baseline.version, baseline.model_kind, why)
    return replace(decision, baseline=baseline)


def _snapshot_hashes(features: Features) -> dict[str, str]:
    """Each ticker's snapshot hash the model was trained on (the lineage the combined hash sums up)."""
    return {ticker: entry.hash for ticker, entry in features.snapshots.entries.items()}


def _baseline_needed(settings: Settings, registered: Registered) -> str | None:
    """Why the classical baseline must serve now that the candidate was refused, or None: the champion stays."""
    from stockops.model.portable.forecaster import HARX_GKO

    champion = registry.champion_version(settings)
    if champion is None:
        return ("no model has passed the gate yet: the strongest classical baseline serves until an LSTM beats it "
                "at the gate")
    if champion.tags.get("model_kind") != HARX_GKO:
        return None  # an LSTM that passed the gate stays until a better one does
    age = _age_days(registered.evaluated.champion, registered.snapshot.last_date)
    if age is None or age <= settings.gate_champion_max_age_days:
        return None
    return (f"the baseline champion v{champion.version} was fitted on data {age:.0f} days older than today's "
            f"(> STOCKOPS_GATE_CHAMPION_MAX_AGE_DAYS={settings.gate_champion_max_age_days:g}): refitted on today's")


def register_baseline(registered: Registered, why: str, dag_run_id: str = "", *, settings: Settings) -> Baseline:
    """Fit HARX-GKO per ticker on the candidate's training days (before its holdout) and register it as a new
    version of the model, in an MLflow run of its own: the same lineage tags, its holdout scores (the ones the
    gate compared the candidate with), the drift reference, its holdout forecasts, a pyfunc model that serves
    through the same registry, bento, deploy, monitor and rollback path as the LSTM (``model_kind`` tells them
    apart in every answer)."""
    import mlflow

    from stockops.model.baselines import fit_harx
    from stockops.model.portable.forecaster import HARX_GKO, KIND_DESCRIPTIONS, OHLCV_INPUT

    experiment_id = registry.setup(settings)
    features = registered.evaluated.trained.features
    frames, split = load_frames(features)  # HARX-GKO needs no feature panel
    model = fit_harx(frames, split.test_start)
    snapshot, folder = features.summary, Path(features.path).parent
    scores = registered.scores[REFERENCE]
    with mlflow_run(experiment_id=experiment_id, run_name=f"harx_gko-{snapshot.last_date}") as run:
        mlflow.set_tags({"snapshot_hash": snapshot.hash, "snapshot_last_date": snapshot.last_date,
                         "logical_date": snapshot.logical_date, "ticker": settings.ticker,
                         "tickers": ",".join(frames), "reason": why, "airflow_dag_run_id": dag_run_id,
                         "model_kind": HARX_GKO, "candidate_run_id": registered.run_id,
                         "candidate_version": registered.version})
        mlflow.log_params({"model": KIND_DESCRIPTIONS[HARX_GKO], "fitted_before": str(split.test_start),
                           "tickers": len(frames), "fitted_tickers": len(model.calibration.tickers),
                           "val_start": features.val_start, "test_start": features.test_start})
        mlflow.log_metrics({k: v for k, v in scores.items() if v is not None})
        mlflow.log_metric("rmspe", score_of(registered.scores, REFERENCE, "rmse"))  # the monitor's holdout reference
        mlflow.log_dict(_snapshot_hashes(features), "snapshots.json")
        reference = folder / "reference_features.parquet"
        if reference.exists():
            mlflow.log_artifact(str(reference), "monitoring")
        saved = model.save(folder / f"baseline-{run.info.run_id}")
        example_ticker = settings.ticker if settings.ticker in frames else next(iter(frames))
        example = input_example(frames, example_ticker, model.calibration.history, settings.market)[list(OHLCV_INPUT)]
        info = registry.log_forecaster(saved, example)
    qlike = score_of(registered.scores, REFERENCE, "qlike")
    version = str(registry.register(settings, info.model_uri, snapshot_hash=snapshot.hash,
                                    logical_date=snapshot.logical_date, run_id=run.info.run_id, model_kind=HARX_GKO,
                                    qlike=f"{qlike:.4f}", qlike_vs_harx_gko="+0.0000",
                                    rmse_ratio=f"{score_of(registered.scores, REFERENCE, 'rmse_ratio'):.4f}",
                                    gate_decision=BASELINE, gate_reason=why[:5000]).version)
    keep_holdout(settings, features, REFERENCE, version)
    audit.record(settings.audit_log, "baseline", ticker=settings.ticker, model=registered.model_name, version=version,
                 model_kind=HARX_GKO, reason=why, candidate_version=registered.version, run_id=run.info.run_id,
                 snapshot_hash=snapshot.hash, dag_run_id=dag_run_id)
    log.info("registered %s v%s: %s, fitted per ticker before %s (%d tickers, pooled for the rest); holdout QLIKE "
             "%.4f", registered.model_name, version, KIND_DESCRIPTIONS[HARX_GKO], split.test_start,
             len(model.calibration.tickers), qlike)
    return Baseline(version=version, run_id=run.info.run_id, model_kind=HARX_GKO, reason=why)


def gate_passed(decision: GateDecision) -> bool:
    """Short-circuit after the gate: go on to build and deploy only if the decision deploys (the candidate, or the
    baseline in its place)."""
    return decision.deploys


def _age_days(champion: ChampionCompared | None, candidate_last_date: str) -> float | None:
    """Calendar days between the champion's newest training day and the candidate's."""
    from datetime import date

    if not champion or not champion.trained_through:
        return None
    return float((date.fromisoformat(candidate_last_date[:10]) - date.fromisoformat(champion.trained_through[:10])).days)


def promote_candidate(registered: Registered, decision: GateDecision | None = None, reason: str | None = None,
                      dag_run_id: str = "", *, settings: Settings) -> Promoted:
    """Move ``champion`` to the candidate's version and record the change, serving nothing.

    For homes without an endpoint (the monitor's tests and bench). ``stock_train`` promotes in
    ``stockops.serving.deploy_candidate``: the switch, the alias and the audit entry together.
    ``decision``: the gate's, recorded with the change (None: promoted without a gate).
    """
    from stockops.registry.changes import record_change
    from stockops.registry.online_states import seed_online_state

    registry.setup(settings)
    previous = registry.champion_version(settings)
    registry.set_alias(settings, registry.CHAMPION, registered.version)
    seed_online_state(settings, str(registered.version))
    entry = record_change(settings, "promotion", from_version=previous.version if previous else None,
                          to_version=registered.version, reason=reason or "gate passed",
                          dag_run_id=dag_run_id, decision=decision.label if decision else "",
                          run_id=registered.run_id, snapshot_hash=registered.snapshot.hash)
    registry.tag_version(settings, registered.version, promoted_at=entry["at"])
    log.info("champion: %s v%s -> v%s", settings.model_name, previous.version if previous else "none",
             registered.version)
    return Promoted(model_name=settings.model_name, version=registered.version,
                    previous=str(previous.version) if previous else None)
