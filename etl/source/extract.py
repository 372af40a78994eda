"""Page through an image's actions, refusing links and page sequences that cannot be trusted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

from etl.errors import ApiError, NotFoundError, PaginationError
from etl.source.client import ApiClient
from etl.source.reading import next_link, parse_total

# Pages past what meta.total allows that we tolerate: live data can grow while we page.
RUNAWAY_SLACK_PAGES = 1


@dataclass(frozen=True)
class Page:
    """One page of a collection as the API sent it."""

    number: int
    items: list[Any]
    total: int | None
    digest: str = ""  # fingerprint of the page's bytes (page 1's only, unless asked for all)
    known: bool = False  # the bytes matched the known first-page fingerprint: not parsed
    prepared: Any = None  # what iter_pages' ``prepare`` made of the bytes; items are [] then
    link: str | None = None  # its next link, as sent

    @property
    def size(self) -> int:
        """Return how many items the page holds."""
        return len(self.items) if self.prepared is None else int(self.prepared.size)


def _read(body: dict[str, Any], key: str) -> tuple[list[Any], bool, int | None, str | None]:
    """Return a page's items, whether they are a list, its meta.total and its next link."""
    items = body.get(key)
    if not isinstance(items, list):
        return [], False, None, None
    return items, True, parse_total(body), next_link(body)


def _numbered(
    prepare: Callable[[bytes, int, str], Any], number: int, content: bytes, digest: str
) -> Any:
    return prepare(content, number, digest)


def _page_key(url: str) -> str:
    """Return what identifies a page: its page number, or the whole URL when it has none."""
    pages = parse_qs(urlsplit(url).query).get("page")
    return f"page={pages[0]}" if pages else url


def iter_pages(
    client: ApiClient,
    path: str,
    key: str,
    *,
    per_page: int,
    label: str,
    params: dict[str, Any] | None = None,
    known_first_digest: str | None = None,
    fingerprints: bool = False,
    prepare: Callable[[bytes, int, str], Any] | None = None,
) -> Iterator[Page]:
    """Yield every page of the collection at ``path`` whose items sit under ``key``.

    Page 1 carries the fingerprint of its bytes, and with ``fingerprints`` every page does.
    After page 1 the API's next link is followed as given (it carries page and per_page),
    but only when it stays on our origin and on the same path. A first page whose bytes
    match ``known_first_digest`` is yielded unparsed (``known``), and paging stops there.

    ``prepare`` reads each page's bytes instead, given them, its number and fingerprint
    (see read_answer): its answer, with ``listed``, ``total``, ``next_link`` and ``size``
    as it found them, is yielded as the page's ``prepared``.

    Every page must carry a usable ``meta.total`` (what completeness is checked against),
    and every page that offers a next one must be full, as offset paging makes them: so
    paging ends within what ``meta.total`` allows, whatever the server sends.

    Raises:
        PaginationError: a next link is malformed, leaves the path or repeats a page; a
            page that is not the last is short; pages run past what ``meta.total`` allows.
        ApiError: a page is not shaped like a list of ``key``, or has no usable meta.total.
    """
    url = client.url_for(path)
    query: dict[str, Any] | None = {**(params or {}), "page": 1, "per_page": per_page}
    seen = {"page=1"}
    page_size = 0  # page 1's: the server may cap per_page below what we asked
    number = 0
    while True:
        number += 1
        answer = client.get_answer(  # only page 1's fingerprint is compared here
            url,
            query,
            known_digest=known_first_digest if number == 1 else None,
            fingerprint=fingerprints or number == 1,
            prepare=None if prepare is None else partial(_numbered, prepare, number),
        )
        body, prepared = answer.body, answer.prepared
        items: list[Any]
        if prepared is not None:
            items, listed, total, link = [], prepared.listed, prepared.total, prepared.next_link
        elif body is not None:
            items, listed, total, link = _read(body, key)
        else:
            yield Page(number=number, items=[], total=None, digest=answer.digest, known=True)
            return
        if not listed:
            raise ApiError(
                f"{label} page {number}: the response has no {key!r} list; "
                "check that api_url points at the DigitalOcean API",
                url=path,
            )
        if total is None:
            raise ApiError(
                f"{label} page {number}: meta.total is missing or not a whole number from 0 "
                "to 2^63-1, so the listing cannot be checked for completeness",
                url=path,
            )
        page = Page(number, items, total, answer.digest, prepared=prepared, link=link)
        yield page

        if link is None:
            return
        size = page.size
        page_size = page_size or size
        if not size or size != page_size:
            raise PaginationError(
                f"{label} page {number} holds {size} items, not the {page_size} of a "
                "full page, yet offers a next page; stopping paging that cannot end",
                url=path,
            )
        try:
            target = urlsplit(link)
        except ValueError as exc:
            raise PaginationError(
                f"{label} page {number}: the next link {link[:80]!r} is not a valid URL",
                url=path,
            ) from exc
        if (target.scheme, target.netloc, target.path) != urlsplit(url)[:3]:
            raise PaginationError(
                f"{label} page {number}: the next link points to "
                f"{target.netloc}{target.path}, not {path} on {client.base_url}; refusing to "
                "follow it so the token stays with the API",
                url=path,
            )
        page_key = _page_key(link)
        if page_key in seen:
            raise PaginationError(
                f"{label}: the API sent a next link to {page_key} again after page "
                f"{number}; stopping a pagination loop",
                url=path,
            )
        seen.add(page_key)
        allowed = max(-(-total // page_size), 1) + RUNAWAY_SLACK_PAGES  # exact integer ceil
        if number >= allowed:
            raise PaginationError(
                f"{label}: the API offered page {number + 1} but meta.total={total} "
                f"fits in {allowed - RUNAWAY_SLACK_PAGES} pages of {page_size}; "
                "stopping runaway paging",
                url=path,
            )
        url, query = link, None


def _image_not_found(image_id: int, exc: NotFoundError) -> NotFoundError:
    return NotFoundError(
        f"image {image_id} was not found (404); remove it from images or check the token's account",
        status=404,
        url=exc.url,
        request_id=exc.request_id,
    )


def iter_image_action_pages(
    client: ApiClient,
    image_id: int,
    *,
    per_page: int,
    known_first_digest: str | None = None,
    prepare: Callable[[bytes, int, str], Any] | None = None,
) -> Iterator[Page]:
    """Yield every page of actions of one image, first to last, each with its fingerprint.

    ``prepare`` reads the pages' bytes instead of the client (see iter_pages).

    Only a 404 for page 1 says the image is gone; a 404 for a later page is a listing
    that changed under us (or an API that misbehaves), and fails the image without that.

    Raises:
        NotFoundError: the image does not exist (or is not visible to the token).
        PaginationError: see iter_pages.
        ApiError: a page is not shaped like an action list, or a later page answered 404.
    """
    pages = iter_pages(
        client,
        f"/v2/images/{image_id}/actions",
        "actions",
        per_page=per_page,
        label=f"image {image_id}",
        known_first_digest=known_first_digest,
        fingerprints=True,  # see etl.sync.prints
        prepare=prepare,
    )
    number = 0
    try:
        for page in pages:
            number = page.number
            yield page
    except NotFoundError as exc:
        if number == 0:
            raise _image_not_found(image_id, exc) from exc
        raise ApiError(
            f"image {image_id} page {number + 1} answered 404 after page {number} was read; "
            "the image was not marked gone, and the next run reads it again",
            status=404,
            url=exc.url,
            request_id=exc.request_id,
        ) from exc


def iter_image_ids(client: ApiClient, *, per_page: int) -> Iterator[int]:
    """Yield the id of every private image of the account (``GET /v2/images?private=true``).

    Raises:
        ApiError: a page is not a list of images, or an image has no integer id.
        PaginationError: see iter_pages.
    """
    for page in iter_pages(
        client,
        "/v2/images",
        "images",
        per_page=per_page,
        label="images",
        params={"private": "true"},
    ):
        for image in page.items:
            image_id = image.get("id") if isinstance(image, dict) else None
            if isinstance(image_id, bool) or not isinstance(image_id, int) or image_id < 1:
                raise ApiError(
                    f"images page {page.number}: an image has no usable id: {image!r:.80}"
                )
            yield image_id


def get_image_action(client: ApiClient, image_id: int, action_id: int) -> Any:
    """Return one action of an image (``GET /v2/images/{id}/actions/{action_id}``).

    The API wraps it as ``{"action": {...}}``; the spec draws it unwrapped, so both are read.

    Raises:
        NotFoundError: the image or the action is gone.
    """
    body = client.get_json(client.url_for(f"/v2/images/{image_id}/actions/{action_id}"))
    return body.get("action", body)
