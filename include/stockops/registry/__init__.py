"""All MLflow plumbing of stockops: tracking setup, experiments, the model registry and its aliases.

Every other module reaches MLflow through here: :func:`setup` points MLflow at the configured
store (and returns the training experiment's id), the registry helpers read and move aliases
(``champion``, ``challenger``), tag and list model versions, and log and load the risk forecaster (a pyfunc model).

The helpers act on ``settings.model_name`` unless a ``model_name`` is given, and none of them
calls :func:`setup` itself: call it once before (as every step does). ``mlflow`` is imported
inside the functions only: DAG files import stockops modules at parse time, and importing this
module must stay cheap (``tests/unit/core/test_imports.py`` checks it).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockops.core.settings import Settings

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion
    from pandas import DataFrame

CHAMPION = "champion"
CHALLENGER = "challenger"


# ---- tracking -----------------------------------------------------------------------------------
def setup(settings: Settings) -> str:
    """Point MLflow at the configured store and return the experiment id (created on first use).

    A tracking server (``http(s)://``) is probed first (:func:`check_reachable`): one that is
    down fails the step within seconds, naming the URI, instead of after MLflow's retries.
    """
    import mlflow

    if settings.mlflow_tracking_uri.startswith(("http://", "https://")):
        check_reachable(settings.mlflow_tracking_uri)
    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return experiment_id(settings, settings.experiment_name)


def check_reachable(uri: str, timeout_s: float = 5.0, attempts: int = 3, pause_s: float = 1.0) -> None:
    """Raise ``RuntimeError`` (naming ``uri`` and the fix) unless the MLflow server at ``uri`` answers.

    ``GET <uri>/health``, ``attempts`` times ``pause_s`` apart (a server that is restarting gets
    a few seconds), each bounded by ``timeout_s``: at most about 17 s in all. Any HTTP answer,
    even an error status, means the server is there; only no answer at all fails.
    """
    import time
    import urllib.error
    import urllib.request

    reason = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(pause_s)
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError) as exc:
            reason = str(getattr(exc, "reason", exc))
    raise RuntimeError(f"the MLflow tracking server at {uri} does not answer ({reason}; {attempts} tries, "
                       f"{timeout_s:.0f} s timeout each): start it (make run starts it; under compose: docker "
                       "compose up -d mlflow), or point STOCKOPS_MLFLOW_TRACKING_URI at one that runs")


def experiment_id(settings: Settings, name: str) -> str:
    """The id of experiment ``name``, created on first use.

    With a local store the artifacts go under the home; a tracking server (``http://...``)
    decides where artifacts go itself (``mlflow server --serve-artifacts``).
    """
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if not settings.mlflow_tracking_uri.startswith(("http://", "https://")):
        folder = settings.mlflow_artifacts_dir / ("" if name == settings.experiment_name else name)
        folder.mkdir(parents=True, exist_ok=True)
        location = folder.as_uri()
    return mlflow.create_experiment(name, artifact_location=location, tags={"ticker": settings.ticker})


def get_run(run_id: str) -> Run:
    """The MLflow run ``run_id`` (tags, params, metrics)."""
    from mlflow import MlflowClient

    return MlflowClient().get_run(run_id)


FAILED_REASON = "stockops.failed_reason"  # run tag: why stockops marked a run FAILED


def fail_stale_runs(settings: Settings, keep_run_id: str) -> list[str]:
    """Mark every RUNNING run of the training experiment but ``keep_run_id`` FAILED; returns their ids.

    A task killed outright (SIGKILL, the OOM killer, a lost worker) never ends its run, which would
    stay RUNNING forever. Only call this where no other training run can be live (``stock_train``
    has ``max_active_runs=1``): then any other RUNNING run belongs to a task that died.
    """
    from mlflow import MlflowClient
    from mlflow.entities import RunStatus

    client = MlflowClient()
    running = client.search_runs([experiment_id(settings, settings.experiment_name)],
                                 filter_string="attributes.status = 'RUNNING'", max_results=1000)
    stale = [run.info.run_id for run in running if run.info.run_id != keep_run_id]
    for run_id in stale:
        client.set_tag(run_id, FAILED_REASON, f"its task died (found RUNNING by {keep_run_id})")
        client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))
    return stale


# ---- the model registry -------------------------------------------------------------------------
def register(settings: Settings, model_uri: str, **tags: str) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``settings.model_name`` with ``tags``."""
    import mlflow

    return mlflow.register_model(model_uri, settings.model_name, tags=tags)


def get_version(settings: Settings, version: Any, model_name: str | None = None) -> ModelVersion:
    """Registry version ``version``; raises ``MlflowException`` if there is no such version."""
    from mlflow import MlflowClient

    return MlflowClient().get_model_version(model_name or settings.model_name, str(version))


def list_versions(settings: Settings, model_name: str | None = None) -> list[ModelVersion]:
    """Every registered version of the model."""
    from mlflow import MlflowClient

    return list(MlflowClient().search_model_versions(f"name='{model_name or settings.model_name}'"))


def tag_version(settings: Settings, version: Any, model_name: str | None = None, **tags: str) -> None:
    """Set ``tags`` (key=value, in order) on registry version ``version``."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name or settings.model_name, str(version), key, value)


def set_alias(settings: Settings, alias: str, version: Any) -> None:
    """Point ``alias`` (e.g. ``champion``) at registry version ``version``."""
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(settings.model_name, alias, version)


def version_by_alias(settings: Settings, alias: str) -> ModelVersion | None:
    """The registry version behind ``@alias``, or None if the alias (or the model) does not exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(settings.model_name, alias)
    except MlflowException:
        return None


def champion_version(settings: Settings) -> ModelVersion | None:
    """The registry version behind ``@champion``, or None if no model ever passed the gate."""
    return version_by_alias(settings, CHAMPION)


# ---- registered models --------------------------------------------------------------------------
def model_uri(model_name: str, version: Any = None, *, alias: str | None = None) -> str:
    """``models:/<name>/<version>`` or ``models:/<name>@<alias>``."""
    if (version is None) == (alias is None):
        raise ValueError("give exactly one of version and alias")
    return f"models:/{model_name}@{alias}" if alias is not None else f"models:/{model_name}/{version}"


def log_forecaster(folder: Path, example: DataFrame, name: str = "model") -> Any:
    """Log a risk forecaster of either kind (what its ``save`` wrote in ``folder``) as an MLflow pyfunc model in the
    active run.

    The portable model core travels with it (``code_paths``: :mod:`stockops.model.portable`, nothing else), so
    ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` work in an interpreter that never imported the project; the signature
    names every quantile output and the input example is real OHLCV.
    """
    import mlflow
    from mlflow.models import infer_signature

    from stockops.model import portable
    from stockops.model.portable.forecaster import load_forecaster
    from stockops.model.portable.pyfunc_model import RiskForecasterModel

    # Volume stays int64, as exchanges and yfinance report it (MLflow will not cast a float column to it)
    output = load_forecaster(folder).predict_frame(example)
    with tempfile.TemporaryDirectory() as staging:
        code = portable.copy_to(Path(staging)) / "stockops"
        return mlflow.pyfunc.log_model(
            name=name, python_model=RiskForecasterModel(), artifacts={"forecaster": str(folder)},
            code_paths=[str(code)], signature=infer_signature(example, output),
            input_example=example, pip_requirements=_pip_requirements())


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "tensorflow-cpu", "keras", "numpy", "pandas")]


def load_forecaster(uri: str):
    """The forecaster inside a logged pyfunc risk model (for batched scoring): a
    :class:`stockops.model.portable.forecaster.Forecaster` (LSTM) or :class:`stockops.model.portable.forecaster.HarxForecaster` (baseline)."""
    import mlflow

    return mlflow.pyfunc.load_model(uri).unwrap_python_model().forecaster
