"""The Alembic history: one head, base to head, schema module equals head, down and up."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from etl.errors import DatabaseError
from etl.store import schema
from etl.store.database import open_engine
from etl.store.migrate import alembic_config, head_revision, migrations_dir, upgrade
from etl.store.revision import HEAD_REVISION, current_revision, revision_of

LISTED = "ix_image_actions_listed"


def schema_diff(engine: Engine) -> list:
    with engine.connect() as conn:
        dialect = engine.dialect.name

        def created_here(item: object, name: str | None, kind: str, *_: object) -> bool:
            """Leave out what the schema module creates on other dialects only."""
            return not (kind == "index" and dialect in schema.NO_LISTED_INDEX and name == LISTED)

        opts = {"compare_type": True, "include_object": created_here}
        context = MigrationContext.configure(conn, opts=opts)
        return compare_metadata(context, schema.metadata)


def test_history_has_a_single_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def test_the_revision_a_sync_expects_is_alembic_s_head() -> None:
    """A sync checks the schema against HEAD_REVISION without loading Alembic: keep it true."""
    assert head_revision() == HEAD_REVISION


def test_the_revision_read_without_alembic_is_alembic_s(engine: Engine) -> None:
    with engine.connect() as conn:
        assert current_revision(engine) == MigrationContext.configure(conn).get_current_revision()
        conn.execute(text("DELETE FROM alembic_version"))
        assert revision_of(conn) is None  # a version table that records nothing
        conn.execute(text("INSERT INTO alembic_version VALUES ('0004'), ('0005')"))
        with pytest.raises(DatabaseError, match="several schema revisions"):
            revision_of(conn)
        conn.rollback()


def test_upgrade_base_to_head_creates_every_table(database_url: str) -> None:
    engine = open_engine(database_url)
    assert current_revision(engine) is None

    upgrade(engine)

    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) >= set(schema.metadata.tables)
    engine.dispose()


def test_schema_module_equals_head(engine: Engine) -> None:
    assert schema_diff(engine) == []


def test_downgrade_to_base_and_back_up(engine: Engine) -> None:
    config = alembic_config()
    scripts = ScriptDirectory.from_config(config)
    revisions = [script.revision for script in scripts.walk_revisions()]  # head first
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        from alembic import command

        for target in [*revisions[1:], "base"]:
            command.downgrade(config, target)
    assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set()
    assert current_revision(engine) is None

    upgrade(engine)

    assert current_revision(engine) == head_revision()
    assert schema_diff(engine) == []


@pytest.mark.slow
def test_alembic_revision_writes_a_numbered_typed_file(tmp_path: Path) -> None:
    shutil.copytree(migrations_dir(), tmp_path / "migrations")
    shutil.copy(Path(__file__).parents[1] / "pyproject.toml", tmp_path)
    env = {**os.environ, "DO_IMAGE_ACTIONS_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    following = f"{int(head_revision()) + 1:04d}"

    subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "revision", "-m", "add a thing"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )

    text = (tmp_path / "migrations" / "versions" / f"{following}_add_a_thing.py").read_text()
    assert f"revision: str = '{following}'" in text
    assert f"down_revision: str | None = '{head_revision()}'" in text
    assert text.startswith('"""add a thing\n')
