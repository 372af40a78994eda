"""The HTTP client against the loopback fake: classification, retries, waits, origin guard."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from requests import PreparedRequest, Response
from requests.cookies import create_cookie
from urllib3 import HTTPResponse

from etl.errors import ApiError, AuthError, NotFoundError, RetryableApiError
from etl.fake import FakeApi, World
from etl.source.client import ApiClient
from etl.source.transport import ApiSession, GuardedAdapter, new_session
from tests.support.doubles import TOKEN, RecordingSleep
from tests.support.faults import Fault
from tests.support.scripted import ScriptedApi


def actions_url(api: FakeApi) -> str:
    image_id = next(iter(api.world.actions))
    return f"{api.url}/v2/images/{image_id}/actions"


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault("status", 429, headers={"retry-after": "7"}), id="429-retry-after"),
        pytest.param(Fault("status", 500), id="500"),
        pytest.param(Fault("status", 502), id="502"),
        pytest.param(Fault("status", 503), id="503"),
        pytest.param(Fault("status", 504), id="504"),
        pytest.param(Fault("reset"), id="connection-reset"),
        pytest.param(Fault("truncated"), id="truncated-body"),
        pytest.param(Fault("not_json"), id="not-json-200"),
    ],
)
def test_get_json_retries_transient_fault_then_succeeds(
    api: FakeApi, client: ApiClient, sleep: RecordingSleep, fault: Fault
) -> None:
    api.faults.extend([fault, fault])

    body = client.get_json(actions_url(api), {"per_page": 200})

    assert len(body["actions"]) == 45
    assert len(api.served) == 3
    assert client.stats.requests == 3
    assert client.stats.retries == 2
    assert len(sleep.calls) == 2


def test_get_json_retries_a_stall_past_the_timeout(api: FakeApi, sleep: RecordingSleep) -> None:
    client = ApiClient(base_url=api.url, token=TOKEN, timeout=0.3, max_attempts=3, sleep=sleep)
    api.faults.append(Fault("stall", seconds=1.0))

    body = client.get_json(actions_url(api))

    assert body["meta"] == {"total": 45}
    assert client.stats.requests == 2
    assert client.stats.retries == 1
    client.close()


def test_get_json_waits_what_retry_after_says(
    api: FakeApi, client: ApiClient, sleep: RecordingSleep
) -> None:
    api.faults.append(Fault("status", 429, headers={"retry-after": "7"}))

    client.get_json(actions_url(api))

    assert sleep.calls == [7.0]
    assert client.stats.rate_limit_wait == 7.0


def test_get_json_waits_until_ratelimit_reset_when_429_has_no_retry_after(
    api: FakeApi, sleep: RecordingSleep
) -> None:
    client = ApiClient(
        base_url=api.url, token=TOKEN, sleep=sleep, clock=lambda: 1_000_000.0, max_retry_wait=60
    )
    api.faults.append(Fault("status", 429, headers={"ratelimit-reset": "1000030"}))
    api.faults.append(Fault("status", 429, headers={"ratelimit-reset": "1009999"}))

    client.get_json(actions_url(api))

    assert sleep.calls == [30.0, 60.0]  # the second wait is capped by max_retry_wait
    client.close()


def test_get_json_backs_off_exponentially_without_a_hint(
    api: FakeApi, client: ApiClient, sleep: RecordingSleep
) -> None:
    api.faults.extend([Fault("status", 503)] * 3)

    client.get_json(actions_url(api))

    assert sleep.calls == [0.5, 1.0, 2.0]
    assert client.stats.rate_limit_wait == 0.0


def test_get_json_gives_up_when_attempts_run_out(
    api: FakeApi, client: ApiClient, sleep: RecordingSleep
) -> None:
    api.faults.extend([Fault("status", 502)] * 10)

    with pytest.raises(RetryableApiError, match=r"502 server_error.*request_id fake-502-req"):
        client.get_json(actions_url(api))

    assert len(api.served) == 4  # max_attempts
    assert len(sleep.calls) == 3


def test_get_json_stops_retrying_when_total_wait_would_pass_its_bound(
    api: FakeApi, sleep: RecordingSleep
) -> None:
    client = ApiClient(
        base_url=api.url, token=TOKEN, sleep=sleep, max_attempts=10, max_total_wait=5.0
    )
    api.faults.extend([Fault("status", 429, headers={"retry-after": "4"})] * 10)

    with pytest.raises(RetryableApiError, match="429"):
        client.get_json(actions_url(api))

    assert sleep.calls == [4.0]  # a second wait of 4 s would pass the 5 s budget
    client.close()


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        pytest.param(400, ApiError, r"400 server_error", id="400"),
        pytest.param(401, AuthError, r"refused the token .*valid and not expired", id="401"),
        pytest.param(403, AuthError, r"image:read scope", id="403"),
        pytest.param(404, NotFoundError, r"404 not_found", id="404"),
        pytest.param(501, ApiError, r"501", id="501"),
    ],
)
def test_get_json_fails_at_once_on_fatal_status(
    api: FakeApi,
    client: ApiClient,
    sleep: RecordingSleep,
    status: int,
    error: type[Exception],
    message: str,
) -> None:
    api.faults.append(Fault("status", status))

    with pytest.raises(error, match=message) as caught:
        client.get_json(actions_url(api))

    assert type(caught.value) is error
    assert len(api.served) == 1
    assert sleep.calls == []


class HeaderRecordingServer:
    """A loopback server that answers every GET with an empty action list and keeps its headers.

    The fake API records only whether a request was authorized; this shows what was sent.
    """

    def __init__(self, cookie: str | None = None) -> None:
        self.headers: list[dict[str, str]] = []
        self.requests: list[tuple[str, list[tuple[str, str]]]] = []  # request line, headers
        seen, sent = self.headers, self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(dict(self.headers.items()))
                sent.append((self.requestline, list(self.headers.items())))
                body = json.dumps({"actions": [], "meta": {"total": 0}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if cookie is not None:
                    self.send_header("Set-Cookie", cookie)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Stay quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HeaderRecordingServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_get_json_sends_bearer_token_and_user_agent(api: FakeApi, client: ApiClient) -> None:
    client.get_json(actions_url(api))

    assert api.served[0].authorized
    with HeaderRecordingServer() as server:
        seen = ApiClient(base_url=server.url, token=TOKEN, sleep=RecordingSleep())
        seen.get_json(f"{server.url}/v2/images/1/actions")
        seen.close()
    [headers] = server.headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    # The version as installed, not as the client module spells it.
    assert headers["User-Agent"] == f"do-image-actions/{version('do-image-actions')}"


def test_a_page_request_is_what_requests_itself_would_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session prepares its GETs itself (see ApiSession.get_streamed), sending the same.

    The same request line and headers as requests' own get, page after page, a cookie the
    server set included.
    """
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    headers = {"Authorization": f"Bearer {TOKEN}", "User-Agent": "ua", "Accept": "application/json"}

    def by_requests(session: ApiSession, url: str, params: dict[str, int] | None) -> Response:
        return session.get(url, params=params, timeout=5, stream=True, allow_redirects=False)

    def by_ourselves(session: ApiSession, url: str, params: dict[str, int] | None) -> Response:
        return session.get_streamed(url, params, 5)

    with HeaderRecordingServer(cookie="seen=1; Path=/") as server:
        for get in (by_requests, by_ourselves):
            session = new_session(headers, server.url)
            url = f"{server.url}/v2/images/1/actions"
            for params in ({"page": 1, "per_page": 200}, None, {"page": 3}):
                with get(session, url + ("?page=2&per_page=200" if params is None else ""), params):
                    pass
            session.close()
    sent = [  # no token in a failure's text
        (line, [(name, "..." if name == "Authorization" else value) for name, value in fields])
        for line, fields in server.requests
    ]

    assert sent[3:] == sent[:3]
    assert [dict(fields).get("Cookie") for _, fields in server.requests[3:]] == [
        None, "seen=1", "seen=1"
    ]  # fmt: skip
    assert [line for line, _ in sent[3:]] == [
        f"GET /v2/images/1/actions?{query} HTTP/1.1"
        for query in ("page=1&per_page=200", "page=2&per_page=200", "page=3")
    ]
    assert dict(server.requests[3][1])["Authorization"] == f"Bearer {TOKEN}"


class CapturingAdapter(GuardedAdapter):
    """An adapter that keeps what it is asked to send, and answers 200 without a network."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[Any, ...]] = []

    def send(self, request: PreparedRequest, **options: Any) -> Response:  # type: ignore[override]
        """Keep the request and every option it came with; answer an empty 200."""
        proxies = dict(options.pop("proxies") or {})
        self.sent.append((request.method, request.url, dict(request.headers), request.body,
                          request.hooks, proxies, options))  # fmt: skip
        response = Response()
        response.status_code, response.request = 200, request
        response.raw = HTTPResponse(body=io.BytesIO(b"{}"), preload_content=False, status=200)
        return response


@pytest.mark.parametrize("bypassed", [False, True], ids=["proxied", "no-proxy"])
def test_a_page_request_reaches_the_adapter_as_requests_itself_would_send_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bypassed: bool
) -> None:
    """Over HTTPS through a proxy (or past it), with a CA bundle and several cookies."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "api.example" if bypassed else "other.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    url = "https://api.example/v2/images/1/actions"
    adapters = []
    for send in ("get", "get_streamed"):
        session = new_session({"Authorization": f"Bearer {TOKEN}", "User-Agent": "ua"}, url)
        adapter = CapturingAdapter()
        session.mount("https://", adapter)
        for name in ("zeta", "alpha", "mid"):
            session.cookies.set_cookie(create_cookie(name, "1", domain="api.example", path="/"))
        for params in ({"page": 1, "per_page": 200, "q": "a b/é&"}, None):
            if send == "get":
                session.get(url, params=params, timeout=5, stream=True, allow_redirects=False)
            else:
                session.get_streamed(url, params, 5)
        adapters.append(adapter)

    assert adapters[1].sent == adapters[0].sent
    proxy = adapters[1].sent[0][5].get("https")
    assert proxy == (None if bypassed else "http://proxy.example:3128")
    assert adapters[1].sent[0][6]["verify"] == str(tmp_path / "ca.pem")


def test_a_netrc_entry_for_the_api_host_does_not_replace_the_token(
    api: FakeApi, client: ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password elses\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # where requests looks for it

    client.get_json(actions_url(api))

    assert api.served[0].authorized  # still our bearer token, not Basic from the file


@pytest.mark.parametrize("bypassed", [False, True], ids=["proxied", "no-proxy"])
def test_the_environment_proxy_settings_are_honoured(
    api: FakeApi,
    world: World,
    sleep: RecordingSleep,
    monkeypatch: pytest.MonkeyPatch,
    bypassed: bool,
) -> None:
    """The session reads HTTP_PROXY and NO_PROXY once, as requests reads them per request."""
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with ScriptedApi(world, token=TOKEN) as proxy:  # a fake reads an absolute URI's path
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        if bypassed:
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        client = ApiClient(base_url=api.url, token=TOKEN, sleep=sleep)

        client.get_json(actions_url(api))
        client.get_json(actions_url(api))
        client.close()

        assert (len(api.served), len(proxy.served)) == ((2, 0) if bypassed else (0, 2))


def test_get_json_with_a_wrong_token_is_an_auth_error(api: FakeApi, sleep: RecordingSleep) -> None:
    client = ApiClient(base_url=api.url, token="wrong", sleep=sleep)

    with pytest.raises(AuthError, match="401 unauthorized"):
        client.get_json(actions_url(api))

    client.close()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://evil.example/v2/images", id="other-host"),
        pytest.param("https://127.0.0.1/v2/images", id="other-scheme-and-port"),
    ],
)
def test_get_json_refuses_urls_off_the_configured_origin(
    api: FakeApi, client: ApiClient, url: str
) -> None:
    with pytest.raises(ApiError, match=r"only .* may receive the token"):
        client.get_json(url)

    assert api.served == []


def test_get_json_records_rate_limit_headers(api: FakeApi, client: ApiClient) -> None:
    client.get_json(actions_url(api))

    assert client.stats.ratelimit_limit == 5000
    assert client.stats.ratelimit_remaining == 4999


def test_get_answer_skips_parsing_bytes_it_already_knows(api: FakeApi, client: ApiClient) -> None:
    first = client.get_answer(actions_url(api))

    known = client.get_answer(actions_url(api), known_digest=first.digest)
    other = client.get_answer(actions_url(api), {"per_page": 5}, known_digest=first.digest)

    assert first.body is not None
    assert (known.body, known.digest) == (None, first.digest)
    assert other.body is not None
    assert other.digest != first.digest
