"""Never a wrong success: whole runs against hostile servers, lying totals and odd data."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine

from etl.fake import FakeApi
from etl.ops.cli import main
from etl.store.schema import image_actions, image_sync_state, rejected_actions, sync_runs
from etl.sync.run import run_sync
from tests.support.databases import HTTP_DIALECT_PARAMS
from tests.support.doubles import TOKEN, RecordingSleep
from tests.support.faults import Fault
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.runs import settings_for, sync


def first_image(api: FakeApi) -> int:
    return next(iter(api.world.actions))


def rows_of(engine: Engine, image_id: int) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in read_rows(engine) if row["image_id"] == image_id}


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(
            Fault("redirect", 302, location="http://127.0.0.2:1/elsewhere"), id="redirect"
        ),
        pytest.param(Fault("bomb", size=64 << 20), id="bomb"),
        pytest.param(Fault("raw", 200, body=b'{"actions": [' + b"[" * 3000 + b"]"), id="nesting"),
        pytest.param(Fault("raw", 200, body=b'{"actions": [], "x": "\xc3\x28"}'), id="bad-utf8"),
    ],
)
@pytest.mark.parametrize("database_url", HTTP_DIALECT_PARAMS, indirect=True)
def test_a_hostile_answer_on_page_2_never_ends_in_success(
    api: FakeApi, engine: Engine, database_url: str, fault: Fault
) -> None:
    image = first_image(api)
    path = f"/v2/images/{image}/actions"
    api.faults.extend([replace(fault, path=path, skip=1), replace(fault, path=path)])

    run = sync(api, database_url, max_response_bytes=1 << 20, max_attempts=2)

    assert run.outcome == "partial"
    assert [result.image_id for result in run.images if not result.ok] == [image]
    assert len(rows_of(engine, image)) == 20  # page 1 only: nothing from the hostile answer
    [state] = [s for s in read_rows(engine, image_sync_state) if s["image_id"] == image]
    assert (state["gone"], state["scan_complete"]) == (False, False)
    assert read_rows(engine, sync_runs)[0]["outcome"] == "partial"


def test_an_undocumented_status_is_kept_counted_and_refreshed_until_final(
    api: FakeApi, engine: Engine, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    image = first_image(api)
    oldest = api.world.actions[image][-1]  # on the last page: an early stop never reaches it
    oldest["status"] = "queued"

    first = sync(api, database_url)

    assert rows_of(engine, image)[oldest["id"]]["status"] == "queued"
    assert first.counters()["unknown_statuses"] == 1
    assert read_rows(engine, sync_runs)[0]["unknown_statuses"] == 1
    assert "status the API does not document (queued)" in caplog.text

    api.world.complete(oldest["id"])
    second = sync(api, database_url)

    assert second.outcome == "succeeded"
    assert rows_of(engine, image)[oldest["id"]]["status"] == "completed"
    assert sum(image.refreshed for image in second.images) == 1
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


def test_an_incremental_run_after_a_failed_scan_reads_to_the_end_whatever_meta_total_says(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image = first_image(api)
    api.total_override[image] = 10  # meta.total lies: 45 actions, 5 a page

    tripped = sync(api, database_url, per_page=5)
    again = sync(api, database_url, per_page=5)

    assert tripped.outcome == again.outcome == "partial"  # never a success with 30 missing
    assert "runaway paging" in str(again.images[0].error)
    del api.total_override[image]
    healed = sync(api, database_url, per_page=5)
    assert healed.outcome == "succeeded"
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


def test_an_early_stop_after_an_interrupted_write_reads_to_the_end(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image = first_image(api)
    assert sync(api, database_url, per_page=5).outcome == "succeeded"
    api.world.add_actions(image, 7)

    def crash_after_first_write(result: Any) -> None:
        if result.counts.inserted:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sync(
            settings_for(api, database_url, per_page=5, workers=1, images=(image,)),
            on_page=crash_after_first_write,
            sleep=RecordingSleep(),
        )
    api.total_override[image] = 45  # and now meta.total lies low: 52 are listed
    resumed = sync(api, database_url, per_page=5, images=(image,))

    assert not resumed.images[0].stopped_early
    assert len(rows_of(engine, image)) == 52


def test_full_marks_what_the_api_stopped_listing_and_clears_it_when_listed_again(
    api: FakeApi, engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    image = first_image(api)
    sync(api, database_url)
    dropped = api.world.actions[image].pop(3)

    incremental = sync(api, database_url)
    assert incremental.counters()["rows_missing"] == 0  # only a complete --full scan decides
    full = sync(api, database_url, full=True)

    assert full.outcome == "succeeded"
    assert full.counters()["rows_missing"] == 1
    marked = rows_of(engine, image)[dropped["id"]]
    assert marked["missing_since"] is not None
    assert [r["id"] for r in read_rows(engine) if r["missing_since"] is not None] == [dropped["id"]]
    assert read_rows(engine, sync_runs)[-1]["rows_missing"] == 1
    assert main(["report", "--database-url", database_url, "--section", "missing"]) == 0
    assert str(dropped["id"]) in capsys.readouterr().out

    api.world.actions[image].insert(3, dropped)
    back = sync(api, database_url, full=True)
    assert back.counts.updated == 1
    assert rows_of(engine, image)[dropped["id"]]["missing_since"] is None
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


def test_an_incremental_run_clears_the_mark_of_an_action_listed_again_past_page_1(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    """Marked missing, then listed again on page 3: the stored count that decides whether
    the scan may stop counts listed actions only, so the scan reads on to it; and while it
    stays unlisted, incremental runs still stop after page 1."""
    image = first_image(api)
    sync(api, database_url)
    dropped = api.world.actions[image].pop(42)  # page 3 of 3 at 20 a page
    sync(api, database_url, full=True)
    unlisted = sync(api, database_url)

    api.world.actions[image].insert(42, dropped)
    listed = sync(api, database_url)

    scan = next(i for i in unlisted.images if i.image_id == image)
    assert (scan.stopped_early, scan.pages) == (True, 1)
    assert listed.outcome == "succeeded"
    assert listed.counts.updated == 1
    assert rows_of(engine, image)[dropped["id"]]["missing_since"] is None
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


def test_an_incomplete_full_scan_marks_nothing_missing(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image = first_image(api)
    sync(api, database_url)
    api.world.actions[image].pop(3)
    api.total_override[image] = 46  # the scan cannot reconcile with meta.total

    run = sync(api, database_url, full=True)

    assert run.outcome == "partial"
    assert all(row["missing_since"] is None for row in read_rows(engine))


def test_an_action_listed_under_two_images_stays_with_the_first(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    first, second = list(api.world.actions)[:2]
    shared = api.world.actions[first][0]
    api.world.actions[second].insert(0, dict(shared))
    runs = [sync(api, database_url, workers=1) for _ in range(3)]

    assert [rows_of(engine, first)[shared["id"]]["image_id"] for _ in runs] == [first] * 3
    assert [run.counters()["rows_listed_elsewhere"] for run in runs] == [1, 1, 1]
    assert [run.counts.updated for run in runs] == [0, 0, 0]  # no flip, no rewrite


def test_a_429_with_retry_after_mid_run_waits_and_the_run_succeeds(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    minute = {"retry-after": "1", "ratelimit-remaining": "0"}
    api.faults.append(Fault("status", 429, headers=minute, path="/v2/images/", skip=2))

    run = sync(api, database_url, min_ratelimit_remaining=100)

    assert run.outcome == "succeeded"
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault("status", 404, skip=1), id="404-on-page-2"),
        pytest.param(Fault("raw", 404, body=b"<html>404</html>"), id="404-not-from-the-api"),
    ],
)
def test_only_the_apis_own_404_for_the_image_marks_it_gone(
    api: FakeApi, engine: Engine, database_url: str, fault: Fault
) -> None:
    api.faults.append(replace(fault, path=f"/v2/images/{first_image(api)}/actions"))

    run = sync(api, database_url)

    assert run.outcome == "partial"
    assert not any(state["gone"] for state in read_rows(engine, image_sync_state))


def test_a_token_the_api_echoes_is_redacted_everywhere_it_is_written(
    api: FakeApi,
    engine: Engine,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
    image = first_image(api)
    api.faults.append(Fault("echo", 400, path=f"/v2/images/{image}/actions"))
    other = list(api.world.actions)[1]
    args = ["--api-url", api.url, "--database-url", database_url, "--image", str(image)]
    args += ["--image", str(other)]  # one image fails, the other syncs: partial

    partial = main(["sync", *args])
    api.faults.append(Fault("echo", 400, path=f"/v2/images/{image}/actions"))
    as_json = main(["sync", "--json", *args])
    api.faults.append(Fault("echo", 401))
    refused = main(["sync", "--json", *args])
    status = main(["status", "--database-url", database_url, "--json"])

    out, err = capsys.readouterr()
    assert (partial, as_json, refused, status) == (3, 3, 1, 1)
    assert "Bearer ***" in out
    assert "Bearer ***" in json.loads(out.splitlines()[-2])["error"]
    written = [
        out,
        err,
        str(read_rows(engine, sync_runs)),
        str(read_rows(engine, image_sync_state)),
    ]
    assert [TOKEN in text for text in written] == [False] * 4
    assert TOKEN not in str(read_rows(engine, image_actions))


def page_body(ids: list[int], *, total: object, next_link: str | None = None) -> bytes:
    actions = [{"id": i, "status": "completed", "type": "transfer"} for i in ids]
    body: dict[str, Any] = {"actions": actions, "meta": {"total": total}}
    if next_link is not None:
        body["links"] = {"pages": {"next": next_link}}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(page_body([5, 4], total=10**30), id="total-past-bigint"),
        pytest.param(page_body([5, 4], total=10**400, next_link="{url}?page=2"), id="total-huge"),
        pytest.param(json.dumps({"actions": [{"id": 5}]}).encode(), id="no-meta"),
        pytest.param(page_body([5, 4], total="2"), id="total-a-string"),
        pytest.param(page_body([], total=10**15, next_link="{url}?page=2"), id="empty-page-next"),
        pytest.param(page_body([5], total=10**15, next_link="{url}?page=2"), id="short-page-next"),
        pytest.param(page_body([5, 4], total=3, next_link="http://[::1"), id="malformed-next"),
    ],
)
@pytest.mark.parametrize("database_url", HTTP_DIALECT_PARAMS, indirect=True)
def test_a_page_that_cannot_bound_or_verify_its_listing_fails_the_image_cleanly(
    api: FakeApi, engine: Engine, database_url: str, body: bytes
) -> None:
    image = first_image(api)
    path = f"/v2/images/{image}/actions"
    raw = body.replace(b"{url}", f"{api.url}{path}".encode())
    api.faults.append(Fault("raw", 200, body=raw, path=path))

    run = sync(api, database_url, per_page=20)

    assert run.outcome == "partial"
    assert [result.image_id for result in run.images if not result.ok] == [image]
    [ledger] = read_rows(engine, sync_runs)
    assert (ledger["outcome"], ledger["finished_at"] is not None) == ("partial", True)


def test_only_the_last_page_with_a_bad_total_is_not_a_success(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image = first_image(api)
    path = f"/v2/images/{image}/actions"
    api.faults.append(Fault("raw", 200, body=page_body([9, 8], total="3"), path=path, skip=1))

    run = sync(api, database_url, per_page=2, images=(image,))

    assert run.outcome != "succeeded"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"ratelimit-limit": "inf"}, id="limit-inf"),
        pytest.param({"ratelimit-limit": "0"}, id="limit-0"),
        pytest.param({"ratelimit-remaining": "nan"}, id="remaining-nan"),
        pytest.param({"ratelimit-remaining": "-5"}, id="remaining-negative"),
        pytest.param({"ratelimit-reset": "1e20", "ratelimit-remaining": "4000"}, id="reset-far"),
        pytest.param({"retry-after": "nan"}, id="retry-after-nan"),
    ],
)
@pytest.mark.parametrize("database_url", HTTP_DIALECT_PARAMS, indirect=True)
def test_garbage_rate_limit_headers_are_ignored(
    api: FakeApi, engine: Engine, database_url: str, headers: dict[str, str]
) -> None:
    api.faults.extend(Fault("headers", headers=headers) for _ in range(3))

    run = sync(api, database_url)

    assert run.outcome == "succeeded", run.error
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
    assert read_rows(engine, sync_runs)[0]["rate_limit_wait_seconds"] == 0.0


def test_a_spent_budget_with_a_reset_past_any_date_defers_in_one_sentence(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    api.faults.append(
        Fault("headers", headers={"ratelimit-remaining": "0", "ratelimit-reset": "nan"})
    )

    run = sync(api, database_url, min_ratelimit_remaining=5, workers=1)

    assert run.outcome == "deferred"
    assert "min_ratelimit_remaining 5" in str(run.error)


def test_a_tiny_hourly_limit_defers_instead_of_waiting_an_hour(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    api.faults.extend(Fault("headers", headers={"ratelimit-limit": "1"}) for _ in range(2))

    run = sync(api, database_url, workers=1, max_total_wait=5)

    assert run.outcome == "deferred"
    assert "the rate limit leaves no room" in str(run.error)


def test_an_action_that_moved_is_never_marked_missing_whatever_the_image_order(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    first, second = list(api.world.actions)[:2]
    sync(api, database_url, workers=1)
    moved = api.world.actions[first].pop(0)
    api.world.actions[second].insert(0, moved)

    for order in ((second, first), (first, second), (second, first)):
        sync(api, database_url, full=True, workers=1, images=order)
        assert rows_of(engine, first)[moved["id"]]["missing_since"] is None, order


def test_an_oldest_first_listing_never_skips_a_known_first_page(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    api.newest_first = False
    image = first_image(api)
    sync(api, database_url, images=(image,))
    api.world.actions[image].pop(0)  # the API drops its newest action, listed last...
    [new] = api.world.add_actions(image, 1)  # ...and lists a new one: page 1, total the same

    run = sync(api, database_url, images=(image,))

    assert run.outcome == "succeeded"
    assert new["id"] in rows_of(engine, image)


DEEP = b"[" * 1000 + b"1" + b"]" * 1000  # orjson reads it; no JSON column holds it
PAST_MARIADB = b"[" * 40 + b"1" + b"]" * 40  # MariaDB's JSON check stops at 32 levels


def serve_one_action(api: FakeApi, image: int, action: bytes) -> dict[str, Any]:
    """Make page 1 of ``image`` list only ``action`` (raw JSON); return it as parsed."""
    body = b'{"actions": [%b], "meta": {"total": 1}}' % action
    api.faults.append(Fault("raw", 200, body=body, path=f"/v2/images/{image}/actions"))
    return dict(json.loads(action))


@pytest.mark.parametrize(
    "field",
    [
        pytest.param(DEEP, id="nested-1000-deep"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b'"\\ud800"', id="lone-surrogate"),
        pytest.param(b'"a\\u0000b"', id="nul"),
    ],
)
def test_an_action_no_column_can_hold_becomes_a_dead_letter_not_a_failed_run(
    api: FakeApi, engine: Engine, database_url: str, field: bytes
) -> None:
    image = first_image(api)
    api.faults.append(
        Fault(
            "raw",
            200,
            body=b'{"actions": [{"id": 5, "status": "completed", "x": %b}], "meta": {"total": 1}}'
            % field,
            path=f"/v2/images/{image}/actions",
        )
    )  # not parsed here: the standard library refuses the deep one

    run = sync(api, database_url)

    assert run.outcome == "partial"  # as for any dead letter; never "failed"
    [dead] = read_rows(engine, rejected_actions)
    assert (dead["image_id"], dead["action_id"], dead["payload"]) == (image, 5, None)
    assert dead["reason"].endswith("(its payload is not stored: no JSON column holds it)")
    others = [row for row in read_rows(engine) if row["image_id"] != image]
    assert len(others) == sum(len(api.world.actions[i]) for i in api.world.actions if i != image)


def test_a_valid_action_nested_past_mariadbs_limit_is_a_dead_letter_there_only(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image = first_image(api)
    action = serve_one_action(api, image, b'{"id": 5, "x": %b}' % PAST_MARIADB)

    run = sync(api, database_url)

    dead = read_rows(engine, rejected_actions)
    if engine.dialect.name in ("mysql", "mariadb"):  # its JSON check stops at 32 levels
        assert run.outcome == "partial"
        assert [(d["action_id"], d["payload"]) for d in dead] == [(5, None)]
        assert "nests deeper than 32 levels" in dead[0]["reason"]
        assert 5 not in rows_of(engine, image)
    else:
        assert run.outcome == "succeeded"
        assert dead == []
        assert rows_of(engine, image)[5]["payload"] == action


def test_a_dead_letter_nested_past_mariadbs_limit_keeps_its_payload_elsewhere(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    image = first_image(api)
    action = serve_one_action(
        api, image, b'{"id": 5, "started_at": "soon", "x": %b}' % PAST_MARIADB
    )

    run = sync(api, database_url)

    assert run.outcome == "partial"
    [dead] = read_rows(engine, rejected_actions)
    assert "started_at 'soon' is not an ISO 8601 timestamp" in dead["reason"]
    if engine.dialect.name in ("mysql", "mariadb"):  # its JSON check stops at 32 levels
        assert dead["payload"] is None
    else:
        assert dead["payload"] == action
