"""Building a bento for a registry version.

MLflow version (a pyfunc risk forecaster) -> for the LSTM, its network's compiled TF SavedModel;
        for either kind, what it fitted (``forecaster.json``, which names the kind) + the preprocessing
        code it needs (``stockops/model/portable/forecaster.py``, ``risk_inputs.py``) -> BentoML model store -> ``bentoml build``
        of ``bento/service.py`` whose tag and labels carry the registry version, the MLflow run
        id and the snapshot hash. The BentoML part runs in a child process with ``BENTOML_HOME``
        under the stockops home (BentoML fixes its home per process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stockops import registry
from stockops.core import served_settings
from stockops.core.settings import REPO_ROOT, Settings
from stockops.model import portable
from stockops.serving import runtime

log = logging.getLogger(__name__)

BENTO_DIR = REPO_ROOT / "bento"


# ---- build -------------------------------------------------------------------------------------
def build_bento(settings: Settings, model_name: str, version: str) -> dict:
    """Pack registry version ``version`` of ``model_name`` into a bento; reuse one already built."""
    registry.setup(settings)
    mv = registry.get_version(settings, version, model_name=model_name)
    existing = existing_bento(settings, mv.tags.get("bento_tag", ""))
    if existing is not None:  # e.g. a rollback: no TensorFlow import, no export, no build
        log.info("reusing bento %s for %s v%s", existing["bento_tag"], model_name, version)
        return {**existing, "model_name": model_name, "version": str(version)}
    return _build_bento(settings, mv)


def existing_bento(settings: Settings, bento_tag: str) -> dict | None:
    """The build record of a bento already in this home's BentoML store, read from its YAML files."""
    import yaml

    if ":" not in bento_tag:
        return None
    name, tag_version = bento_tag.split(":", 1)
    bento_yaml = settings.bentoml_home / "bentos" / name / tag_version / "bento.yaml"
    if not bento_yaml.exists():
        return None
    bento = yaml.safe_load(bento_yaml.read_text())
    (model_tag,) = [m["tag"] for svc in bento.get("services", []) for m in svc.get("models", [])]
    model_name, model_version = model_tag.split(":", 1)
    model_yaml = settings.bentoml_home / "models" / model_name / model_version / "model.yaml"
    if not model_yaml.exists():
        return None
    metadata = yaml.safe_load(model_yaml.read_text())["metadata"]
    if "history" not in metadata:  # a bento of the retired close-only model: build a new one
        return None
    return {"bento_tag": bento_tag, "bento_model": model_tag, "bento_path": str(bento_yaml.parent),
            **{k: metadata[k] for k in BUILD_FIELDS}, "model_kind": metadata.get("model_kind", "lstm")}


BUILD_FIELDS = ("mlflow_run_id", "snapshot_hash", "window", "history")  # of the metadata, in the build record


def _build_bento(settings: Settings, mv) -> dict:

    model_name, version = mv.name, mv.version
    run = registry.get_run(mv.run_id)
    metadata = {
        "model_name": model_name, "registry_version": str(version), "mlflow_run_id": mv.run_id,
        "snapshot_hash": run.data.tags.get("snapshot_hash", mv.tags.get("snapshot_hash", "")),
        "snapshot_last_date": run.data.tags.get("snapshot_last_date", ""),
        "logical_date": run.data.tags.get("logical_date", ""), "ticker": settings.ticker,
        "gate_decision": mv.tags.get("gate_decision", ""),
        # the defaults of the bento's /forecast where its environment names no STOCKOPS_TICKERS / STOCKOPS_MARKET
        "watchlist": ",".join(settings.tickers), "market": settings.market or "",
    }
    staging = settings.serving_dir / "staging" / f"{model_name}-v{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    started = time.perf_counter()
    forecaster = registry.load_forecaster(registry.model_uri(model_name, version))
    metadata["window"] = forecaster.calibration.window
    metadata["history"] = forecaster.calibration.history
    metadata["model_kind"] = forecaster.kind
    # forecaster.json, and for the LSTM its numpy weights (network.npz: the bento runs the portable forward pass, no
    # TensorFlow); Keras' own weights file is for training only
    forecaster.save(staging)
    (staging / "network.weights.h5").unlink(missing_ok=True)
    (staging / "metadata.json").write_text(json.dumps(metadata, indent=2))
    result = subprocess.run([sys.executable, "-m", "stockops.serving", "pack", str(staging)],
                            env=runtime.environment(settings), capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"bento build for {model_name} v{version} failed:\n{result.stderr[-4000:]}")
    built = json.loads(result.stdout.strip().splitlines()[-1])
    shutil.rmtree(staging, ignore_errors=True)
    registry.tag_version(settings, version, model_name=model_name, bento_tag=built["bento_tag"])
    log.info("bento %s (model %s) for %s v%s in %.1f s", built["bento_tag"], built["bento_model"], model_name,
             version, time.perf_counter() - started)
    return {**built, "model_name": model_name, "version": str(version), **{k: metadata[k] for k in BUILD_FIELDS},
            "model_kind": metadata["model_kind"]}


# The service and the modules it imports beside it (bento/): what every bento is built from.
BENTO_FILES = ("service.py", "served_code.py", "request_schemas.py", "published_snapshots.py", "asgi_guard.py",
               "memory_answers.py", "server_setup.py")


def pack(staging: Path) -> dict:
    """In a child process with BENTOML_HOME set: model store entry + ``bentoml build``."""
    import bentoml
    from bentoml.exceptions import NotFound

    metadata = json.loads((staging / "metadata.json").read_text())
    version = f"v{metadata['registry_version']}-{metadata['mlflow_run_id'][:8]}"
    model_tag = f"{metadata['model_name'].lower()}:{version}"
    try:
        bentoml.models.get(model_tag)
    except NotFound:
        with bentoml.models.create(model_tag, labels={"registry_version": metadata["registry_version"]},
                                   metadata=metadata) as model:
            from stockops.model.portable.network import FILE as NETWORK_FILE

            if (staging / NETWORK_FILE).exists():  # the LSTM's weights; a baseline has none
                shutil.copy2(staging / NETWORK_FILE, model.path_of(NETWORK_FILE))
            shutil.copy2(staging / "forecaster.json", model.path_of("forecaster.json"))
            # the portable model core, and the declarations of the variables the bento reads
            served_settings.copy_to(portable.copy_to(Path(model.path_of("code"))))
    bento_tag = f"{metadata['ticker'].lower()}_forecast:{version}"
    try:
        bento = bentoml.bentos.get(bento_tag)
    except NotFound:
        with contextlib.chdir(BENTO_DIR):
            bento = bentoml.bentos.build(
                "service:StockForecast", name=bento_tag.split(":")[0], version=version, build_ctx=str(BENTO_DIR),
                include=list(BENTO_FILES), args={"model_tag": model_tag},
                description=f"{metadata['model_name']} v{metadata['registry_version']}: next-day return distribution",
                labels={"registry_version": metadata["registry_version"], "model_name": metadata["model_name"],
                        "mlflow_run_id": metadata["mlflow_run_id"], "snapshot_hash": metadata["snapshot_hash"],
                        "ticker": metadata["ticker"]},
                # pinned from the project's lock, installed as they are: no resolution against an index at build time
                python={"packages": service_requirements(metadata.get("model_kind", "lstm")), "lock_packages": False})
    return {"bento_tag": str(bento.tag), "bento_model": model_tag, "bento_path": bento.path}


# What ``bento/service.py`` imports (``starlette`` comes with BentoML; ``pyarrow`` reads the published
# snapshots; ``pydantic-settings`` reads its settings, stockops.core.served_settings). The LSTM needs nothing more:
# its forward pass is the portable core's numpy (stockops.model.portable.network), no TensorFlow.
SERVICE_PACKAGES = ("bentoml", "numpy", "pandas", "pydantic", "pydantic-settings", "pyarrow")
LSTM_PACKAGES: tuple[str, ...] = ()
LOCK_FILE = REPO_ROOT / "requirements.txt"  # `make lock` compiles it from requirements.in
LOCK_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;]+)")


def service_requirements(model_kind: str, lock_file: Path = LOCK_FILE) -> list[str]:
    """The packages a bento of ``model_kind`` needs and everything they depend on, pinned as the project's lock
    pins them (``name==version``): read from the lock's ``# via`` annotations, never resolved, so a build needs
    no package index. BentoML adds its own pin (``bentoml==<installed>``) itself, so it is left out here.

    Without the lock (a package installed without its repository), the direct packages are pinned at their
    installed versions.
    """
    roots = SERVICE_PACKAGES + (LSTM_PACKAGES if model_kind == "lstm" else ())
    if not lock_file.exists():
        from importlib.metadata import version

        log.warning("%s is missing: pinning only the bento's direct packages, at their installed versions", lock_file)
        return [f"{pkg}=={version(pkg)}" for pkg in roots if pkg != "bentoml"]
    pins, parents = read_lock(lock_file)
    missing = [pkg for pkg in roots if pkg not in pins]
    if missing:
        raise RuntimeError(f"{lock_file} pins no {', '.join(missing)}: add them to requirements.in and `make lock`")
    needed = set(roots)
    while grown := {pkg for pkg, via in parents.items() if pkg not in needed and via & needed}:
        needed |= grown
    return [f"{pkg}=={pins[pkg]}" for pkg in sorted(needed) if pkg != "bentoml"]


def read_lock(lock_file: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """A ``uv pip compile`` output's pins (normalised name -> version) and, per package, the packages it is there
    for (its ``# via`` lines; ``-r requirements.in`` left out)."""
    pins: dict[str, str] = {}
    parents: dict[str, set[str]] = {}
    current = None
    for line in lock_file.read_text().splitlines():
        if pinned := LOCK_PIN.match(line):
            current = _normalised(pinned["name"])
            pins[current], parents[current] = pinned["version"], set()
        elif current is not None and line.startswith((" ", "\t")) and line.strip().startswith("#"):
            words = line.strip().lstrip("#").split()
            if words[:1] == ["via"]:
                words = words[1:]
            if words and not words[0].startswith("-"):
                parents[current].add(_normalised(words[0]))
    return pins, parents


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
