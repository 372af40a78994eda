"""Paging through image actions: every last-page shape, and the guards against bad paging."""

from __future__ import annotations

import pytest

from etl.errors import NotFoundError, PaginationError
from etl.fake import FakeApi
from etl.fake.server import LAST_PAGE_SHAPES
from etl.source.client import ApiClient
from etl.source.extract import iter_image_action_pages
from etl.source.reading import next_link
from tests.support.servers import free_port


def first_image(api: FakeApi) -> int:
    return next(iter(api.world.actions))


def test_iter_image_action_pages_follows_every_page_in_order(
    api: FakeApi, client: ApiClient
) -> None:
    image_id = first_image(api)

    pages = list(iter_image_action_pages(client, image_id, per_page=20))

    assert [page.number for page in pages] == [1, 2, 3]
    assert [len(page.items) for page in pages] == [20, 20, 5]
    assert [a["id"] for page in pages for a in page.items] == [
        a["id"] for a in api.world.actions[image_id]
    ]
    assert [page.total for page in pages] == [45, 45, 45]
    assert [(s.query.get("page"), s.query.get("per_page")) for s in api.served] == [
        ("1", "20"),
        ("2", "20"),
        ("3", "20"),
    ]


@pytest.mark.parametrize("shape", LAST_PAGE_SHAPES)
def test_iter_image_action_pages_stops_on_every_last_page_shape(
    api: FakeApi, client: ApiClient, shape: str
) -> None:
    api.last_page_shape = shape

    pages = list(iter_image_action_pages(client, first_image(api), per_page=20))

    assert len(pages) == 3
    assert len(api.served) == 3


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({}, None, id="links-absent"),
        pytest.param({"links": {}}, None, id="links-empty"),
        pytest.param({"links": {"pages": {}}}, None, id="pages-empty"),
        pytest.param({"links": {"actions": []}}, None, id="pages-absent"),
        pytest.param({"links": {"pages": {"first": "a", "prev": "b"}}}, None, id="first-prev"),
        pytest.param({"links": {"pages": {"next": ""}}}, None, id="next-empty"),
        pytest.param({"links": None}, None, id="links-null"),
        pytest.param({"links": {"pages": {"next": "u", "last": "v"}}}, "u", id="next"),
    ],
)
def test_next_link_reads_every_documented_shape(body: dict, expected: str | None) -> None:
    assert next_link(body) == expected


@pytest.mark.parametrize(
    "make_link",
    [
        pytest.param(
            lambda image_id, base: f"https://evil.example/v2/images/{image_id}/actions?page=2",
            id="other-host",
        ),
        pytest.param(
            lambda image_id, base: (
                base.replace("http://", "https://") + f"/v2/images/{image_id}/actions?page=2"
            ),
            id="other-scheme",
        ),
        pytest.param(
            lambda image_id, base: f"{base}/v2/images?page=2", id="other-path-doc-example"
        ),
        pytest.param(
            lambda image_id, base: f"{base}/v2/images/{image_id + 1}/actions?page=2",
            id="other-image",
        ),
    ],
)
def test_iter_image_action_pages_refuses_a_foreign_next_link(
    api: FakeApi, client: ApiClient, make_link
) -> None:
    api.next_link_override = lambda image_id, page, per_page, base: make_link(image_id, base)

    with pytest.raises(PaginationError, match="refusing to follow it"):
        list(iter_image_action_pages(client, first_image(api), per_page=20))

    assert len(api.served) == 1


def test_iter_image_action_pages_refuses_a_next_link_to_another_port_itself(
    api: FakeApi, client: ApiClient
) -> None:
    # The client's origin check would refuse it too; the paging guard must not lean on that.
    image_id = first_image(api)
    other = f"127.0.0.1:{free_port()}"
    api.next_link_override = lambda image_id, page, per_page, base: (
        f"http://{other}/v2/images/{image_id}/actions?page=2&per_page={per_page}"
    )

    with pytest.raises(PaginationError) as caught:
        list(iter_image_action_pages(client, image_id, per_page=20))

    assert type(caught.value) is PaginationError
    assert str(caught.value) == (
        f"image {image_id} page 1: the next link points to {other}/v2/images/{image_id}/actions,"
        f" not /v2/images/{image_id}/actions on {api.url}; refusing to follow it so the token "
        "stays with the API"
    )
    assert len(api.served) == 1


def test_iter_image_action_pages_stops_a_pagination_loop(api: FakeApi, client: ApiClient) -> None:
    # Every page says the next one is page 2: page 2 repeats after itself.
    api.next_link_override = lambda image_id, page, per_page, base: (
        f"{base}/v2/images/{image_id}/actions?page=2&per_page={per_page}"
    )

    with pytest.raises(PaginationError, match="page=2 again after page 2; stopping a pagination"):
        list(iter_image_action_pages(client, first_image(api), per_page=20))

    assert len(api.served) == 2


def test_iter_image_action_pages_stops_runaway_paging_past_meta_total(
    api: FakeApi, client: ApiClient
) -> None:
    image_id = first_image(api)
    api.total_override[image_id] = 5  # 45 actions served, but meta.total claims 5

    with pytest.raises(
        PaginationError, match=r"meta\.total=5 fits in 1 pages of 20; stopping runaway"
    ):
        list(iter_image_action_pages(client, image_id, per_page=20))

    assert len(api.served) == 2


def test_iter_image_action_pages_names_a_missing_image(api: FakeApi, client: ApiClient) -> None:
    with pytest.raises(NotFoundError, match="image 999 was not found"):
        list(iter_image_action_pages(client, 999, per_page=20))
