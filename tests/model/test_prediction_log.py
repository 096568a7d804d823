"""The served-prediction log stays under its size cap and its request count stays exact: through rotations, writer
processes appending at once, a rotation cut short, torn lines and an unreadable summary."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from stockops.model.portable import prediction_log
from stockops.monitoring.forecasts import traffic_requests

CAP = 4000


def record(version: str, i: int) -> str:
    """A line shaped like the bento's (about 300 bytes)."""
    return json.dumps({"at": f"2026-06-01T10:00:{i % 60:02d}.000+00:00", "ticker": "GOOG", "as_of": "2026-05-29",
                       "forecast_for": "2026-06-01", "n_closes": 90, "last_close": 101.5, "forecast": 101.6,
                       "q05": 98.1, "q95": 104.9, "volatility": 0.018, "model_version": version,
                       "model_kind": "harx_gko", "bento_tag": f"goog_forecast:v{version}-0123abcd", "i": i})


def size(path) -> int:
    """Bytes in ``path``; 0 where it is gone (the live file, between a rotation and the next append)."""
    return path.stat().st_size if path.exists() else 0


def lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def files(log) -> set[str]:
    return {p.name for p in log.parent.iterdir()}


def test_the_log_rotates_at_its_cap_and_counts_every_request(tmp_path):
    log = tmp_path / "serving" / "predictions.jsonl"
    log.parent.mkdir()
    for i in range(1000):  # ~300 KB through a 4 KB cap: ~75 rotations
        prediction_log.append(log, record("3" if i % 4 else "2", i), max_bytes=CAP)
        assert size(log) < CAP + 400, "at most one line past the cap"
    assert traffic_requests(log, "3") == 750 and traffic_requests(log, "2") == 250 and traffic_requests(log, "9") == 0
    prediction_log.append(log, record("3", 1000), max_bytes=10 * CAP)
    assert files(log) == {"predictions.jsonl", "predictions.jsonl.1", "predictions.summary.json",
                          "predictions.jsonl.lock"}
    assert sum(p.stat().st_size for p in log.parent.iterdir()) < 3 * CAP
    for name in files(log):
        assert stat.S_IMODE((log.parent / name).stat().st_mode) == 0o600, name
    summary = json.loads((log.parent / "predictions.summary.json").read_text())
    assert sum(summary["requests"].values()) + lines(log) == 1001


def test_writer_processes_appending_at_once_lose_and_double_count_nothing(tmp_path):
    log = tmp_path / "predictions.jsonl"
    line = record("VERSION", 0)
    script = (f"import sys\nfrom pathlib import Path\nfrom stockops.model.portable import prediction_log\n"
              f"for i in range(400):\n"
              f"    prediction_log.append(Path({str(log)!r}), {line!r}.replace('VERSION', sys.argv[1]), {CAP})\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, version]) for version in ("1", "2", "2", "3")]
    counts = []
    while any(w.poll() is None for w in writers):  # a reader meanwhile never sees more than was written
        counts.append(sum(prediction_log.request_counts(log).values()))
    assert all(w.returncode == 0 for w in writers)
    assert counts == sorted(counts) and counts[-1:] <= [1600], "counts only grow while the writers run"
    assert [traffic_requests(log, v) for v in ("1", "2", "3")] == [400, 800, 400]
    assert (tmp_path / "predictions.summary.json").exists(), "it rotated meanwhile"
    # past twice the cap each writer appends at most one more line before it waits for the rotation's lock
    bound = 2 * CAP + (len(writers) + 1) * (len(line) + 2)
    assert size(log) < bound and size(tmp_path / "predictions.jsonl.1") < bound, (
        "rotated at the cap where no other writer held the lock, at twice the cap (plus a line a writer) in any case")


def test_a_rotation_cut_short_counts_nothing_twice_and_loses_nothing(tmp_path):
    log = tmp_path / "predictions.jsonl"
    for i in range(40):
        prediction_log.append(log, record("3", i), max_bytes=CAP)
    assert traffic_requests(log, "3") == 40
    os.replace(log, tmp_path / "predictions.jsonl.1")  # a rotation killed between the rename and the summary
    assert traffic_requests(log, "3") == 40
    for i in range(40, 80):
        prediction_log.append(log, record("3", i), max_bytes=CAP)
        assert traffic_requests(log, "3") == i + 1


def test_a_torn_line_is_no_request_and_swallows_none(tmp_path):
    log = tmp_path / "predictions.jsonl"
    prediction_log.append(log, record("3", 0), max_bytes=CAP)
    with open(log, "a") as handle:
        handle.write('{"at": "2026-06-01T10:00:00", "model_version": "3", "tick')  # a writer killed mid-line
    prediction_log.append(log, record("3", 1), max_bytes=CAP)
    assert traffic_requests(log, "3") == 2
    assert json.loads(log.read_text().splitlines()[-1])["i"] == 1


def test_an_unreadable_summary_is_named_and_set_aside_at_the_next_rotation(tmp_path, caplog):
    log = tmp_path / "predictions.jsonl"
    for i in range(30):
        prediction_log.append(log, record("3", i), max_bytes=CAP)
    summary = tmp_path / "predictions.summary.json"
    summary.write_text('{"requests": {"3": ')
    assert traffic_requests(log, "3") == lines(log) + lines(tmp_path / "predictions.jsonl.1"), (
        "the summary's requests are no longer counted; the files' are")
    assert str(summary) in caplog.text and "unreadable" in caplog.text
    for i in range(30, 60):
        prediction_log.append(log, record("3", i), max_bytes=CAP)
    assert (tmp_path / "predictions.summary.json.corrupt").exists()
    assert json.loads(summary.read_text())["requests"]["3"] > 0


def test_reading_creates_nothing(tmp_path):
    log = tmp_path / "serving" / "predictions.jsonl"
    assert traffic_requests(log, "3") == 0 and not log.parent.exists()
    log.parent.mkdir()
    assert traffic_requests(log, "3") == 0 and files(log) == set()
