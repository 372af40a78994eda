"""Run the CLI in this process, then print its peak RSS as a last JSON line.

The peak counts the page helper's too (etl.sync.preparer), read from /proc before it
ends (its rusage would count the run's pages it shared for a moment when it was forked):
the two processes' peaks added, an upper bound of what they held at once.
"""

from __future__ import annotations

import json
import resource
import sys

from etl.ops.cli import main
from etl.sync.preparer import close_shared_helper, shared_helper_peak_rss_kib

if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    helper = (shared_helper_peak_rss_kib() or 0) / 1024
    close_shared_helper()
    run = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    peaks = {"peak_rss_mib": run + helper, "helper_rss_mib": helper}
    print(json.dumps({**peaks, "exit": code}), flush=True)
    raise SystemExit(code)
