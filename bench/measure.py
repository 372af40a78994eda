"""Run the CLI in this process, then print its peak RSS as a last JSON line."""

from __future__ import annotations

import json
import resource
import sys

from etl.ops.cli import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak_rss_mib": peak, "exit": code}), flush=True)
    raise SystemExit(code)
