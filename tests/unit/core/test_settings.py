"""The settings are declared once (``stockops.core.environment.Environment``, the bento's in ``served_settings``): what
the environment, ``.env.example``, the README's table, ``get_settings`` and the bento make of the declarations."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from stockops.core import served_settings
from stockops.core.environment import GROUPS, WATCHLIST, Environment
from stockops.core.settings import DERIVED, Settings, get_settings, make_settings
from stockops.core.settings_docs import (
    ENV_EXAMPLE,
    ENV_EXAMPLE_MARKERS,
    README,
    README_MARKERS,
    env_example_block,
    markdown_block,
)
from stockops.model import portable

DECLARED = {variable: Environment.default_text(name) for name, variable, _ in Environment.declarations()}


def _between(text: str, markers: tuple[str, str]) -> str:
    start, end = text.index(markers[0]), text.index(markers[1])
    return text[start:text.index("\n", end) + 1]


@pytest.fixture
def bare_environment(monkeypatch):
    """No stockops setting in the environment: every declaration at its default."""
    for _, variable, _ in Environment.declarations():
        monkeypatch.delenv(variable, raising=False)


# ---- one declaration each -------------------------------------------------------------------------------------

def test_every_setting_is_declared_once_with_a_description_and_a_group():
    variables = [variable for _, variable, _ in Environment.declarations()]
    assert len(variables) == len(set(variables)), "two declarations read one variable"
    for _name, variable, field in Environment.declarations():
        assert variable == "AIRFLOW_HOME" or variable.startswith("STOCKOPS_"), variable
        assert field.description and "\n" not in field.description, f"{variable}: a one-line description"
        assert (field.json_schema_extra or {}).get("group") in GROUPS, f"{variable}: a group of GROUPS"
    # the bento's variables are the platform's, not a second declaration of them
    for name in served_settings.ServedSettings.model_fields:
        assert Environment.model_fields[name] is served_settings.ServedSettings.model_fields[name] or (
            Environment.model_fields[name].default == served_settings.ServedSettings.model_fields[name].default)


def test_every_settings_field_comes_from_its_declaration_or_is_derived_from_them():
    declared = set(Environment.model_fields)
    for f in fields(Settings):
        if f.name in DERIVED:
            assert set(DERIVED[f.name]) <= declared, f.name
        else:
            assert f.name in declared, f"Settings.{f.name} has no declaration in Environment"


def test_the_bento_declarations_import_nothing_of_stockops():
    """A bento's model carries a copy of served_settings: it must run where only its own code is importable."""
    tree = ast.parse(Path(served_settings.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not [m for m in imported if m == "stockops" or m.startswith("stockops.") or m == ""], imported


# ---- the documentation is generated from them -------------------------------------------------------------

def test_env_example_and_the_readme_table_are_the_generated_ones():
    assert _between(ENV_EXAMPLE.read_text(), ENV_EXAMPLE_MARKERS) == env_example_block(), \
        ".env.example's settings differ from their declarations: run `make settings-docs`"
    assert _between(README.read_text(), README_MARKERS) == markdown_block(), \
        "the README's settings table differs from the declarations: run `make settings-docs`"


def test_env_example_lists_every_declared_variable_at_its_default_and_nothing_undeclared():
    text = ENV_EXAMPLE.read_text()
    listed = dict(re.findall(r"^#? ?((?:STOCKOPS|AIRFLOW_HOME)[A-Z0-9_]*)=(.*)$", text, flags=re.MULTILINE))
    assert listed == DECLARED
    mentioned = set(re.findall(r"\bSTOCKOPS_[A-Z0-9_]*[A-Z0-9]\b", text))
    assert mentioned <= set(DECLARED), f"undeclared in .env.example: {sorted(mentioned - set(DECLARED))}"


def test_the_readme_table_lists_every_declared_variable_at_its_default_and_nothing_undeclared():
    text = README.read_text()
    section = text[text.index("## Configuration\n"):]
    section = section[:section.index("\n## ")]
    rows = re.findall(r"^\| [^|]* \| `([A-Z0-9_]+)` \| (?:`([^`]*)`|\(unset\)) \|", section, flags=re.MULTILINE)
    assert dict(rows) == DECLARED
    mentioned = set(re.findall(r"\bSTOCKOPS_[A-Z0-9_]*[A-Z0-9]\b", section))
    assert mentioned <= set(DECLARED), f"undeclared in the README's Configuration: {sorted(mentioned - set(DECLARED))}"


# ---- reading them ------------------------------------------------------------------------------------------

def test_the_environment_at_the_defaults_reads_as_the_declared_defaults(bare_environment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert get_settings() == make_settings()
    current = get_settings()
    assert current.home == tmp_path / ".stockops" and current.airflow_home == current.home / "airflow"
    assert current.tickers == WATCHLIST and current.ticker == "GOOG" and current.market == "QQQ"
    assert current.gate_coverage_90 == (0.88, 0.92) and current.mlflow_ui_url == "http://127.0.0.1:5000"
    assert current.mlflow_tracking_uri == f"sqlite:///{current.home / 'mlflow' / 'mlflow.db'}"
    assert current.allowed_hosts == ("127.0.0.1", "localhost", "::1") and current.log_max_bytes == 10 * 1024 * 1024
    assert current.alert_webhook is None and current.csv_path is None


def test_values_are_stripped_and_an_empty_one_is_the_default(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("STOCKOPS_SERVE_PORT", "  4100 ")
    monkeypatch.setenv("STOCKOPS_SOURCE", " YFinance ")
    monkeypatch.setenv("STOCKOPS_TRAIN_EPOCHS", "   ")
    monkeypatch.setenv("STOCKOPS_ALERT_WEBHOOK", "")
    monkeypatch.setenv("STOCKOPS_MARKET", "spy")  # not in the watchlist: no market reference
    monkeypatch.setenv("STOCKOPS_MLFLOW_PORT", "5001")
    monkeypatch.setenv("STOCKOPS_GATE_COVERAGE_90_MAX", "0.95")
    monkeypatch.setenv("STOCKOPS_ALLOWED_HOSTS", "serving, localhost")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "af"))
    current = get_settings()
    assert (current.serve_port, current.source, current.train_epochs, current.alert_webhook) == (4100, "yfinance",
                                                                                                  20, None)
    assert current.market is None and current.mlflow_ui_url == "http://127.0.0.1:5001"
    assert current.gate_coverage_90 == (0.88, 0.95) and current.allowed_hosts == ("serving", "localhost")
    assert current.airflow_home == tmp_path / "af"
    monkeypatch.setenv("STOCKOPS_MLFLOW_URL", "http://mlflow.example:80")
    assert get_settings().mlflow_ui_url == "http://mlflow.example:80"


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("STOCKOPS_SERVE_PORT", "30x0", "STOCKOPS_SERVE_PORT='30x0' is not an integer"),
    ("STOCKOPS_FETCH_ATTEMPTS", "2.5", "STOCKOPS_FETCH_ATTEMPTS='2.5' is not an integer"),
    ("STOCKOPS_GATE_DM_T", "two", "STOCKOPS_GATE_DM_T='two' is not a number"),
    ("STOCKOPS_GATE_COVERAGE_90_MIN", "lots", "STOCKOPS_GATE_COVERAGE_90_MIN='lots' is not a number"),
    ("STOCKOPS_SERVING_MODE", "cloud", "STOCKOPS_SERVING_MODE='cloud': choose local or agent"),
    ("STOCKOPS_SOURCE", "csv", "STOCKOPS_SOURCE=csv needs STOCKOPS_CSV_PATH"),
    ("STOCKOPS_MONITOR_KUPIEC_P", "1.5", "STOCKOPS_MONITOR_KUPIEC_P=1.5: a p-value threshold"),
    ("STOCKOPS_TICKERS", ",", "STOCKOPS_TICKERS is empty"),
])
def test_a_value_that_does_not_parse_or_fit_names_its_variable(settings, monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=re.escape(message)):
        get_settings()


def test_settings_stay_a_frozen_hashable_dataclass(settings):
    assert hash(settings) == hash(get_settings()) and settings == get_settings()
    local = replace(settings, serving_mode="local", supervisor_stale_s=3.0)
    assert (local.serving_mode, local.supervisor_stale_s, local.home) == ("local", 3.0, settings.home)
    with pytest.raises(AttributeError):
        settings.serve_port = 1  # type: ignore[misc]


# ---- make_settings: settings without the environment ----------------------------------------------------------

def test_make_settings_reads_no_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STOCKOPS_SERVE_PORT", "not a port")  # would fail get_settings
    monkeypatch.setenv("STOCKOPS_TICKERS", "IBM")
    made = make_settings(home=tmp_path / "h", tickers="ko, pg", gate_coverage_90_min=0.8, serve_spares=0)
    assert made.home == tmp_path / "h" and made.tickers == ("KO", "PG")
    assert made.ticker == "KO", "without a ticker the model follows the watchlist's first symbol"
    assert (made.serve_port, made.gate_coverage_90, made.serve_spares) == (3000, (0.8, 0.92), 0)
    assert made.market is None and made.airflow_home == tmp_path / "h" / "airflow"
    assert make_settings(home=tmp_path, gate_coverage_90=(0.5, 0.99)).gate_coverage_90 == (0.5, 0.99)
    with pytest.raises(ValueError, match="STOCKOPS_TICKER=MSFT .* is not in the watchlist"):
        make_settings(tickers=("GOOG",), ticker="MSFT")
    with pytest.raises(ValueError, match="STOCKOPS_SERVE_PORT='x' is not an integer"):
        make_settings(serve_port="x")


def test_reading_the_settings_changes_nothing(settings, monkeypatch):
    before = dict(os.environ)
    get_settings()
    make_settings()
    assert dict(os.environ) == before
    assert not settings.home.exists(), "reading the settings created the home"


# ---- the bento's reading ---------------------------------------------------------------------------------------

def test_the_bento_reads_its_variables_and_serves_on_with_the_default_for_a_bad_value():
    environ = {"STOCKOPS_MAX_STALENESS_SESSIONS": "five", "STOCKOPS_TICKERS": "goog ko", "STOCKOPS_LOG_MAX_BYTES": "2048"}
    warnings: list[str] = []
    env = served_settings.ServedSettings.from_environ(environ, warnings.append)
    assert warnings == ["STOCKOPS_MAX_STALENESS_SESSIONS='five' is not an integer: using the default"]
    assert (env.max_staleness_sessions, env.tickers, env.log_max_bytes) == (5, ("GOOG", "KO"), 2048)
    assert env.model_fields_set == {"tickers", "log_max_bytes", "max_staleness_sessions"}
    assert env.prediction_log is None and "home" not in env.model_fields_set  # no home set: no prediction log
    with pytest.raises(ValueError, match="STOCKOPS_MAX_STALENESS_SESSIONS='five' is not an integer"):
        served_settings.ServedSettings.from_environ(environ)


def test_the_bento_declarations_travel_with_the_model(tmp_path):
    """A model's code/ (the portable core and served_settings) is enough to read the bento's settings."""
    code = served_settings.copy_to(portable.copy_to(tmp_path / "code"))
    probe = ("import stockops.core.served_settings as s, stockops.model.portable.forecaster as f, sys; "
             "e = s.ServedSettings.read(print); "
             "print(s.__file__, f.__file__, e.max_staleness_sessions, e.tickers, e.log_max_bytes, sep='|'); "
             "assert 'stockops.core.settings' not in sys.modules")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(code), "STOCKOPS_MAX_STALENESS_SESSIONS": "x",
           "STOCKOPS_TICKERS": "goog,ko"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    warning, answer = out.stdout.strip().splitlines()
    assert warning == "STOCKOPS_MAX_STALENESS_SESSIONS='x' is not an integer: using the default"
    module, forecaster, limit, tickers, cap = answer.split("|")
    assert module.startswith(str(code)) and forecaster.startswith(str(code))
    assert (limit, tickers, cap) == ("5", "('GOOG', 'KO')", str(10 * 1024 * 1024))
