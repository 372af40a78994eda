"""Thin commands: parse options, set up logging, run the pipeline, map outcomes to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from etl.config import TOKEN_ENV, Settings, Source, load_settings_and_sources
from etl.config_file import ConfigFile, find_config_file
from etl.database_url import mask_database_url
from etl.errors import ConfigError, EtlError
from etl.ops.jsonout import json_default
from etl.ops.logs import setup_logging
from etl.ops.options import DEMO_DATABASE_URL, build_parser, report_filter
from etl.ops.tables import format_table
from etl.timeutil import utc_now

if TYPE_CHECKING:
    from etl.sync.results import RunResult

# Each command imports what it runs when it runs: --help loads neither SQLAlchemy nor the
# HTTP stack, and status and report load the database side only (tests/test_startup.py).

EXIT_OK = 0
EXIT_FAILED = 1  # the run failed; also: status found syncing unhealthy
EXIT_USAGE = 2  # bad command line or configuration; nothing was requested
# A sync exits with its outcome's code: etl.sync.results.EXIT_CODES (3 partial, 4 locked
# out, 5 deferred, ...).
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130; SIGTERM gives 143

# The settings sync's (and check's) options set.
SYNC_SETTINGS = (
    "database_url",
    "api_url",
    "images",
    "all_images",
    "per_page",
    "timeout",
    "auto_migrate",
    "max_rejected",
    "metrics_file",
    "strategy",
)

logger = logging.getLogger("etl")


def _stdout_to_devnull() -> None:
    # Python's own recipe for a reader that went away: later writes, and the flush at exit,
    # go to devnull instead of raising BrokenPipeError again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _emit(text: str, end: str = "\n") -> None:
    """Print ``text``; once the reader has closed stdout (``| head``), drop the rest quietly.

    The command goes on, so its exit code still tells its own truth (a sync still syncs).
    """
    try:
        sys.stdout.write(text + end)
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()


def _load(
    args: argparse.Namespace, names: Sequence[str]
) -> tuple[Settings, dict[str, Source], ConfigFile | None]:
    """Return the settings, where each came from, and the settings file read (if any)."""
    overrides = {name: getattr(args, name, None) for name in names}
    overrides["log_format"] = args.log_format
    found = find_config_file(args.config, os.environ)
    settings, sources = load_settings_and_sources(
        found.path if found else None, overrides=overrides
    )
    setup_logging(args.verbosity or 0, [settings.token or ""], settings.log_format)
    return settings, sources, found


def _settings(args: argparse.Namespace, names: Sequence[str]) -> Settings:
    return _load(args, names)[0]


def _write_metrics(settings: Settings, run: RunResult) -> None:
    from etl.ops.metrics import render_metrics, write_metrics

    if settings.metrics_file and not run.dry_run:
        text = render_metrics(run, finished_at=utc_now(), last_success=run.last_success)
        try:
            write_metrics(settings.metrics_file, text)
        except EtlError as exc:
            # The sync is over and committed: its exit code must say how it went, not this.
            logger.warning("%s", exc)


def cmd_sync(args: argparse.Namespace) -> int:
    """Run one sync; print a line per image and a total (or one JSON line)."""
    from etl.ops.progress import Progress
    from etl.ops.summary import format_image, format_json, format_run, log_error
    from etl.sync.run import run_sync

    settings = _settings(args, SYNC_SETTINGS)
    progress = Progress(enabled=None if not args.json and args.verbosity != -1 else False)

    def on_image(image: Any) -> None:
        progress.image(image)
        if not args.json:
            progress.close()
            _emit(format_image(image, dry_run=args.dry_run))

    try:
        run = run_sync(
            settings,
            full=args.full,
            dry_run=args.dry_run,
            on_image=on_image,
            on_page=progress.page,
            on_plan=progress.plan,
        )
    finally:
        progress.close()
    log_error(run)
    _emit(format_json(run) if args.json else format_run(run))
    _write_metrics(settings, run)
    return exit_code(run)


def cmd_check(args: argparse.Namespace) -> int:
    """Show the settings and where each came from; try the API and the database."""
    from etl.ops import check

    try:
        settings, sources, found = _load(args, SYNC_SETTINGS)
    except ConfigError as exc:
        if args.json:
            _emit(json.dumps({"ok": False, "error": str(exc)}))
        raise
    checks = check.run_checks(settings)
    shown = check.shown_settings(settings, sources)
    _emit((check.render_json if args.json else check.render_text)(found, shown, checks))
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the database to the newest schema revision."""
    from etl.store.database import open_engine, translate_errors
    from etl.store.migrate import upgrade
    from etl.store.revision import current_revision

    settings = _settings(args, ("database_url",))
    engine = open_engine(settings.database_url)
    try:
        with translate_errors(settings.database_url):
            before = current_revision(engine)
            upgrade(engine)
            after = current_revision(engine)
    finally:
        engine.dispose()
    where = mask_database_url(settings.database_url)
    _emit(f"{where}: schema revision {before or 'none'} -> {after}")
    return EXIT_OK


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    return format_table([[row[c] for c in columns] for row in rows], columns)


def cmd_status(args: argparse.Namespace) -> int:
    """Show the last runs and per-image state; exit 1 when syncing is unhealthy."""
    from etl.ops.status import IMAGE_COLUMNS, RUN_COLUMNS, read_status
    from etl.store.database import connect_synced

    try:
        settings = _settings(args, ("database_url",))
        with connect_synced(settings.database_url) as conn:
            status = read_status(conn, runs=args.runs)
    except EtlError as exc:
        if args.json:  # a monitor parsing stdout gets an answer, not silence
            _emit(json.dumps({"healthy": False, "error": str(exc)}))
        raise
    healthy, reason = status.health(now=utc_now(), max_age=args.max_age)
    if args.json:
        _emit(
            json.dumps(
                {
                    "healthy": healthy,
                    "reason": reason,
                    "last_success_at": status.last_success,
                    "runs": status.runs,
                    "images": status.images,
                },
                default=json_default,
            )
        )
    else:
        _emit(f"{'healthy' if healthy else 'UNHEALTHY'}: {reason}")
        _emit(f"last success: {status.last_success or 'never'}\n\nruns (newest first):")
        _emit(_table(status.runs, RUN_COLUMNS) + "\n\nimages:")
        _emit(_table(status.images, IMAGE_COLUMNS))
    return EXIT_OK if healthy else EXIT_FAILED


def cmd_report(args: argparse.Namespace) -> int:
    """Print the audit report as a table, JSON, NDJSON or CSV (or write CSV files)."""
    from etl.ops.report import build_report
    from etl.ops.report_formats import (
        render_csv,
        render_json,
        render_ndjson,
        render_table,
        write_csv_files,
    )
    from etl.store.database import connect_synced

    settings = _settings(args, ("database_url",))
    only = report_filter(args)
    with connect_synced(settings.database_url) as conn:
        sections = build_report(conn, now=utc_now(), stuck_after=args.stuck_after, only=only)
    if args.section:
        chosen = [section for section in sections if section.name == args.section]
        if not chosen:
            names = ", ".join(section.name for section in sections)
            raise ConfigError(f"--section {args.section} is not a section; choose one of {names}")
        sections = chosen
    if args.output_dir:
        for path, rows in write_csv_files(sections, args.output_dir):
            _emit(f"wrote {path} ({rows} rows)")
    elif args.format == "csv":
        _emit(render_csv(sections[0]), end="")
    else:
        render = {"table": render_table, "json": render_json, "ndjson": render_ndjson}
        _emit(render[args.format](sections), end="")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the fake API, sync it into SQLite, print the summary and a few rows."""
    from etl.ops.demo import run_demo

    setup_logging(args.verbosity or 0, log_format=args.log_format or "text")
    if args.config:
        raise ConfigError("demo reads no settings file; run it without --config")
    run = run_demo(
        database_url=args.database_url or DEMO_DATABASE_URL,
        images=args.images,
        actions_per_image=args.actions,
    )
    return exit_code(run)


def exit_code(run: RunResult) -> int:
    """Return a run's exit code: 128 + the signal for an interrupted run, as shells expect."""
    return run.exit_code


COMMANDS = {
    "sync": cmd_sync,
    "check": cmd_check,
    "migrate": cmd_migrate,
    "status": cmd_status,
    "report": cmd_report,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbosity or 0, [os.environ.get(TOKEN_ENV, "")], args.log_format or "text")
    code = _run(args)
    _emit("", end="")  # flush now: a reader gone by the exit-time flush would print a traceback
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:
        # Output outside _emit (the demo's) met a closed stdout and cut the command short,
        # so it cannot claim success; the reader chose to stop, so no traceback either.
        _stdout_to_devnull()
        return EXIT_FAILED
    except ConfigError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    except EtlError as exc:
        logger.error("%s", exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        logger.error("interrupted; pages committed so far are kept, run again to finish")
        return EXIT_INTERRUPTED
    except Exception:
        # A bug, not a deliberate failure: log the traceback through the redacting
        # formatter (Python's own printing would bypass it and could show the token).
        logger.exception("unexpected error; pages committed so far are kept. Please report this")
        return EXIT_FAILED
