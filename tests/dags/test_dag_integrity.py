"""DAG integrity: every DAG file imports cleanly, is documented and light to parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockops.orchestration.dagcheck import import_cost

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAGs found"


def test_one_dag_per_file_named_after_it(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).stem == dag_id


def test_every_dag_has_tags_owner_retries_and_docs(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id}: no tags"
        assert dag.doc_md and len(dag.doc_md.strip()) > 50, f"{dag_id}: no doc_md"
        assert dag.default_args.get("owner") not in (None, "", "airflow"), f"{dag_id}: no owner"
        assert dag.default_args.get("retries", 0) >= 1, f"{dag_id}: no retries"
        for t in dag.tasks:
            assert t.owner == dag.default_args["owner"]


def test_ingest_maps_chunks_of_tickers_asks_each_held_ticker_once_and_emits_each_tickers_asset(dagbag):
    from airflow.providers.standard.operators.hitl import HITLOperator

    from stockops.core.airflow_env import DAY_ALIAS, PRICES_ALIAS

    dag = dagbag.dags["stock_ingest"]
    assert dag.max_active_runs > 1, "a run waiting for a person's decision must not hold up the next day"
    upstream = {t.task_id: t.upstream_task_ids for t in dag.tasks}
    assert upstream == {"watchlist": set(), "chunk": {"watchlist"}, "held": {"chunk"}, "review": {"held"},
                        "settled": {"watchlist", "chunk"}, "outcomes": {"chunk", "settled"}}
    chunk, review = dag.get_task("chunk"), dag.get_task("review")
    assert type(chunk).__name__ == "DecoratedMappedOperator" and type(review).__name__ == "MappedOperator"
    for task in (chunk, review):  # a held day is published by its review
        assert [(type(o).__name__, o.name) for o in task.outlets] == [("AssetAlias", PRICES_ALIAS)]
    assert chunk.retries >= 1, "a chunk whose worker died is redone (landing and publishing are idempotent)"
    assert chunk.max_active_tis_per_dagrun is not None
    assert review.operator_class is HITLOperator or issubclass(review.operator_class, HITLOperator)
    assert review.partial_kwargs["retries"] == 0 and review.partial_kwargs["response_timeout"] is not None
    assert set(dag.params) == {"tickers"} and dag.params["tickers"] is None
    # one "day ingested" event once every chunk is done, whatever its tickers' outcomes (a held one is not
    # published by its chunk, so nobody waits for a person)
    settled = dag.get_task("settled")
    assert settled.trigger_rule == "all_done" and settled.retries == 0
    assert [(type(o).__name__, o.name) for o in settled.outlets] == [("AssetAlias", DAY_ALIAS)]
    outcomes = dag.get_task("outcomes")  # red, naming them, when a ticker was quarantined or not fetched
    assert outcomes.trigger_rule == "all_done_min_one_success" and outcomes.retries == 0


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_import_is_light(path):
    cost = import_cost(path)
    assert cost.heavy == [], f"{path.name} imports {cost.heavy} at module level"
    # The dag-processor re-parses every file every few seconds: keep each well under 0.5 s.
    assert cost.seconds < 0.5, f"{path.name} takes {cost.seconds:.2f} s to import beyond the dag-processor baseline"


def test_train_is_scheduled_on_the_ingested_day_with_a_params_form(dagbag):
    from stockops.core.airflow_env import DAY_ASSET_NAME

    dag = dagbag.dags["stock_train"]
    assert dag.max_active_runs == 1
    # once per ingested day (every ticker settled), never on a partial day
    assert [a.name for a in dag.timetable.asset_condition.objects] == [DAY_ASSET_NAME]
    assert set(dag.params) == {"epochs", "window", "reason", "report", "force_promote"}
    assert dag.params["force_promote"] is False
    order = [t.task_id for t in dag.topological_sort()]
    assert order == ["load_snapshots", "features", "train", "evaluate", "register", "gate", "gate_passed", "build",
                     "deploy", "verify"]
    # the champion moves inside the deploy's critical section; a failed deploy is not retried blindly
    assert dag.get_task("verify").upstream_task_ids == {"deploy"}
    assert dag.get_task("build").upstream_task_ids == {"register", "gate", "gate_passed"}
    assert dag.get_task("gate_passed").upstream_task_ids == {"gate"}, "the gate's decision alone opens the deploy path"
    assert dag.get_task("deploy").retries == 0


def test_monitor_follows_ingest_and_triggers_training_only_through_its_decision(dagbag):
    from stockops.core.airflow_env import DAY_ASSET_NAME

    dag = dagbag.dags["stock_monitor"]
    assert dag.max_active_runs == 1
    assert [a.name for a in dag.timetable.asset_condition.objects] == [DAY_ASSET_NAME]
    order = [t.task_id for t in dag.topological_sort() if t.task_id != "serving_health"]
    assert order[:2] == ["score_watchlist", "check"]
    assert dag.get_task("check").downstream_task_ids == {"should_retrain", "should_propose_rollback"}
    assert dag.get_task("should_retrain").downstream_task_ids == {"trigger_retrain"}
    assert dag.get_task("should_propose_rollback").downstream_task_ids == {"propose_rollback"}
    assert dag.get_task("serving_health").downstream_task_ids == set()  # red alone: it blocks no check
    trigger = dag.get_task("trigger_retrain")
    assert trigger.trigger_dag_id == "stock_train" and trigger.trigger_dag_id in dagbag.dags
    assert set(trigger.conf) == {"reason", "report"} and set(trigger.conf) <= set(dagbag.dags["stock_train"].params)
    assert trigger.retries == 0, "a retried trigger would start a second training run"
    assert trigger.upstream_task_ids == {"should_retrain"}


def test_every_task_of_every_dag_notifies_its_failure(dagbag):
    from stockops.orchestration.alerts import FailureNotifier

    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(c, FailureNotifier) for c in callbacks), f"{dag_id}.{task.task_id}: no failure alert"


def test_the_monitor_proposes_rollbacks_through_a_person_never_directly(dagbag):
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    propose = dagbag.dags["stock_monitor"].get_task("propose_rollback")
    assert propose.trigger_dag_id == "stock_rollback_proposal" and propose.retries == 0
    assert set(propose.conf) == {"from_version", "to_version", "evidence", "report"}
    dag = dagbag.dags["stock_rollback_proposal"]
    assert type(dag.timetable).__name__ == "NullTimetable" and dag.max_active_runs == 1
    ask, rollback = dag.get_task("ask"), dag.get_task("rollback")
    assert isinstance(ask, ApprovalOperator) and ask.defaults == ["Reject"], "no answer is a no"
    assert ask.downstream_task_ids == {"rollback"} and {ask.retries, rollback.retries} == {0}
    assert rollback.trigger_dag_id == "stock_rollback"
    assert set(rollback.conf) == set(dagbag.dags["stock_rollback"].params)


def test_rollback_is_manual_with_a_form_and_deploys_before_moving_the_champion(dagbag):
    dag = dagbag.dags["stock_rollback"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: only on request
    assert dag.max_active_runs == 1
    assert set(dag.params) == {"version", "reason", "force"}
    assert dag.params["version"] is None and dag.params["force"] is False
    assert [t.task_id for t in dag.topological_sort()] == ["plan", "bento", "deploy", "verify"]
    assert {dag.get_task(t).retries for t in ("plan", "bento", "deploy")} == {0}


def test_every_optional_form_field_may_be_left_empty(dagbag):
    """Airflow's Trigger form treats a Param whose type has no ``null`` as required: an empty default there keeps
    *Trigger* disabled. Every field documented as optional (empty default) admits null; the one required field
    (``stock_rollback``'s ``reason``) has no default at all. (The browser test clicks *Trigger* on each form.)"""
    required = set()
    for dag_id, dag in dagbag.dags.items():
        for name, param in dag.params.items():
            types = param.schema.get("type")
            types = [types] if isinstance(types, str) else list(types or [])
            if (not param.has_value or param.value in ("", None)) and "null" not in types:
                required.add(f"{dag_id}.{name}")
    assert required == {"stock_rollback.reason"}
