"""Run the command line interface as ``python -m etl``."""

from etl.ops.cli import main

raise SystemExit(main())
