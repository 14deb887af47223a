"""`tests/clock_ahead.py`: the suite run with the clock moved ahead, subprocesses included."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("time_machine")

TOOL = Path(__file__).with_name("clock_ahead.py")

PROBE = '''
import json, os, subprocess, sys, time
from datetime import datetime, timezone

import pytest

def test_now():
    child = subprocess.run([sys.executable, "-c", "import time; print(time.time())"],
                           capture_output=True, text=True, check=True)
    out = {"here": time.time(), "now": datetime.now(timezone.utc).timestamp(),
           "child": float(child.stdout)}
    with open(os.environ["PROBE_OUT"], "w") as f:
        json.dump(out, f)

@pytest.mark.real_clock
def test_left_out():
    raise AssertionError("a real_clock test ran")
'''


@pytest.mark.real_clock  # under clock_ahead.py itself, "before" is moved already
def test_the_tests_and_their_subprocesses_run_days_ahead(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "test_probe.py").write_text(PROBE, encoding="utf-8")
    monkeypatch.setenv("PROBE_OUT", str(tmp_path / "out.json"))
    before = time.time()
    done = subprocess.run([sys.executable, str(TOOL), "400", str(tmp_path / "test_probe.py"),
                           "-p", "no:cacheprovider", "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 deselected" in done.stdout
    seen = json.loads((tmp_path / "out.json").read_text())
    for where in ("here", "now", "child"):
        ahead = (seen[where] - before) / 86400
        assert 400 <= ahead < 400.1, (where, ahead)


def test_a_bad_number_of_days_is_one_line() -> None:
    done = subprocess.run([sys.executable, str(TOOL), "soon"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "clock_ahead: not a number of days: 'soon'\n"
