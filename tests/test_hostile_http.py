"""Servers nobody here wrote: redirects, drips, bombs, nesting, echoed tokens, odd 429s and 404s."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
import requests

from etl.errors import (
    ApiError,
    ApiUnreachableError,
    NotFoundError,
    RedirectRefusedError,
    ResponseTooLargeError,
    RunInterrupted,
)
from etl.fake import FakeApi
from etl.source.client import ApiClient
from etl.source.extract import iter_image_action_pages
from etl.source.gate import OpenGate
from etl.sync.coordinator import Coordinator
from etl.sync.ratelimit import RateLimiter
from tests.support.doubles import TOKEN, RecordingSleep
from tests.support.faults import Fault

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def image_of(api: FakeApi) -> int:
    return next(iter(api.world.actions))


def actions_url(api: FakeApi) -> str:
    return f"{api.url}/v2/images/{image_of(api)}/actions"


@pytest.mark.parametrize(
    "location",
    [
        pytest.param("http://127.0.0.2:9/v2/images/1/actions", id="other-host"),
        pytest.param("{url}/v2/images", id="same-origin-other-path"),
        pytest.param("{url}/v2/images/{other}/actions", id="same-origin-other-image"),
        pytest.param("https://{host}/v2/images/{image}/actions", id="other-scheme"),
        pytest.param("//example.invalid/v2/images/{image}/actions", id="scheme-relative"),
    ],
)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_off_the_path_or_origin_fails_and_nothing_is_read(
    api: FakeApi, client: ApiClient, location: str, status: int
) -> None:
    image = image_of(api)
    host = api.url.split("//", 1)[1]
    target = location.format(url=api.url, image=image, other=image + 1, host=host)
    api.faults.append(Fault("redirect", status, location=target))

    with pytest.raises(RedirectRefusedError, match=r"was redirected to .*check api_url"):
        client.get_json(actions_url(api))

    assert len(api.served) == 1  # the redirect was not followed, not even to our own API


def test_a_redirect_within_the_same_path_is_followed(api: FakeApi, client: ApiClient) -> None:
    api.faults.append(Fault("redirect", 302, location=f"{actions_url(api)}?page=1&per_page=200"))

    body = client.get_json(actions_url(api))

    assert len(body["actions"]) == 45
    assert [entry.path for entry in api.served] == [f"/v2/images/{image_of(api)}/actions"] * 2


def test_a_redirect_loop_on_the_same_path_stops(api: FakeApi, client: ApiClient) -> None:
    api.faults.extend(Fault("redirect", 302, location=actions_url(api)) for _ in range(10))

    with pytest.raises(RedirectRefusedError, match="redirected more than 5 times"):
        client.get_json(actions_url(api))


def test_a_dripped_body_times_out_within_the_request_deadline(api: FakeApi) -> None:
    client = ApiClient(
        base_url=api.url, token=TOKEN, timeout=0.5, max_attempts=2, sleep=RecordingSleep()
    )
    page_bytes = len(requests.get(actions_url(api), headers=AUTH, timeout=5).content)
    api.served.clear()
    api.faults.extend([Fault("drip", seconds=0.05), Fault("drip", seconds=0.05)])
    started = time.monotonic()

    with pytest.raises(ApiUnreachableError, match="timed out on every attempt"):
        client.get_json(actions_url(api))

    took = time.monotonic() - started
    assert len(api.served) == 2  # both attempts cut off, each by its own deadline
    # Two deadlines of 0.5 s; dripping the page whole takes minutes. The bound sits far
    # from both, so a loaded machine cannot make it flaky.
    assert page_bytes * 0.05 > 300
    assert took < 30
    client.close()


def test_a_gzip_page_is_inflated(api: FakeApi, client: ApiClient) -> None:
    api.faults.append(Fault("gzip"))

    body = client.get_json(actions_url(api), {"per_page": 200})

    assert len(body["actions"]) == 45


def test_a_decompression_bomb_is_refused_without_inflating_it(api: FakeApi) -> None:
    client = ApiClient(
        base_url=api.url, token=TOKEN, max_response_bytes=1 << 20, sleep=RecordingSleep()
    )
    api.faults.append(Fault("bomb", size=256 << 20))

    with pytest.raises(ResponseTooLargeError, match="max_response_bytes=1048576"):
        client.get_json(actions_url(api))

    assert len(api.served) == 1  # not retried: the same bytes would come again
    client.close()


def test_a_body_larger_than_the_limit_is_refused(api: FakeApi) -> None:
    client = ApiClient(base_url=api.url, token=TOKEN, max_response_bytes=1000)
    with pytest.raises(ResponseTooLargeError):
        client.get_json(actions_url(api))
    client.close()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"actions": [' + b"[" * 5000 + b"]" * 5000 + b"]}", id="nested-5000"),
        pytest.param(b'{"actions": [], "meta": {"total": 0}, "x": "\xff\xfe"}', id="bad-utf8"),
        pytest.param(b'\xef\xbb\xbf{"actions": []}', id="utf8-bom"),
    ],
)
def test_a_body_that_is_not_rfc_8259_json_is_not_json(
    api: FakeApi, client: ApiClient, body: bytes
) -> None:
    api.faults.extend(Fault("raw", 200, body=body) for _ in range(4))

    with pytest.raises(ApiError, match="not complete JSON"):
        client.get_json(actions_url(api))


def test_an_error_that_echoes_the_token_is_redacted(api: FakeApi, client: ApiClient) -> None:
    api.faults.append(Fault("echo", 400))

    with pytest.raises(ApiError) as caught:
        client.get_json(actions_url(api))

    assert TOKEN not in str(caught.value)
    assert "Bearer ***" in str(caught.value)


def test_a_page_that_echoes_the_token_never_carries_it(api: FakeApi, client: ApiClient) -> None:
    body = {"actions": [{"id": 1, "status": f"Bearer {TOKEN}"}], "meta": {"total": 1}}
    api.faults.append(Fault("raw", 200, body=json.dumps(body).encode()))

    page = client.get_json(actions_url(api))

    assert page["actions"][0]["status"] == "Bearer ***"


def test_a_429_with_retry_after_waits_and_carries_on_whatever_remaining_says(
    api: FakeApi, sleep: RecordingSleep
) -> None:
    gate = Coordinator(
        limiter=RateLimiter(per_minute=250, per_hour=5000), min_ratelimit_remaining=100
    )
    client = ApiClient(base_url=api.url, token=TOKEN, gate=gate, sleep=sleep)
    minute = {"retry-after": "1", "ratelimit-remaining": "0"}
    api.faults.append(Fault("status", 429, headers=minute))

    body = client.get_json(actions_url(api), {"per_page": 200})

    assert len(body["actions"]) == 45
    assert sleep.calls == [1.0]
    client.close()


def test_a_404_past_page_1_does_not_mark_the_image_gone(api: FakeApi, client: ApiClient) -> None:
    image = image_of(api)
    api.faults.append(Fault("status", 404, path=f"/v2/images/{image}/actions", skip=1))

    pages = iter_image_action_pages(client, image, per_page=20)
    with pytest.raises(ApiError, match="page 2 answered 404") as caught:
        list(pages)

    assert not isinstance(caught.value, NotFoundError)


def test_a_404_that_is_not_the_apis_own_does_not_mark_the_image_gone(
    api: FakeApi, client: ApiClient
) -> None:
    api.faults.append(Fault("raw", 404, body=b"<html>Not Found</html>"))

    with pytest.raises(ApiError, match="check api_url") as caught:
        list(iter_image_action_pages(client, image_of(api), per_page=20))

    assert not isinstance(caught.value, NotFoundError)


def stop_once(stop: threading.Event, condition: Callable[[], bool]) -> list[float]:
    """Set ``stop`` from another thread as soon as ``condition()`` holds; return when, in a list.

    The stop is tied to what the fake saw, not to a timer that may fire too early.
    """
    stopped_at: list[float] = []

    def watch() -> None:
        deadline = time.monotonic() + 30
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)
        stopped_at.append(time.monotonic())
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stopped_at


# Far below the 20 s stall and the 60 s retry wait, far above a loaded machine's jitter.
STOP_WITHIN = 5.0


def test_a_stop_ends_a_request_in_flight_and_a_retry_wait(api: FakeApi) -> None:
    stop = threading.Event()
    client = ApiClient(base_url=api.url, token=TOKEN, timeout=30, gate=OpenGate(stop))
    api.faults.append(Fault("stall", seconds=20))
    stopped_at = stop_once(stop, lambda: len(api.served) == 1)  # the request is in flight

    with pytest.raises(RunInterrupted):
        client.get_json(actions_url(api))

    assert time.monotonic() - stopped_at[0] < STOP_WITHIN
    assert len(api.served) == 1
    stop.clear()
    api.faults.append(Fault("status", 429, headers={"retry-after": "60"}))
    stopped_at = stop_once(stop, lambda: api.served[-1].status == 429)  # now it waits 60 s

    with pytest.raises(RunInterrupted):
        client.get_json(actions_url(api))

    assert time.monotonic() - stopped_at[0] < STOP_WITHIN
    assert [entry.status for entry in api.served] == [0, 429]
    client.close()


def test_a_redirect_never_reads_its_own_body(api: FakeApi, client: ApiClient) -> None:
    location = f"{actions_url(api)}?page=1&per_page=200"
    api.faults.append(Fault("redirect", 302, location=location, size=64 << 20))
    started = time.monotonic()

    body = client.get_json(actions_url(api))

    assert len(body["actions"]) == 45
    assert time.monotonic() - started < 1.0  # 64 MiB were not inflated


def test_a_malformed_redirect_location_fails_in_one_sentence(
    api: FakeApi, client: ApiClient
) -> None:
    api.faults.append(Fault("redirect", 302, location="http://[::1"))

    with pytest.raises(RedirectRefusedError, match="not a valid URL"):
        client.get_json(actions_url(api))


def test_a_token_in_the_reason_phrase_is_redacted_before_it_is_cut(
    api: FakeApi, client: ApiClient
) -> None:
    api.faults.append(Fault("raw", 418, reason="x" * 40 + TOKEN))

    with pytest.raises(ApiError) as caught:
        client.get_json(actions_url(api))

    assert TOKEN[:12] not in str(caught.value)


def test_a_token_spelled_in_json_escapes_is_redacted(api: FakeApi, client: ApiClient) -> None:
    spelled = "".join(f"\\u{ord(ch):04x}" for ch in TOKEN)
    body = '{"actions": [{"id": 1, "type": "' + spelled + '"}], "meta": {"total": 1}}'
    api.faults.append(Fault("raw", 200, body=body.encode()))

    page = client.get_json(actions_url(api))

    assert page["actions"][0]["type"] == "***"
