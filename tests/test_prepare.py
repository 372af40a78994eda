"""Pages prepared beside the run: the same split as split_page, in a helper process or not."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from etl.errors import RunInterrupted
from etl.fake import FakeApi
from etl.model import encode_payload, hash_payload
from etl.ready import FORMS
from etl.source.reading import NOT_JSON, NOT_OBJECT, OBJECT, next_link, parse_total
from etl.store.schema import rejected_actions
from etl.sync import preparer as preparer_module
from etl.sync.pages import page_ids, split_page, split_prepared
from etl.sync.prepare import RAW, REASON, prepare_items, prepare_page
from etl.sync.preparer import Helper, HelperGone, Preparer, shared_helper
from etl.sync.run import _Run, run_sync
from tests.support.databases import DIALECT_PARAMS, fresh_database, migrated_engine
from tests.support.doubles import TOKEN, RecordingSleep
from tests.support.faults import Fault
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, ready_row, without_bookkeeping
from tests.support.runs import settings_for, sync
from tests.test_hostile import ACTIONS, JSON
from tests.test_load import action

# The dialects whose pages are prepared: DuckDB binds per row through SQLAlchemy.
PREPARED_DIALECTS = DIALECT_PARAMS[:3]


def known_for(items: list[Any], image_id: int, choices: list[int]) -> dict[int, str]:
    """Return stored fingerprints for some of ``items``' ids: right, wrong, or none."""
    known: dict[int, str] = {}
    for raw, choice in zip(items, choices, strict=False):
        if not page_ids([raw]) or choice == 0:
            continue
        try:
            right = hash_payload(encode_payload(raw), image_id)
        except Exception:
            right = "f" * 32
        known[raw["id"]] = right if choice == 1 else "0" * 32
    return known


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(ACTIONS | JSON, max_size=6).map(lambda items: items + items[:1]),
    choices=st.lists(st.integers(0, 2), min_size=7, max_size=7),
    form=st.sampled_from(FORMS),
    max_depth=st.sampled_from([None, 3]),
)
def test_a_prepared_page_splits_as_split_page_splits_it(
    items: list[Any], choices: list[int], form: str, max_depth: int | None
) -> None:
    assert_split_alike(items, known_for(items, 7, choices), form, max_depth)


@settings(max_examples=100, deadline=None)
@given(
    items=st.lists(
        st.builds(action, st.integers(1, 9), st.sampled_from(["completed", "in-progress"])),
        max_size=6,
    ).map(lambda items: items + items[:1]),
    form=st.sampled_from(FORMS),
)
def test_a_first_page_of_actions_that_all_transform_splits_as_split_page_splits_it(
    items: list[Any], form: str
) -> None:
    assert_split_alike(items, {}, form, None)


def assert_split_alike(
    items: list[Any], known: dict[int, str], form: str, max_depth: int | None
) -> None:
    expected = split_page(items, 7, 3, known, max_depth=max_depth)

    actions = prepare_items(items, 7, form=form, max_depth=max_depth)
    split = split_prepared(actions, page_ids(items), 3, known)

    assert split.rows == [ready_row(row, form) for row in expected.rows]  # type: ignore[arg-type]
    assert (split.ids, split.statuses) == (expected.ids, expected.statuses)
    assert (split.unchanged, split.hashes) == (expected.unchanged, expected.hashes)
    assert split.rejected == expected.rejected


def test_a_stored_action_that_no_longer_transforms_counts_unchanged_as_split_page_counts_it() -> (
    None
):
    raw = {"id": 1, "status": "odd", "started_at": "yesterday"}  # stored by an older version
    known = {1: hash_payload(encode_payload(raw), 7)}

    split = split_prepared(prepare_items([raw], 7, form="naive", max_depth=None), [1], 1, known)

    assert (split.unchanged, split.statuses, split.rejected) == (1, ["odd"], [])
    assert split_page([raw], 7, 1, known).statuses == ["odd"]


def page_bytes(body: Any) -> bytes:
    return json.dumps(body).encode()


ACTION = {"id": 5, "status": "completed", "started_at": "2026-11-01T10:00:00Z", "region": None}
LISTED = {"actions": [ACTION], "meta": {"total": 9}}


@pytest.mark.parametrize(
    ("content", "shape", "listed"),
    [
        pytest.param(b'{"actions": [', NOT_JSON, False, id="cut-short"),
        pytest.param(b"\xff\xfe", NOT_JSON, False, id="not-utf8"),
        pytest.param(b"[1, 2]", NOT_OBJECT, False, id="a-list"),
        pytest.param(page_bytes({"actions": 5, "meta": {"total": 1}}), OBJECT, False, id="no-list"),
        pytest.param(page_bytes({**LISTED, "links": {"pages": {"next": "n"}}}), OBJECT, True),
        pytest.param(page_bytes({**LISTED, "meta": {"total": True}}), OBJECT, True, id="bad-total"),
    ],
)
def test_a_page_is_read_as_the_client_reads_it(content: bytes, shape: int, listed: bool) -> None:
    page = prepare_page(content, 7, form="naive", max_depth=None)
    read_only = prepare_page(content, 7, form="naive", max_depth=None, read_only=True)

    assert (page.shape, page.listed) == (shape, listed)
    if listed:
        body = json.loads(content)
        assert (page.total, page.next_link) == (parse_total(body), next_link(body))
        assert (page.size, page.ids) == (len(body["actions"]), page_ids(body["actions"]))
        assert page.actions == prepare_items(body["actions"], 7, form="naive", max_depth=None)
        assert read_only == page._replace(actions=None)  # read, not prepared


def a_page() -> bytes:
    actions = [{**ACTION, "id": n} for n in range(30, 10, -1)] + [{"id": "bad"}]
    return page_bytes({"actions": actions, "meta": {"total": 21}})


@pytest.mark.parametrize("form", FORMS)
def test_the_helper_process_prepares_a_page_as_the_run_would(form: str) -> None:
    helper = Helper()
    try:
        options = {"form": form, "max_depth": 32, "read_only": False}
        answer = helper.call(a_page(), 7, options)
    finally:
        helper.close()

    assert answer == prepare_page(a_page(), 7, **options)
    assert answer.actions is not None
    assert answer.actions[-1][REASON] is not None  # the dead letter travels whole
    assert answer.actions[-1][RAW] == {"id": "bad"}
    assert pickle.loads(pickle.dumps(answer)) == answer  # noqa: S301  (our own bytes)


def pipe_limit() -> int:
    try:
        return int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        return 0


@pytest.mark.skipif(pipe_limit() < preparer_module.PIPE_SIZE, reason="Linux's pipe sizes")
def test_both_pipes_to_the_helper_hold_a_page_whole() -> None:
    """Neither side waits halfway through a page or its answer for the other to read."""
    import fcntl

    helper = Helper()
    try:
        sizes = [
            fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) for fd in (helper._input, helper._answers.fileno())
        ]
        answer = helper.call(a_page(), 7, {"form": "naive", "max_depth": None})
    finally:
        helper.close()

    assert sizes == [preparer_module.PIPE_SIZE] * 2
    assert answer == prepare_page(a_page(), 7, form="naive", max_depth=None)


@pytest.mark.skipif(pipe_limit() < preparer_module.PIPE_SIZE, reason="Linux's pipe sizes")
def test_a_page_larger_than_a_default_pipe_reaches_the_helper_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No worker's write stops halfway to wait for the helper to read the rest."""
    actions = [{**ACTION, "id": n, "note": "x" * 1000} for n in range(200, 0, -1)]
    content = page_bytes({"actions": actions, "meta": {"total": 200}})
    assert len(content) > 3 * 65536  # three default pipes' worth
    helper = Helper()
    written: list[tuple[int, int]] = []
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        done = real_write(fd, data)
        if fd == helper._input:  # the helper's input alone: other threads write elsewhere
            written.append((len(data), done))
        return done

    monkeypatch.setattr(preparer_module.os, "write", write)
    try:
        answer = helper.call(content, 7, {"form": "naive", "max_depth": None})
    finally:
        monkeypatch.undo()
        helper.close()

    assert answer.ids == list(range(200, 0, -1))
    assert len(written) == 1
    assert written[0][0] == written[0][1] > len(content)


def test_the_helper_process_gets_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
    helper = Helper()
    try:
        helper.call(a_page(), 7, {"form": "naive", "max_depth": None})
        with open(f"/proc/{helper._process.pid}/environ", "rb") as handle:
            environ = handle.read()
    finally:
        helper.close()

    assert TOKEN.encode() not in environ
    assert b"PATH=" in environ  # the rest of the environment is there


def helped(form: str) -> tuple[Preparer, Helper]:
    """Return a preparer whose helper has answered a page, and that helper."""
    preparer = Preparer(form=form, max_depth=None, helper=True)
    preparer.start()
    helper = preparer._helper
    assert helper is not None
    helper.call(a_page(), 7, {"form": form, "max_depth": None})  # it has started
    return preparer, helper


def test_a_helper_that_ended_leaves_the_preparing_to_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    preparer, helper = helped("naive")
    helper._process.kill()
    helper._process.wait()

    with caplog.at_level(logging.WARNING):
        page = preparer.page(a_page(), 7)

    assert page == prepare_page(a_page(), 7, form="naive", max_depth=None)
    assert "the run prepares its pages itself" in caplog.text
    assert shared_helper() is not helper  # the next run starts another


def a_big_page() -> bytes:
    """Return a page larger than the helper's pipe holds: its write waits for the reader."""
    actions = [{**ACTION, "id": n, "type": "x" * 1500} for n in range(2000, 1000, -1)]
    page = page_bytes({"actions": actions, "meta": {"total": 1000}})
    assert len(page) > preparer_module.PIPE_SIZE
    return page


@pytest.mark.parametrize("page", [a_page, a_big_page], ids=["waiting", "sending"])
def test_a_wait_for_a_stopped_helper_ends_with_the_run_s_stop(page: Any) -> None:
    helper = Helper()
    try:
        helper.call(a_page(), 7, {"form": "naive", "max_depth": None})
        os.kill(helper._process.pid, signal.SIGSTOP)
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()  # SIGTERM, say
        started = time.monotonic()

        with pytest.raises(RunInterrupted):
            helper.call(page(), 7, {"form": "naive", "max_depth": None}, stop)

        assert time.monotonic() - started < 2
    finally:
        os.kill(helper._process.pid, signal.SIGKILL)
        helper.close()


@pytest.mark.parametrize(
    ("page", "warning"),
    [
        (a_page, "gave no answer in 0.5 s"),  # sent whole, never answered
        (a_big_page, "could not be sent (TimeoutError)"),  # larger than a pipe: never read
    ],
    ids=["stops-answering", "reads-no-more"],
)
def test_a_stopped_helper_is_left_behind(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, page: Any, warning: str
) -> None:
    monkeypatch.setattr(preparer_module, "ANSWER_TIMEOUT", 0.5)
    preparer, helper = helped("zoned")
    os.kill(helper._process.pid, signal.SIGSTOP)

    with caplog.at_level(logging.WARNING):
        prepared = preparer.page(page(), 7)

    assert prepared == prepare_page(page(), 7, form="zoned", max_depth=None)
    assert warning in caplog.text
    assert helper._process.wait(timeout=5) == -signal.SIGKILL


def test_a_page_that_fails_to_go_to_the_helper_leaves_no_answer_to_the_wrong_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    preparer, helper = helped("naive")
    real_send = helper._send

    def half_sent(data: bytes, *args: Any) -> None:
        real_send(data[: len(data) // 2], *args)
        raise MemoryError  # say

    monkeypatch.setattr(helper, "_send", half_sent)
    with pytest.raises(HelperGone, match="could not be sent"):
        helper.call(a_page(), 7, {"form": "naive", "max_depth": None})
    other = page_bytes({"actions": [{**ACTION, "id": 99}], "meta": {"total": 1}})

    assert preparer.page(other, 8).ids == [99]  # the run's own: the helper is gone
    assert not helper.alive


def counted_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the pages the helper process prepared (answered, not failed)."""
    calls: list[int] = []
    call = Helper.call

    def counting(self: Helper, content: bytes, image_id: int, *args: Any) -> Any:
        answer = call(self, content, image_id, *args)
        calls.append(image_id)
        return answer

    monkeypatch.setattr(Helper, "call", counting)
    return calls


def test_a_token_behind_any_json_escape_is_redacted_and_never_prepared(
    api: FakeApi, database_url: str, engine: Engine
) -> None:
    token = "dop_v1/secret/0123456789abcdef"  # a token may hold "/", which JSON may escape
    api.token = token
    image = next(iter(api.world.actions))
    spelled = token.replace("/", "\\/")
    body = '{"actions": [{"id": 1, "type": "' + spelled + '"}], "meta": {"total": 1}}'
    api.faults.append(Fault("raw", 200, path=f"/v2/images/{image}/actions", body=body.encode()))

    run = sync(api, database_url, token=token, images=(image,))

    assert run.outcome == "succeeded"
    stored = read_rows(engine)
    assert [row["type"] for row in stored] == ["***"]
    assert "secret" not in json.dumps(stored, default=str)


@pytest.mark.parametrize("database_url", PREPARED_DIALECTS, indirect=True)
def test_a_full_sync_stores_the_same_with_the_helper_as_without_prepared_pages(
    api: FakeApi,
    engine: Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    calls = counted_calls(monkeypatch)
    monkeypatch.setattr(preparer_module, "spare_cores", lambda: 1)  # as on this machine
    for image in api.world.actions:  # dead letters, duplicates and odd statuses too
        listed = api.world.actions[image]
        listed[3]["started_at"] = "yesterday"
        listed[4]["status"] = "pending"
        listed[30]["region"] = {"slug": ["not", "text"]}
        listed.insert(6, dict(listed[7]))

    helped = sync(api, database_url)
    assert len(calls) == helped.requests  # every page was prepared by the helper
    (tmp_path / "other").mkdir()
    dialect = {"mysql": "mariadb"}.get(engine.dialect.name, engine.dialect.name)
    with fresh_database(dialect, tmp_path / "other") as other_url:
        other = migrated_engine(other_url)
        monkeypatch.setattr(_Run, "preparer", lambda _run: None)  # dicts and split_page
        alone = sync(api, other_url)
        assert len(calls) == helped.requests  # none since
        assert without_bookkeeping(read_rows(other)) == without_bookkeeping(read_rows(engine))
        assert dead_letters(other) == dead_letters(engine)
        other.dispose()
    assert (helped.counts, helped.rejected) == (alone.counts, alone.rejected)
    assert helped.rejected == 6
    odd = [image.unknown_statuses for image in helped.images]
    assert odd == [image.unknown_statuses for image in alone.images] == [1, 1, 1]


def dead_letters(engine: Engine) -> list[tuple[Any, ...]]:
    rows = read_rows(engine, rejected_actions)
    return sorted((r["image_id"], r["action_id"], r["reason"], r["payload"]) for r in rows)


@pytest.mark.parametrize("database_url", PREPARED_DIALECTS, indirect=True)
def test_a_helper_killed_mid_run_loses_nothing(
    api: FakeApi, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preparer_module, "spare_cores", lambda: 1)
    killed: list[int] = []

    def kill_once(_image: Any) -> None:
        helper = shared_helper()
        if not killed and helper is not None:
            killed.append(helper._process.pid)
            os.kill(helper._process.pid, 9)

    settings = settings_for(api, database_url)
    run = run_sync(settings, sleep=RecordingSleep(), on_page=kill_once)

    assert killed
    assert run.outcome == "succeeded"
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
