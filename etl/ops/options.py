"""The command line's grammar: commands, their options, help texts and value checks."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from etl import __version__
from etl.config import LOG_FORMATS, env_name
from etl.database_url import DEFAULT_DATABASE_URL
from etl.errors import ConfigError

if TYPE_CHECKING:
    # Not at run time: the report's filter builds SQL, and --help needs no SQLAlchemy.
    from etl.ops.report import ReportFilter

EPILOG = (
    "Exit codes: 0 success, 1 failure (status: unhealthy), 2 bad usage or configuration, "
    "3 partial, 4 locked out by another sync, 5 deferred (rate-limit budget spent), "
    "130/143 interrupted by SIGINT/SIGTERM."
)
DEMO_DATABASE_URL = "sqlite:///do_image_actions_demo.db"
REPORT_FORMATS = ("table", "csv", "json", "ndjson")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _verbosity(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_const", const=1, dest="verbosity", default=default,
        help="debug logs",
    )  # fmt: skip
    parser.add_argument(
        "-q", "--quiet", action="store_const", const=-1, dest="verbosity", default=default,
        help="warnings only",
    )  # fmt: skip
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default=default, help="stderr log lines: text or json"
    )


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="TOML settings file (default: the path in DO_IMAGE_ACTIONS_CONFIG, else "
        "$XDG_CONFIG_HOME/do-image-actions/config.toml if it exists)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=default,
        help=f"SQLAlchemy database URL (env {env_name('database_url')}; "
        f"default {DEFAULT_DATABASE_URL})",
    )
    _verbosity(parser, default)


def _parent(add: Callable[[argparse.ArgumentParser, Any], None]) -> argparse.ArgumentParser:
    """Return a parent parser of global options that a command's own copy cannot clobber.

    The options are accepted before the command and after it. After it, a copy whose
    default is SUPPRESS sets nothing when absent, so ``-v sync`` stays verbose.
    """
    parent = argparse.ArgumentParser(add_help=False)
    add(parent, argparse.SUPPRESS)
    return parent


def _count(text: str) -> int:
    """Return a whole number of at least 1; argparse turns the error into exit code 2."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_age(text: str) -> timedelta:
    """Return a duration written as 90, 90s, 30m, 2h or 1d.

    Raises:
        ConfigError: the text is not such a duration.
    """
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise ConfigError(f"{text!r} is not a duration; write it like 90s, 30m, 2h or 1d")
    return timedelta(seconds=int(match[1]) * UNITS[match[2] or "s"])


def parse_instant(text: str) -> datetime:
    """Return an ISO date or timestamp as an aware UTC datetime; a date is its midnight UTC.

    A timestamp without an offset is taken as UTC.

    Raises:
        ValueError: the text is neither.
    """
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _age(text: str) -> timedelta:
    """Return a duration such as 30m; argparse turns the error into exit code 2."""
    try:
        return parse_age(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _max_age(text: str) -> timedelta:
    """Return a duration longer than 0: with 0, every status would be unhealthy."""
    age = _age(text)
    if not age:
        raise argparse.ArgumentTypeError("must be longer than 0; write it like 30m or 2h")
    return age


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """Add the options that set a sync's settings (sync and check take the same)."""
    parser.add_argument(
        "--image",
        metavar="ID",
        type=int,
        action="append",
        dest="images",
        help="image id to sync; repeat for several (env DO_IMAGE_ACTIONS_IMAGES, comma-separated)",
    )
    parser.add_argument(
        "--all-images",
        action="store_const",
        const=True,
        help="sync every private image of the account",
    )
    parser.add_argument(
        "--strategy",
        choices=("auto", "feed", "per-image"),
        help="how to find what changed: the account's action feed, or every image's list",
    )
    parser.add_argument("--api-url", metavar="URL", help="API base URL (default the real API)")
    parser.add_argument("--per-page", metavar="N", type=int, help="actions per page, 1..200")
    parser.add_argument(
        "--timeout", metavar="SECONDS", type=float, help="deadline of one whole request"
    )
    parser.add_argument(
        "--max-rejected", metavar="N", type=int, help="fail when more actions are rejected"
    )
    parser.add_argument("--metrics-file", metavar="PATH", help="write Prometheus metrics here")
    parser.add_argument(
        "--no-migrate",
        action="store_false",
        dest="auto_migrate",
        default=None,
        help="fail instead of upgrading an out-of-date schema",
    )


def _add_sync(commands: Any, common: argparse.ArgumentParser) -> None:
    sync = commands.add_parser(
        "sync", parents=[common], help="sync image actions into the database", epilog=EPILOG
    )
    _add_settings(sync)
    sync.add_argument("--full", action="store_true", help="scan every page, not only new ones")
    sync.add_argument(
        "--dry-run", action="store_true", help="fetch and compare, print, write nothing"
    )
    sync.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    check = commands.add_parser(
        "check",
        parents=[common],
        help="show the settings and their sources, try the token and the database; exit 1 "
        "when something would stop a sync",
        epilog=EPILOG,
    )
    _add_settings(check)
    check.add_argument("--json", action="store_true", help="print everything as one JSON object")


def _instant(text: str) -> datetime:
    """Return an ISO date or timestamp as UTC; argparse turns the error into exit code 2."""
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date or timestamp; write it like 2026-03-01 or "
            "2026-03-01T12:00:00Z"
        ) from exc


def _add_report(commands: Any, common: argparse.ArgumentParser) -> None:
    report = commands.add_parser(
        "report", parents=[common], help="summarise stored actions for auditors"
    )
    report.add_argument(
        "--format",
        choices=REPORT_FORMATS,
        default="table",
        help="output format; csv needs --section or --output-dir",
    )
    report.add_argument("--section", metavar="NAME", help="print only this section")
    report.add_argument(
        "--output-dir", metavar="DIR", help="with --format csv: write DIR/<section>.csv files"
    )
    report.add_argument(
        "--stuck-after",
        metavar="AGE",
        type=_age,
        default="1h",
        help="in-progress older than this is stuck",
    )
    report.add_argument(
        "--since", metavar="WHEN", type=_instant, help="actions started at or after (UTC)"
    )
    report.add_argument("--until", metavar="WHEN", type=_instant, help="actions started before")
    report.add_argument(
        "--image", metavar="ID", type=int, action="append", dest="images", help="repeatable"
    )
    report.add_argument(
        "--type", metavar="TYPE", action="append", dest="types", help="action type; repeatable"
    )
    report.add_argument(
        "--status", metavar="STATUS", action="append", dest="statuses", help="repeatable"
    )


def report_filter(args: argparse.Namespace) -> ReportFilter:
    """Return the report's filter; refuse what no CSV reader or no action can satisfy.

    Raises:
        ConfigError: CSV without one table per output, or --since not before --until.
    """
    if args.format == "csv" and not (args.section or args.output_dir):
        raise ConfigError(
            "a CSV file holds one table: with --format csv, choose one with --section NAME, "
            "or write a file per section with --output-dir DIR"
        )
    if args.output_dir and args.format != "csv":
        raise ConfigError("--output-dir writes CSV files; add --format csv")
    if args.since and args.until and args.since >= args.until:
        raise ConfigError(f"--since {args.since} is not before --until {args.until}; swap them")
    from etl.ops.report import ReportFilter  # only report runs this: it needs SQLAlchemy anyway

    return ReportFilter(
        since=args.since,
        until=args.until,
        images=tuple(args.images or ()),
        types=tuple(args.types or ()),
        statuses=tuple(args.statuses or ()),
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="do-image-actions",
        description="Keep a SQL copy of DigitalOcean image actions.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser, None)
    common, verbosity = _parent(_common), _parent(_verbosity)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_sync(commands, common)

    commands.add_parser(
        "migrate", parents=[common], help="upgrade the database schema to the newest"
    )

    status = commands.add_parser(
        "status",
        parents=[common],
        help="show recent runs and image state; exit 1 when unhealthy",
        epilog=EPILOG,
    )
    status.add_argument("--runs", metavar="N", type=_count, default=10, help="runs to show")
    status.add_argument(
        "--max-age",
        metavar="AGE",
        type=_max_age,
        help="unhealthy when the last success is older (e.g. 2h)",
    )
    status.add_argument("--json", action="store_true", help="print as JSON")

    _add_report(commands, common)

    demo = commands.add_parser(
        "demo",
        parents=[verbosity],
        help="sync from a built-in fake API into a local SQLite file; no token needed",
    )
    demo.add_argument(
        "--database-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"where to sync the demo (default {DEMO_DATABASE_URL})",
    )
    demo.add_argument("--images", metavar="N", type=int, default=5, help="images in the fake")
    demo.add_argument("--actions", metavar="N", type=int, default=450, help="actions per image")
    return parser
