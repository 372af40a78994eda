"""Thin commands: parse options, set up logging, run the pipeline, map errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from etl import __version__
from etl.config import DEFAULT_DATABASE_URL, env_name, load_settings, mask_database_url
from etl.database import open_engine, translate_errors
from etl.errors import ConfigError, EtlError
from etl.migrate import current_revision, upgrade
from etl.pipeline import ImageResult, RunResult, run_sync
from etl.summary import format_image, format_run

EXIT_OK = 0
EXIT_FAILED = 1  # the run failed: nothing or not everything could be synced
EXIT_USAGE = 2  # bad command line or configuration; nothing was requested
EXIT_PARTIAL = 3  # some images failed or stayed incomplete; the rest were synced

logger = logging.getLogger("etl")


class RedactingFormatter(logging.Formatter):
    """A formatter that blanks out secrets wherever they appear, tracebacks included."""

    def __init__(self, fmt: str, secrets: Sequence[str]) -> None:
        super().__init__(fmt)
        self._secrets = [secret for secret in secrets if secret]

    def format(self, record: logging.LogRecord) -> str:
        """Format the record, then replace every secret with ***."""
        text = super().format(record)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def setup_logging(verbosity: int, secrets: Sequence[str] = ()) -> None:
    """Log to stderr: warnings with -q, info by default, debug (libraries too) with -v."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if level == logging.DEBUG else logging.WARNING)
    logger.setLevel(level)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help=f"SQLAlchemy database URL (env {env_name('database_url')}; "
        f"default {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity")
    parser.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="do-image-actions",
        description="Keep a SQL copy of DigitalOcean image actions.",
        epilog="Exit codes: 0 success, 1 failure, 2 bad usage or configuration, "
        "3 partial (some images failed or stayed incomplete).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sync = commands.add_parser("sync", help="sync image actions into the database")
    _common(sync)
    sync.add_argument(
        "--image",
        metavar="ID",
        type=int,
        action="append",
        dest="images",
        help="image id to sync; repeat for several (env DO_IMAGE_ACTIONS_IMAGES, comma-separated)",
    )
    sync.add_argument("--api-url", metavar="URL", help="API base URL (default the real API)")
    sync.add_argument("--per-page", metavar="N", type=int, help="actions per page, 1..200")
    sync.add_argument("--timeout", metavar="SECONDS", type=float, help="per-request timeout")
    sync.add_argument(
        "--no-migrate",
        action="store_false",
        dest="auto_migrate",
        default=None,
        help="fail instead of upgrading an out-of-date schema",
    )

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the newest")
    _common(migrate)

    demo = commands.add_parser(
        "demo", help="sync from a built-in fake API into a local SQLite file; no token needed"
    )
    demo.add_argument("--database-url", metavar="URL", default="sqlite:///do_image_actions_demo.db")
    demo.add_argument("--images", metavar="N", type=int, default=5, help="images in the fake")
    demo.add_argument("--actions", metavar="N", type=int, default=450, help="actions per image")
    demo.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity")
    demo.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity")
    return parser


def _overrides(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(args, name, None) for name in names}


def exit_code(run: RunResult) -> int:
    """Return the exit code for a finished run."""
    return {"succeeded": EXIT_OK, "partial": EXIT_PARTIAL}.get(run.outcome, EXIT_FAILED)


def _print_image(image: ImageResult) -> None:
    print(format_image(image), flush=True)


def cmd_sync(args: argparse.Namespace) -> int:
    """Run one sync and print a line per image and a total."""
    settings = load_settings(
        args.config,
        overrides=_overrides(
            args, ("database_url", "api_url", "images", "per_page", "timeout", "auto_migrate")
        ),
    )
    setup_logging(args.verbosity or 0, [settings.token or ""])
    run = run_sync(settings, on_image=_print_image)
    print(format_run(run))
    return exit_code(run)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the database to the newest schema revision."""
    settings = load_settings(args.config, overrides=_overrides(args, ("database_url",)))
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


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the fake API, sync it into SQLite, print the summary and a few rows."""
    from etl.demo import run_demo

    run = run_demo(
        database_url=args.database_url, images=args.images, actions_per_image=args.actions
    )
    return exit_code(run)


COMMANDS = {"sync": cmd_sync, "migrate": cmd_migrate, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbosity or 0, [os.environ.get("DIGITALOCEAN_ACCESS_TOKEN", "")])
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
