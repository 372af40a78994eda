"""The benchmark's own machinery: the wider world and the fake that serves prebuilt pages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from bench.serve import PrebuiltFakeApi
from etl.fake import FakeApi, World

TOKEN = "bench-test-token"
# Date may tick between the two answers, and the reset follows each fake's first request.
VARYING_HEADERS = frozenset({"date", "ratelimit-reset"})


def test_world_region_scale_lengthens_only_the_region_lists() -> None:
    plain = World.generate(images=2, actions_per_image=30, seed=5)
    wide = World.generate(images=2, actions_per_image=30, seed=5, region_scale=2)
    shortened = [
        {
            **action,
            "region": action["region"]
            and {
                **action["region"],
                "sizes": action["region"]["sizes"][: len(action["region"]["sizes"]) // 2],
                "features": action["region"]["features"][:7],
            },
        }
        for listed in wide.actions.values()
        for action in listed
    ]
    assert shortened == [action for listed in plain.actions.values() for action in listed]
    fourth = wide.actions[min(wide.actions)][3]["region"]
    assert fourth == {
        "name": "Amsterdam 3",
        "slug": "ams3",
        "sizes": ["s-1vcpu-1gb", "s-1vcpu-2gb", "s-2vcpu-2gb",
                  "s-1vcpu-1gb-amd", "s-1vcpu-2gb-intel", "s-2vcpu-4gb-amd"],
        "features": ["private_networking", "backups", "ipv6", "metadata", "install_agent",
                     "storage", "image_transfer", "management_networking", "server_id",
                     "virtio", "load_balancers", "container_registry", "kubernetes",
                     "partner_interconnect"],
        "available": True,
    }  # fmt: skip


def test_world_region_scale_refuses_what_its_lists_cannot_fill() -> None:
    with pytest.raises(ValueError, match=r"region_scale must be 1\.\.4, not 5"):
        World.generate(images=1, actions_per_image=1, region_scale=5)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeApi, PrebuiltFakeApi]]:
    world = World.generate(images=2, actions_per_image=450, seed=3)
    with FakeApi(world, token=TOKEN) as plain, PrebuiltFakeApi(world, token=TOKEN) as prebuilt:
        prebuilt.prebuild()
        yield plain, prebuilt


def get(session: requests.Session, url: str, token: str = TOKEN) -> tuple[int, dict, bytes]:
    answer = session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    headers = {k.lower(): v for k, v in answer.headers.items() if k.lower() not in VARYING_HEADERS}
    return answer.status_code, headers, answer.content


@pytest.mark.parametrize(
    ("query", "prebuilt"),
    [
        pytest.param("?page=1&per_page=200", True, id="first-page"),
        pytest.param("?per_page=200&page=3", True, id="last-page-of-50"),
        pytest.param("?page=2&per_page=200", True, id="middle-page"),
        pytest.param("?page=9&per_page=200", False, id="past-the-end"),
        pytest.param("?page=1&per_page=20", False, id="another-per-page"),
        pytest.param("?page=1&per_page=200&sort=asc", False, id="another-parameter"),
    ],
)
def test_prebuilt_fake_answers_the_bytes_the_plain_fake_sends(
    fakes: tuple[FakeApi, PrebuiltFakeApi], query: str, prebuilt: bool
) -> None:
    plain, fast = fakes
    image = list(plain.world.actions)[1]
    with requests.Session() as session:
        status, headers, body = get(session, f"{plain.url}/v2/images/{image}/actions{query}")
        served = get(session, f"{fast.url}/v2/images/{image}/actions{query}")
    assert served == (status, headers, body.replace(plain.url.encode(), fast.url.encode()))
    assert fast.prebuilt_served == int(prebuilt)


def test_prebuilt_fake_still_refuses_a_wrong_token(fakes: tuple[FakeApi, PrebuiltFakeApi]) -> None:
    plain, fast = fakes
    image = min(plain.world.actions)
    query = "?page=1&per_page=200"
    with requests.Session() as session:
        expected = get(session, f"{plain.url}/v2/images/{image}/actions{query}", token="wrong")
        served = get(session, f"{fast.url}/v2/images/{image}/actions{query}", token="wrong")
    assert served == expected
    assert (served[0], fast.prebuilt_served) == (401, 0)
