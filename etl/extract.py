"""Page through an image's actions, refusing links and page sequences that cannot be trusted."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from etl.client import ApiClient
from etl.errors import ApiError, NotFoundError, PaginationError

# Pages past what meta.total allows that we tolerate: live data can grow while we page.
RUNAWAY_SLACK_PAGES = 1


@dataclass(frozen=True)
class Page:
    """One page of an image's actions as the API sent it."""

    image_id: int
    number: int
    actions: list[Any]
    total: int | None


def next_link(body: dict[str, Any]) -> str | None:
    """Return the next-page URL, or None for every documented last-page shape.

    ``links`` absent or ``{}``, ``pages`` absent or ``{}``, or only ``first``/``prev``
    all mean there are no more pages.
    """
    links = body.get("links")
    pages = links.get("pages") if isinstance(links, dict) else None
    link = pages.get("next") if isinstance(pages, dict) else None
    return link if isinstance(link, str) and link else None


def parse_total(body: dict[str, Any]) -> int | None:
    """Return ``meta.total`` when it is a non-negative whole number, else None."""
    meta = body.get("meta")
    total = meta.get("total") if isinstance(meta, dict) else None
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        return None
    return total


def _page_key(url: str) -> str:
    """Return what identifies a page: its page number, or the whole URL when it has none."""
    pages = parse_qs(urlsplit(url).query).get("page")
    return f"page={pages[0]}" if pages else url


def iter_image_action_pages(client: ApiClient, image_id: int, *, per_page: int) -> Iterator[Page]:
    """Yield every page of actions of one image, first to last.

    After page 1 the API's next link is followed as given (it carries page and per_page),
    but only when it stays on our origin and on this image's path.

    Raises:
        NotFoundError: the image does not exist (or is not visible to the token).
        PaginationError: a next link leaves the image's path, repeats a page, or pages run
            past what ``meta.total`` allows.
        ApiError: a page is not shaped like an action list.
    """
    path = f"/v2/images/{image_id}/actions"
    url = client.url_for(path)
    params: dict[str, Any] | None = {"page": 1, "per_page": per_page}
    seen = {"page=1"}
    largest = 0  # the server may cap per_page: the largest page seen is the real page size
    number = 0
    while True:
        number += 1
        try:
            body = client.get_json(url, params)
        except NotFoundError as exc:
            raise NotFoundError(
                f"image {image_id} was not found (404); remove it from images or check the "
                "token's account",
                status=404,
                url=exc.url,
                request_id=exc.request_id,
            ) from exc
        actions = body.get("actions")
        if not isinstance(actions, list):
            raise ApiError(
                f"image {image_id} page {number}: the response has no 'actions' list; "
                "check that api_url points at the DigitalOcean API",
                url=path,
            )
        total = parse_total(body)
        yield Page(image_id=image_id, number=number, actions=actions, total=total)

        link = next_link(body)
        if link is None:
            return
        target = urlsplit(link)
        if (target.scheme, target.netloc, target.path) != urlsplit(client.url_for(path))[:3]:
            raise PaginationError(
                f"image {image_id} page {number}: the next link points to "
                f"{target.netloc}{target.path}, not {path} on {client.base_url}; refusing to "
                "follow it so the token stays with the API",
                url=path,
            )
        key = _page_key(link)
        if key in seen:
            raise PaginationError(
                f"image {image_id}: the API sent a next link to {key} again after page "
                f"{number}; stopping a pagination loop",
                url=path,
            )
        seen.add(key)
        largest = max(largest, len(actions))
        page_size = max(largest, 1)
        if total is not None:
            allowed = max(math.ceil(total / page_size), 1) + RUNAWAY_SLACK_PAGES
            if number >= allowed:
                raise PaginationError(
                    f"image {image_id}: the API offered page {number + 1} but meta.total={total} "
                    f"fits in {allowed - RUNAWAY_SLACK_PAGES} pages of {page_size}; "
                    "stopping runaway paging",
                    url=path,
                )
        url, params = link, None
