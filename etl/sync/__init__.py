"""The run machinery: one coordinator across workers, the incremental rule, image scans, the run."""
