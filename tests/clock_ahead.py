"""Run the test suite with the clock moved ahead: finds the tests that fail with the date.

    .venv/bin/pip install time-machine
    .venv/bin/python tests/clock_ahead.py 400 [pytest arguments]

Every Python process of the run (pytest, and the `feedbot` processes tests start) begins
with its clock DAYS ahead of now, ticking: time-machine, started from a `sitecustomize`
module put first on PYTHONPATH. A test that dates its items from a fixed day but runs code
on the real clock (or the reverse) passes today and fails once the real date has moved on;
here it fails today. Three such tests were found so (and fixed): one failed from 2026-11-27,
two would have from 2027-11-20. Run it by hand after adding tests that use dates, with a
few values (3, 40, 400).

Tests marked `real_clock` are left out: they compare files' times, which the kernel sets
from the real clock, with `time.time()`, which is moved, so here every file looks DAYS old.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SITECUSTOMIZE = """\
import os
from datetime import datetime, timedelta, timezone

import time_machine

_ahead = timedelta(days=float(os.environ["FEEDBOT_TEST_CLOCK_AHEAD"]))
time_machine.travel(datetime.now(timezone.utc) + _ahead, tick=True).start()
"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    try:
        days = float(argv[0])
    except ValueError:
        print(f"clock_ahead: not a number of days: {argv[0]!r}", file=sys.stderr)
        return 2
    try:
        import time_machine  # noqa: F401
    except ImportError:
        print("clock_ahead: needs time-machine: .venv/bin/pip install time-machine",
              file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="feedbot-clock-") as tmp:
        Path(tmp, "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        env = dict(os.environ, FEEDBOT_TEST_CLOCK_AHEAD=str(days),
                   PYTHONPATH=os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH"))
                                              if p))
        probe = subprocess.run([sys.executable, "-c", "import time; print(time.time())"],
                               env=env, capture_output=True, text=True, check=True)
        moved = float(probe.stdout) - time.time()
        if abs(moved - days * 86400) > 3600:  # a sitecustomize elsewhere came first?
            print(f"clock_ahead: a new process's clock is {moved / 86400:.2f} days ahead, "
                  f"not {days:g}", file=sys.stderr)
            return 1
        # time_machine is imported before pytest can rewrite its asserts (its plugin's)
        cmd = [sys.executable, "-m", "pytest", "-m", "not real_clock",
               "-W", "ignore::pytest.PytestAssertRewriteWarning", *argv[1:]]
        print(f"clock_ahead: the clock {days:g} days ahead: {' '.join(cmd[1:])}", flush=True)
        return subprocess.call(cmd, cwd=root, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
