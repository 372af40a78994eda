"""What operators touch: the command line, summaries, status, report, metrics, logs, the demo."""
