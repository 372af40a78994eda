"""Rows in the driver's form: a PostgreSQL COPY line stores what COPYing its values stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete

from etl.errors import TransformError
from etl.model import hash_payload
from etl.ready import (
    FORMS,
    LINE,
    copy_line,
    is_line,
    naive_stamp,
    naive_text,
    owned_by,
    ready_action,
    ready_values,
    zoned_stamp,
)
from etl.source.transform import flatten_action, parse_timestamp
from etl.store.database import open_engine
from etl.store.load import UpsertCounts, read_stored, upsert_actions, write_rows
from etl.store.schema import image_actions
from tests.support.databases import fresh_database, migrated_engine
from tests.support.rows import ready_row
from tests.test_hostile import ACTIONS, TIMES
from tests.test_load import T1, action, raw_table

# Text COPY must escape, and text that only looks escaped; no NUL (no PostgreSQL text holds
# one) and no lone surrogate (no UTF-8 does: such a row stays a tuple, see ready_action).
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
) | st.sampled_from(["", "\\N", "\\", "\\\\t", "a\tb\nc\rd\\e\bf\vg\fh", "ünïcødé ✓ 😀"])


def hostile_action(action_id: int, texts: list[str], available: bool | None) -> dict[str, Any]:
    """Return an action whose every text column and JSON column holds one of ``texts``."""
    region = {"slug": texts[0], "name": texts[1], "features": texts[2:4], "sizes": [texts[4]]}
    return action(
        action_id,
        type=texts[5],
        resource_type=texts[6],
        note=texts[7],
        **{f"x{texts[8]}": texts[9]},
        region={**region, "available": available},
    )


HOSTILE = st.builds(
    hostile_action,
    st.integers(1, 2**63 - 1),
    st.lists(TEXT, min_size=10, max_size=10),
    st.sampled_from([True, False, None]),
)


# Timestamps in the API's own shape, 'YYYY-MM-DDTHH:MM:SSZ', fields in range or not, and
# texts of its length with its separators or others.
API_SHAPED = st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z".format,
    st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32),
    st.integers(0, 25), st.integers(0, 61), st.integers(0, 61),
) | st.text("0123456789-:TZW.+ ", min_size=20, max_size=20)  # fmt: skip


def made_or_refused(make: Any, value: Any) -> Any:
    """Return what ``make`` makes of ``value``, or the reason it refuses it."""
    try:
        return make(value)
    except TransformError as exc:
        return f"refused: {exc}"


@settings(max_examples=500, deadline=None)
@given(value=API_SHAPED | st.none() | st.integers())
@example("2026-01-05T10:14:00Z")
@example("0001-01-01T00:00:00Z")
@example("2026-02-29T10:14:00Z")  # no such day
@example("2026-01-05T24:00:00Z")  # midnight, to a Python that reads it so
@example("2026-01-05T101400.5Z")  # a fraction, in ISO's basic form
@example("2026-W01-1T10:14:00Z")  # a week date
def test_a_timestamp_in_the_api_s_shape_is_cut_to_the_text_formatting_it_would_give(
    value: Any,
) -> None:
    expected = made_or_refused(lambda v: naive_stamp(parse_timestamp(v, "started_at")), value)

    assert made_or_refused(lambda v: naive_text(v, "started_at"), value) == expected


# Actions that transform, with every timestamp in any form, and hostile ones.
TIMED = st.builds(
    lambda action_id, started, completed: action(
        action_id, started_at=started, completed_at=completed
    ),
    st.integers(1, 2**63 - 1),
    API_SHAPED | TIMES,
    API_SHAPED | TIMES | st.none(),
)


@settings(max_examples=300, deadline=None)
@given(raw=TIMED | HOSTILE | ACTIONS, form=st.sampled_from(FORMS))
@example(raw=action(1, region={"features": ["\ud800"]}), form="naive")  # no JSON list
@example(raw=action(1, status=7, region={"sizes": "all"}), form="copy")  # the first reason
def test_an_action_made_ready_in_one_pass_is_its_transformed_row_made_ready(
    raw: dict[str, Any], form: str
) -> None:
    def transformed(raw: dict[str, Any]) -> tuple[Any, Any]:
        row = flatten_action(raw, image_id=7)
        return row["status"], ready_row(row, form)

    def in_one_pass(raw: dict[str, Any]) -> tuple[Any, Any]:
        return ready_action(raw, image_id=7, form=form, max_depth=None)

    assert made_or_refused(in_one_pass, raw) == made_or_refused(transformed, raw)


@settings(max_examples=200, deadline=None)
@given(raw=HOSTILE, owner=st.integers(1, 2**63 - 1))
def test_a_copy_line_taken_over_by_another_image_is_the_line_of_the_row_taken_over(
    raw: dict[str, Any], owner: int
) -> None:
    ready = ready_values(flatten_action(raw, image_id=7), zoned_stamp)
    line = copy_line(ready)

    assert is_line(line)
    assert not is_line(ready)
    assert owned_by(line, owner) == copy_line(owned_by(ready, owner))
    assert owned_by(line, owner)[-1] == hash_payload(ready[13].encode(), owner)


def copy_text(value: Any) -> str:
    """COPY's text format of one value, as PostgreSQL's docs spell it."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    escapes = {
        "\\": "\\\\",
        "\b": "\\b",
        "\t": "\\t",
        "\n": "\\n",
        "\v": "\\v",
        "\f": "\\f",
        "\r": "\\r",
    }
    return "".join(escapes.get(character, character) for character in str(value))


@example([*["x"] * 7, "a\nb", *["y"] * 7])  # alone, beside no tab or backslash
@example([*["x"] * 7, "a\rb", *["y"] * 7])  # alone, beside no tab or backslash
@example([*["x"] * 7, "a\bb", *["y"] * 7])  # alone, beside no tab or backslash
@example([*["x"] * 7, "a\vb", *["y"] * 7])  # alone, beside no tab or backslash
@example([*["x"] * 7, "a\fb", *["y"] * 7])  # alone, beside no tab or backslash
@example([*["x"] * 7, "a\tb", *["y"] * 7])  # alone, beside no tab or backslash
@example([*["x"] * 7, "a\\b", *["y"] * 7])  # alone, beside no tab or backslash
@settings(max_examples=300)
@given(
    st.lists(
        TEXT | st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1),
        min_size=15,
        max_size=15,
    )
)
def test_a_copy_line_escapes_each_value_as_copy_reads_it(values: list[Any]) -> None:
    ready = tuple(values)

    line = copy_line(ready)[LINE]

    assert line == "\t".join(copy_text(value) for value in ready).encode()


def test_a_row_no_copy_line_can_spell_stays_a_tuple() -> None:
    # Transform rejects an action holding a lone surrogate; a row holding one is made here.
    row = {**flatten_action(action(1), image_id=7), "type": "lone \udc80 surrogate"}

    assert ready_row(row, "copy") == ready_values(row, zoned_stamp)  # type: ignore[arg-type]
    assert is_line(ready_row(flatten_action(action(1), image_id=7), "copy"))


@pytest.fixture(scope="module")
def postgresql(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with fresh_database("postgresql", tmp_path_factory.mktemp("copy")) as url:
        engine = migrated_engine(url)
        yield engine
        engine.dispose()


def stored_both_ways(
    engine: Engine, rows: list[tuple[Any, ...]], reader: Engine | None = None
) -> tuple[list[Any], list[Any]]:
    """Return the table after writing ``rows`` as COPY lines, then as values COPY formats.

    Each way both staged and upserted, and copied straight in as new: the two tables agree.
    """
    tables = []
    for form in (copy_line, lambda ready: ready):
        for new in (False, True):
            with engine.begin() as conn:
                conn.execute(delete(image_actions))
                write_rows(conn, [form(ready) for ready in rows], now=T1, new=new)
            tables.append(raw_table(reader or engine))
    assert (tables[0], tables[2]) == (tables[1], tables[3])
    return tables[0], tables[2]


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(raws=st.lists(HOSTILE, min_size=1, max_size=3, unique_by=lambda raw: raw["id"]))
def test_a_page_copied_as_lines_stores_what_copying_its_values_stores(
    postgresql: Engine, raws: list[dict[str, Any]]
) -> None:
    rows = [ready_values(flatten_action(raw, image_id=7), zoned_stamp) for raw in raws]

    as_lines, as_values = stored_both_ways(postgresql, rows)

    assert as_lines == as_values
    assert [row[14] for row in as_lines] == [r[-1] for r in sorted(rows)]


@pytest.mark.slow
def test_lines_and_tuples_in_one_page_are_all_stored(postgresql: Engine) -> None:
    rows = [ready_values(flatten_action(action(i), image_id=7), zoned_stamp) for i in (1, 2, 3)]
    with postgresql.begin() as conn:
        conn.execute(delete(image_actions))
        write_rows(conn, [copy_line(rows[0]), rows[1], copy_line(rows[2])], now=T1)
    mixed = raw_table(postgresql)

    assert mixed == stored_both_ways(postgresql, rows)[1]
    assert [row[0] for row in mixed] == [1, 2, 3]


@pytest.mark.slow
def test_an_action_stored_under_another_image_keeps_it_as_a_copy_line(
    postgresql: Engine,
) -> None:
    first = ready_row(flatten_action(action(5), image_id=7), "copy")
    with postgresql.begin() as conn:
        conn.execute(delete(image_actions))
        upsert_actions(conn, [first], now=T1)
    listed_again = ready_row(flatten_action(action(5, status="errored"), image_id=9), "copy")

    with postgresql.begin() as conn:
        counts = upsert_actions(conn, [listed_again], now=T1)
        stored = read_stored(conn, [5])

    assert counts == UpsertCounts(updated=1, elsewhere=1)
    assert stored[5].image_id == 7
    assert stored[5].content_hash == owned_by(listed_again, 7)[-1] != listed_again[-1]
    assert b"\terrored\t" in owned_by(listed_again, 7)[LINE]


@pytest.mark.slow
def test_lines_reach_a_client_encoding_other_than_utf8_as_its_text(postgresql: Engine) -> None:
    url = postgresql.url.update_query_dict({"client_encoding": "latin1"})
    latin1 = open_engine(url.render_as_string(hide_password=False))
    raw = action(6, type="café", note="naïve")
    rows = [ready_values(flatten_action(raw, image_id=7), zoned_stamp)]
    try:
        as_lines, as_values = stored_both_ways(latin1, rows, reader=postgresql)
        outside = copy_line(
            ready_values(flatten_action(action(7, type="✓"), image_id=7), zoned_stamp)
        )
        with pytest.raises(UnicodeEncodeError), latin1.begin() as conn:  # never stored garbled
            write_rows(conn, [outside], now=T1)
    finally:
        latin1.dispose()

    assert as_lines == as_values
    assert (as_lines[0][3], as_lines[0][13]["note"]) == ("café", "naïve")
