"""Thin commands: parse options, set up logging, run the pipeline, map outcomes to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from etl import __version__
from etl.config import LOG_FORMATS, TOKEN_ENV, Settings, env_name, load_settings
from etl.database import open_engine, translate_errors
from etl.database_url import DEFAULT_DATABASE_URL, mask_database_url
from etl.errors import ConfigError, EtlError
from etl.logs import setup_logging
from etl.metrics import render_metrics, write_metrics
from etl.migrate import current_revision, upgrade
from etl.pipeline import RunResult, run_sync
from etl.progress import Progress
from etl.report import build_report, render_csv, render_json, render_table
from etl.status import IMAGE_COLUMNS, RUN_COLUMNS, parse_age, read_status
from etl.summary import format_image, format_json, format_run, format_table
from etl.timeutil import utc_now

EXIT_OK = 0
EXIT_FAILED = 1  # the run failed; also: status found syncing unhealthy
EXIT_USAGE = 2  # bad command line or configuration; nothing was requested
EXIT_PARTIAL = 3  # some images failed, stayed incomplete or had rejected actions
EXIT_LOCKED = 4  # another sync holds the lock; this run did nothing
EXIT_DEFERRED = 5  # the hourly request budget is nearly spent; the next run carries on
EXIT_CODES = {
    "succeeded": EXIT_OK,
    "partial": EXIT_PARTIAL,
    "failed": EXIT_FAILED,
    "locked_out": EXIT_LOCKED,
    "deferred": EXIT_DEFERRED,
}

logger = logging.getLogger("etl")

EPILOG = (
    "Exit codes: 0 success, 1 failure (status: unhealthy), 2 bad usage or configuration, "
    "3 partial, 4 locked out by another sync, 5 deferred (rate-limit budget spent)."
)


def _verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_const", const=1, dest="verbosity", help="debug logs"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_const", const=-1, dest="verbosity", help="warnings only"
    )
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="stderr log lines: text or json")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help=f"SQLAlchemy database URL (env {env_name('database_url')}; "
        f"default {DEFAULT_DATABASE_URL})",
    )
    _verbosity(parser)


def _add_sync(commands: Any) -> None:
    sync = commands.add_parser("sync", help="sync image actions into the database", epilog=EPILOG)
    _common(sync)
    sync.add_argument(
        "--image",
        metavar="ID",
        type=int,
        action="append",
        dest="images",
        help="image id to sync; repeat for several (env DO_IMAGE_ACTIONS_IMAGES, comma-separated)",
    )
    sync.add_argument(
        "--all-images",
        action="store_const",
        const=True,
        help="sync every private image of the account",
    )
    sync.add_argument("--api-url", metavar="URL", help="API base URL (default the real API)")
    sync.add_argument("--per-page", metavar="N", type=int, help="actions per page, 1..200")
    sync.add_argument("--timeout", metavar="SECONDS", type=float, help="per-request timeout")
    sync.add_argument(
        "--max-rejected", metavar="N", type=int, help="fail when more actions are rejected"
    )
    sync.add_argument("--metrics-file", metavar="PATH", help="write Prometheus metrics here")
    sync.add_argument("--full", action="store_true", help="scan every page, not only new ones")
    sync.add_argument(
        "--dry-run", action="store_true", help="fetch and compare, print, write nothing"
    )
    sync.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    sync.add_argument(
        "--no-migrate",
        action="store_false",
        dest="auto_migrate",
        default=None,
        help="fail instead of upgrading an out-of-date schema",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="do-image-actions",
        description="Keep a SQL copy of DigitalOcean image actions.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_sync(commands)

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the newest")
    _common(migrate)

    status = commands.add_parser(
        "status", help="show recent runs and image state; exit 1 when unhealthy", epilog=EPILOG
    )
    _common(status)
    status.add_argument("--runs", metavar="N", type=int, default=10, help="runs to show")
    status.add_argument(
        "--max-age", metavar="AGE", help="unhealthy when the last success is older (e.g. 2h)"
    )
    status.add_argument("--json", action="store_true", help="print as JSON")

    report = commands.add_parser("report", help="summarise stored actions for auditors")
    _common(report)
    report.add_argument("--format", choices=("table", "csv", "json"), default="table")
    report.add_argument("--section", metavar="NAME", help="print only this section")
    report.add_argument(
        "--stuck-after", metavar="AGE", default="1h", help="in-progress older than this is stuck"
    )

    demo = commands.add_parser(
        "demo", help="sync from a built-in fake API into a local SQLite file; no token needed"
    )
    demo.add_argument("--database-url", metavar="URL", default="sqlite:///do_image_actions_demo.db")
    demo.add_argument("--images", metavar="N", type=int, default=5, help="images in the fake")
    demo.add_argument("--actions", metavar="N", type=int, default=450, help="actions per image")
    _verbosity(demo)
    return parser


def _settings(args: argparse.Namespace, names: Sequence[str]) -> Settings:
    overrides = {name: getattr(args, name, None) for name in names}
    overrides["log_format"] = args.log_format
    settings = load_settings(args.config, overrides=overrides)
    setup_logging(args.verbosity or 0, [settings.token or ""], settings.log_format)
    return settings


def _write_metrics(settings: Settings, run: RunResult) -> None:
    if settings.metrics_file and not run.dry_run:
        text = render_metrics(run, finished_at=utc_now(), last_success=run.last_success)
        write_metrics(settings.metrics_file, text)


def cmd_sync(args: argparse.Namespace) -> int:
    """Run one sync; print a line per image and a total (or one JSON line)."""
    settings = _settings(
        args,
        (
            "database_url",
            "api_url",
            "images",
            "all_images",
            "per_page",
            "timeout",
            "auto_migrate",
            "max_rejected",
            "metrics_file",
        ),
    )
    progress = Progress(enabled=None if not args.json and args.verbosity != -1 else False)

    def on_image(image: Any) -> None:
        progress.image(image)
        if not args.json:
            progress.close()
            print(format_image(image, dry_run=args.dry_run), flush=True)

    try:
        run = run_sync(
            settings, full=args.full, dry_run=args.dry_run, on_image=on_image, on_page=progress.page
        )
    finally:
        progress.close()
    if run.error and run.outcome == "deferred":
        logger.warning("%s", run.error)
    elif run.error:
        logger.error("%s", run.error)
    print(format_json(run) if args.json else format_run(run))
    _write_metrics(settings, run)
    return EXIT_CODES[run.outcome]


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the database to the newest schema revision."""
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
    print(f"{where}: schema revision {before or 'none'} -> {after}")
    return EXIT_OK


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    return format_table([[row[c] for c in columns] for row in rows], columns)


def cmd_status(args: argparse.Namespace) -> int:
    """Show the last runs and per-image state; exit 1 when syncing is unhealthy."""
    settings = _settings(args, ("database_url",))
    max_age = parse_age(args.max_age) if args.max_age else None
    engine = open_engine(settings.database_url)
    try:
        with translate_errors(settings.database_url), engine.connect() as conn:
            status = read_status(conn, runs=args.runs)
    finally:
        engine.dispose()
    healthy, reason = status.health(now=utc_now(), max_age=max_age)
    if args.json:
        print(
            json.dumps(
                {
                    "healthy": healthy,
                    "reason": reason,
                    "last_success_at": status.last_success,
                    "runs": status.runs,
                    "images": status.images,
                },
                default=str,
            )
        )
    else:
        print(f"{'healthy' if healthy else 'UNHEALTHY'}: {reason}")
        print(f"last success: {status.last_success or 'never'}\n\nruns (newest first):")
        print(_table(status.runs, RUN_COLUMNS) + "\n\nimages:")
        print(_table(status.images, IMAGE_COLUMNS))
    return EXIT_OK if healthy else EXIT_FAILED


def cmd_report(args: argparse.Namespace) -> int:
    """Print the audit report as a table, CSV or JSON."""
    settings = _settings(args, ("database_url",))
    stuck_after = parse_age(args.stuck_after)
    engine = open_engine(settings.database_url)
    try:
        with translate_errors(settings.database_url), engine.connect() as conn:
            sections = build_report(conn, now=utc_now(), stuck_after=stuck_after)
    finally:
        engine.dispose()
    if args.section:
        chosen = [section for section in sections if section.name == args.section]
        if not chosen:
            names = ", ".join(section.name for section in sections)
            raise ConfigError(f"--section {args.section} is not a section; choose one of {names}")
        sections = chosen
    render = {"table": render_table, "csv": render_csv, "json": render_json}[args.format]
    sys.stdout.write(render(sections))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the fake API, sync it into SQLite, print the summary and a few rows."""
    from etl.demo import run_demo

    setup_logging(args.verbosity or 0, log_format=args.log_format or "text")
    run = run_demo(
        database_url=args.database_url, images=args.images, actions_per_image=args.actions
    )
    return EXIT_CODES[run.outcome]


COMMANDS = {
    "sync": cmd_sync,
    "migrate": cmd_migrate,
    "status": cmd_status,
    "report": cmd_report,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbosity or 0, [os.environ.get(TOKEN_ENV, "")])
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    except EtlError as exc:
        logger.error("%s", exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        logger.error("interrupted; pages committed so far are kept, run again to finish")
        return EXIT_FAILED
    except Exception:
        # A bug, not a deliberate failure: log the traceback through the redacting
        # formatter (Python's own printing would bypass it and could show the token).
        logger.exception("unexpected error; pages committed so far are kept. Please report this")
        return EXIT_FAILED
