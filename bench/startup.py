"""Time the command line's start-up: --help, status and report as fresh processes; one table.

python -m bench.startup              # 10 runs of each command, median and min wall seconds
python -m bench.startup --runs 30
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The console script installed beside this interpreter: what an operator (or cron) starts.
EXECUTABLE = Path(sys.executable).with_name("do-image-actions")
# A demo sync small enough to build in a few seconds; status and report read it back.
DEMO_IMAGES = 3
DEMO_ACTIONS = 40


def _run(command: list[str]) -> float:
    """Return the wall seconds of one run of ``command``; stop the benchmark if it fails."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr}")
    return elapsed


def _build_database(folder: Path) -> str:
    """Return the URL of an SQLite database the demo synced, so status is healthy."""
    url = f"sqlite:///{folder / 'startup.db'}"
    _run(
        [
            str(EXECUTABLE), "demo", "--database-url", url,
            "--images", str(DEMO_IMAGES), "--actions", str(DEMO_ACTIONS),
        ]
    )  # fmt: skip
    return url


def main() -> None:
    """Print median and min wall seconds of each command, run ``--runs`` times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh processes per command")
    args = parser.parse_args()
    if not EXECUTABLE.is_file():
        raise SystemExit(f"{EXECUTABLE} is missing; install the project: pip install -e .")
    with tempfile.TemporaryDirectory() as folder:
        url = _build_database(Path(folder))
        commands = {
            "--help": ["--help"],
            "status": ["status", "--database-url", url],
            "report": ["report", "--database-url", url],
        }
        rows = []
        for name, arguments in commands.items():
            command = [str(EXECUTABLE), *arguments]
            _run(command)  # warm-up, not counted: the first run may compile or read cold files
            times = [_run(command) for _ in range(args.runs)]
            rows.append((name, len(times), statistics.median(times), min(times)))
    print(f"{'command':<10} {'runs':>5} {'median s':>9} {'min s':>7}")
    for name, runs, median, fastest in rows:
        print(f"{name:<10} {runs:>5} {median:>9.3f} {fastest:>7.3f}")


if __name__ == "__main__":
    main()
