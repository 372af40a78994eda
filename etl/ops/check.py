"""Check a setup before the first sync: settings and their sources, the API, the database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from etl.config import SETTINGS, TOKEN_ENV, Settings, Source
from etl.config_file import ConfigFile
from etl.database_url import mask_database_url
from etl.errors import ApiError, DatabaseError
from etl.ops.tables import format_table
from etl.source.client import ApiClient
from etl.source.extract import Page, iter_image_action_pages, iter_pages
from etl.store.database import connect_synced
from etl.store.migrate import head_revision, is_known_revision
from etl.store.revision import revision_of


@dataclass(frozen=True)
class Check:
    """One verdict: what was checked, whether it holds, and what to do when it does not."""

    name: str
    ok: bool
    message: str


def check_images(settings: Settings) -> Check:
    """Check that the settings name images to sync."""
    if settings.all_images:
        return Check("images", True, "every private image of the account (all_images)")
    if settings.images:
        listed = ", ".join(map(str, settings.images))
        return Check("images", True, f"{len(settings.images)} configured: {listed}")
    return Check(
        "images",
        False,
        "no images to sync: list image ids in 'images', pass --image ID, or use --all-images",
    )


def _first_page(client: ApiClient, settings: Settings) -> tuple[str, Page]:
    """Request the first page a sync would start from, with one item; return what it lists."""
    pages: Iterator[Page]
    if settings.images and not settings.all_images:
        image = settings.images[0]
        pages, what = iter_image_action_pages(client, image, per_page=1), f"image {image}"
    else:
        pages = iter_pages(
            client, "/v2/images", "images", per_page=1, label="images", params={"private": "true"}
        )
        what = "the account's private images"
    return what, next(pages)  # page 1 only: the generator asks for no second page


def check_api(settings: Settings) -> Check:
    """Prove the token and api_url with ONE request: no retries, no second page."""
    if not settings.token:
        return Check(
            "api", False, f"no API token: set {TOKEN_ENV} or point token_file at a file holding it"
        )
    client = ApiClient(
        base_url=settings.api_url,
        token=settings.token,
        timeout=settings.timeout,
        max_attempts=1,  # a check answers now; a sync would retry
        max_response_bytes=settings.max_response_bytes,
    )
    try:
        what, page = _first_page(client, settings)
    except ApiError as exc:
        return Check("api", False, client.redact(str(exc)))
    finally:
        client.close()
    return Check(
        "api", True, f"{settings.api_url} accepted the token; {what}: meta.total {page.total}"
    )


def check_database(settings: Settings) -> Check:
    """Check that the database is reachable and at this tool's schema; create nothing."""
    where, head = mask_database_url(settings.database_url), head_revision()
    try:
        with connect_synced(settings.database_url) as conn:
            current = revision_of(conn)
    except DatabaseError as exc:
        return Check("database", False, str(exc))
    if current == head:
        return Check("database", True, f"{where} is reachable, at schema revision {head}")
    if current is not None and not is_known_revision(current):
        return Check(
            "database",
            False,
            f"{where} is at schema revision {current!r}, which this version of "
            f"do-image-actions does not know (its newest is {head}); upgrade the tool",
        )
    return Check(
        "database",
        False,
        f"{where} is at schema revision {current or 'none'}, not {head}; "
        "run 'do-image-actions migrate'",
    )


def run_checks(settings: Settings) -> list[Check]:
    """Return the verdicts on images, the API and the database, in that order."""
    return [check_images(settings), check_api(settings), check_database(settings)]


def shown_settings(settings: Settings, sources: dict[str, Source]) -> dict[str, Any]:
    """Return every setting's value as it may be shown: the URL masked, the token as present."""
    values: dict[str, Any] = {name: getattr(settings, name) for name in SETTINGS}
    values["database_url"] = mask_database_url(settings.database_url)
    values["images"] = list(settings.images)
    values["token"] = "present" if settings.token else "absent"
    return {name: (value, sources[name]) for name, value in values.items()}


def _text(value: Any) -> str:
    """Return a value as the TOML file would spell it (true, not True), without quotes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


def render_text(found: ConfigFile | None, shown: dict[str, Any], checks: list[Check]) -> str:
    """Return the settings as a table under the file read, then one line per check."""
    head = f"settings file: {found.path} (by {found.found_by})" if found else "settings file: none"
    rows = [(name, _text(value), str(source)) for name, (value, source) in shown.items()]
    lines = [f"{'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.message}" for c in checks]
    return "\n".join([head, "", format_table(rows, ("setting", "value", "source")), "", *lines])


def render_json(found: ConfigFile | None, shown: dict[str, Any], checks: list[Check]) -> str:
    """Return everything as one JSON object; ``ok`` is true only when every check holds."""
    return json.dumps(
        {
            "ok": all(check.ok for check in checks),
            "config_file": {"path": str(found.path), "found_by": found.found_by} if found else None,
            "settings": {
                name: {"value": value, "source": source.kind, "where": source.where or None}
                for name, (value, source) in shown.items()
            },
            "checks": [{"name": c.name, "ok": c.ok, "message": c.message} for c in checks],
        }
    )
