"""Every append-only log after a writer died mid-append.

The platform's logs are logs of the home's records' database: each case writes two records through the log's real
writer, then a real process runs the same writer and is killed (SIGKILL) inside its transaction, then a fourth
record is written: the log's real reader reads 1, 2, 4, and the next record is never lost.

A log under no home is a JSON-lines file (a tool's own): a torn record is skipped with one warning naming the file
and line, every whole record is read, and the next record is never lost.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stockops import monitoring
from stockops.contracts import Published
from stockops.core import audit
from stockops.core.settings import Settings
from stockops.data import decisions
from stockops.ingest import ingest_day
from stockops.reporting.dora.records import load_records
from stockops.serving import rollback as champion

pytestmark = pytest.mark.faults
REPO = Path(__file__).resolve().parents[2]


def tear_last_record(path: Path) -> None:
    """Cut the file's last record in half, leaving no newline after it."""
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[:start + (len(data) - start) // 2])


def torn_warnings(caplog, path: Path) -> list[str]:
    return [r.getMessage() for r in caplog.records if str(path) in r.getMessage() and "not a whole JSON" in r.getMessage()]


@pytest.fixture(scope="module", autouse=True)
def airflow_logging():
    """Import Airflow before any test runs: its logging setup, done on first import, would drop pytest's log capture."""
    import airflow.models.dagrun  # noqa: F401


@functools.cache
def dag_run_recorder():
    """The listener of the Airflow plugin, loaded from the plugins folder as Airflow does."""
    spec = importlib.util.spec_from_file_location("stockops_plugin_faults", REPO / "plugins" / "stockops_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DagRunRecorder()


def dag_run(run_id: str):
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType

    return DagRun(dag_id="stock_train", run_id=run_id, run_type=DagRunType.MANUAL, conf={"reason": "drift"},
                  logical_date=datetime(2026, 1, 5, tzinfo=UTC), start_date=datetime(2026, 1, 5, tzinfo=UTC))


# Per log: where it lives, how the code writes record number n, how the code reads back the n of each record.
def _audit(settings, n):
    audit.record(settings.audit_log, "promotion", ticker="GOOG", from_version=str(n - 1), to_version=str(n),
                 reason=f"change {n}")


def _deploy(settings, n):
    audit.record(settings.deploy_log, "deploy", ticker="GOOG", kind="promotion", version=str(n), success=True)


def _monitor(settings, n):
    audit.record(settings.monitor_log, "monitor", triggered=True, reason=f"check {n}", drift_share=0.1 * n)


def _decision(settings, n):
    decisions.record_decision(settings, "GOOG", [f"2026-01-0{n}"], decisions.APPROVED, by="ops", reason=f"real {n}")


def _dag_run(settings, n):
    assert dag_run_recorder().record(dag_run(f"manual__{n}"), "success", "success") is not None


LOGS = {
    "audit": (lambda s: s.audit_log, _audit,
              lambda s: [int(e["to_version"]) for e in champion.history(s)]),
    "deploys": (lambda s: s.deploy_log, _deploy,
                lambda s: [int(e["version"]) for e in load_records(s)["deploys"]]),
    "monitor decisions": (lambda s: s.monitor_log, _monitor,
                          lambda s: [int(e["reason"].split()[-1]) for e in audit.read(s.monitor_log)]),
    "data decisions": (lambda s: decisions.decisions_path(s, "GOOG"), _decision,
                       lambda s: sorted(int(day[-1]) for day in decisions.decided_days(s, "GOOG"))),
    "dag runs": (lambda s: s.dag_run_log, _dag_run,
                 lambda s: [int(e["run_id"].split("__")[1]) for e in load_records(s)["dag_runs"]]),
}


# A real process that writes record 3 of a log through its real writer and is killed inside the transaction.
KILLED_WRITER = r"""
import os, signal, sys
from stockops.core.settings import get_settings
from stockops.storage.records import Transaction
from tests.faults.test_torn_logs import LOGS

append, append_many = Transaction.append, None

def killed(self, log, entry, key=None):
    append(self, log, entry, key)
    os.kill(os.getpid(), signal.SIGKILL)  # the record is written, its transaction not committed

Transaction.append = killed
LOGS[sys.argv[1]][1](get_settings(), 3)
print("the writer was not killed")
"""


@pytest.mark.parametrize("name", LOGS)
def test_a_writer_killed_mid_append_loses_only_its_own_record(settings, name):
    where, write, numbers = LOGS[name]
    write(settings, 1)
    write(settings, 2)
    child = subprocess.run([sys.executable, "-c", KILLED_WRITER, name], capture_output=True, text=True, timeout=120,
                           cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr[-2000:]
    write(settings, 4)
    assert numbers(settings) == [1, 2, 4]
    assert not where(settings).exists(), "the log is a log of the records' database, not a file"


def test_the_monitors_last_trigger_is_the_newest_record(settings):
    """The monitor's debounce reads the newest triggered decision."""
    _monitor(settings, 1)
    _monitor(settings, 2)
    _monitor(settings, 3)
    assert monitoring.last_trigger(settings.monitor_log)["reason"] == "check 3"


def test_a_torn_line_of_a_file_log_loses_only_itself(tmp_path, caplog):
    """A log under no home is a file: a record cut in half on disk is skipped with a warning naming the file and
    the line; the next record starts on a line of its own."""
    path = tmp_path / "tool.jsonl"
    for n in (1, 2):
        audit.record(path, "step", n=n)
    tear_last_record(path)
    audit.record(path, "step", n=3)
    with caplog.at_level(logging.WARNING):
        assert [e["n"] for e in audit.read(path)] == [1, 3]
    assert len(torn_warnings(caplog, path)) == 1 and f"{path} line 2 " in torn_warnings(caplog, path)[0]
    assert path.read_bytes().endswith(b"\n") and len(path.read_bytes().splitlines()) == 3


def test_garbage_in_the_middle_of_a_file_log_is_skipped_and_the_lines_around_it_are_kept(tmp_path, caplog):
    """A line of garbage (bytes that are not even UTF-8, or JSON that is no record) between whole records."""
    path = tmp_path / "tool.jsonl"
    audit.record(path, "step", n=1)
    with open(path, "ab") as log:
        log.write(b'{"at": "2026-01-05T10:00:00+00:00", "event": "prom\xff\xfe\n42\n')
    audit.record(path, "step", n=2)
    audit.record(path, "step", n=3)
    with caplog.at_level(logging.WARNING):
        assert [e["n"] for e in audit.read(path)] == [1, 2, 3]
    assert [m.split(" is not")[0] for m in torn_warnings(caplog, path)] == [f"{path} line 2", f"{path} line 3"]


def published_day(settings: Settings, day: str) -> Published:
    published = ingest_day(day, "GOOG", settings=settings)
    assert isinstance(published, Published), published
    return published
