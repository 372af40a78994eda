"""Run a sync against the built-in fake API and show what landed; no token needed."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from etl.config import Settings
from etl.fake import FakeApi, World
from etl.ops.summary import format_image, format_run, log_error
from etl.ops.tables import format_table
from etl.store.database import open_engine
from etl.store.schema import image_actions
from etl.sync.results import RunResult
from etl.sync.run import run_sync

EXAMPLE_COLUMNS = ("id", "image_id", "type", "status", "region_slug", "started_at")
EXAMPLE_ROWS = 5


def run_demo(*, database_url: str, images: int, actions_per_image: int) -> RunResult:
    """Serve a generated world on 127.0.0.1, sync it into ``database_url``, print a sample."""
    # Two actions on droplets and volumes for each image action: what the account feed lists.
    world = World.generate(images=images, actions_per_image=actions_per_image, others_per_action=2)
    with FakeApi(world, token=secrets.token_urlsafe(16)) as api:
        print(f"demo API serving {images} images x {actions_per_image} actions at {api.url}")
        settings = Settings(
            database_url=database_url,
            api_url=api.url,
            images=tuple(world.images),
            token=api.token,
        )
        run = run_sync(settings, on_image=lambda image: print(format_image(image)))
    log_error(run)  # as sync says it: the total line alone does not say why
    print(format_run(run))
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            columns = [image_actions.c[name] for name in EXAMPLE_COLUMNS]
            rows = conn.execute(
                select(*columns).order_by(image_actions.c.id.desc()).limit(EXAMPLE_ROWS)
            ).all()
    finally:
        engine.dispose()
    print(f"\nnewest {EXAMPLE_ROWS} rows of image_actions in {database_url}:")
    print(format_table(rows, EXAMPLE_COLUMNS))
    return run
