"""The progress line: images done of the total and an ETA, driven with a fake stream and clock."""

from __future__ import annotations

import io

import pytest

from etl.fake import FakeApi
from etl.ops.progress import Progress, format_eta
from etl.store.load import UpsertCounts
from etl.sync.results import ImageResult
from etl.sync.run import run_sync
from tests.support.runs import settings_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(stream: io.StringIO) -> list[str]:
    """Return each drawn line as it showed, without the padding that blanks the last one."""
    return [part.rstrip() for part in stream.getvalue().split("\r") if part.strip()]


def test_progress_shows_images_done_of_the_total_and_an_eta() -> None:
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(stream, enabled=True, clock=clock)
    image = ImageResult(7, pages=2, total=45, counts=UpsertCounts(inserted=40, updated=1))

    clock.now = 1005.0
    progress.plan(4)  # the ETA counts from the plan, not from construction
    progress.page(image)
    clock.now = 1015.0
    progress.image(image)
    clock.now = 1017.0
    progress.page(image)  # 12 s for 1 image: 3 more take 36 s
    progress.image(image)
    progress.image(image)
    clock.now = 1035.0
    progress.page(image)  # 30 s for 3 images: 1 more takes 10 s
    progress.image(image)
    progress.page(image)  # all done: no ETA
    progress.close()

    assert lines(stream) == [
        "images done 0 of 4 | image 7: page 2 of meta.total 45, 40 new, 1 changed",
        "images done 1 of 4, ETA 36s | image 7: page 2 of meta.total 45, 40 new, 1 changed",
        "images done 3 of 4, ETA 10s | image 7: page 2 of meta.total 45, 40 new, 1 changed",
        "images done 4 of 4 | image 7: page 2 of meta.total 45, 40 new, 1 changed",
    ]
    assert stream.getvalue().endswith("\r")  # the line is cleared at the end


def test_progress_without_a_plan_shows_no_total() -> None:
    stream = io.StringIO()
    progress = Progress(stream, enabled=True, clock=FakeClock())

    progress.page(ImageResult(7, pages=1))

    assert lines(stream) == ["images done 0 | image 7: page 1, 0 new, 0 changed"]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (185, "3m05s"), (3600, "1h00m"), (7620, "2h07m")],
)
def test_format_eta(seconds: float, shown: str) -> None:
    assert format_eta(seconds) == shown


@pytest.mark.parametrize("all_images", [False, True], ids=["images", "all-images"])
def test_a_run_tells_progress_how_many_images_it_planned(
    api: FakeApi, database_url: str, all_images: bool
) -> None:
    api.world.images.popitem()  # --all-images plans what the account lists: 2 of the 3
    terminal = io.StringIO()
    progress = Progress(terminal, enabled=True)
    planned: list[int] = []

    def on_plan(images: int) -> None:
        planned.append(images)
        progress.plan(images)

    settings = (
        settings_for(api, database_url, all_images=True, images=())
        if all_images
        else settings_for(api, database_url)
    )
    run_sync(
        settings,
        on_plan=on_plan,
        on_page=progress.page,
        on_image=progress.image,
        sleep=lambda _s: None,
    )

    expected = 2 if all_images else 3
    assert planned == [expected]
    assert f"images done 0 of {expected} | image" in terminal.getvalue()
