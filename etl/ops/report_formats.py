"""Render report sections: a table for people; JSON, NDJSON and CSV for programs."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from etl.errors import EtlError
from etl.ops.jsonout import json_default
from etl.ops.report import Section
from etl.ops.tables import format_table


def render_table(sections: list[Section]) -> str:
    """Return the sections as aligned plain-text tables."""
    blocks = [
        f"{section.name}:\n{format_table(_for_people(section), section.columns)}"
        + ("" if section.rows else "\n(none)")
        for section in sections
    ]
    return "\n\n".join(blocks) + "\n"


def _for_people(section: Section) -> list[list[Any]]:
    return [
        [
            section.blank if value is None else value.isoformat() if isinstance(value, datetime)
            else value
            for value in row
        ]
        for row in section.rows
    ]  # fmt: skip


def _records(section: Section) -> list[dict[str, Any]]:
    return [dict(zip(section.columns, row, strict=True)) for row in section.rows]


def render_json(sections: list[Section]) -> str:
    """Return the sections as one JSON object of lists of records; missing values are null."""
    document = {section.name: _records(section) for section in sections}
    return json.dumps(document, indent=2, default=json_default) + "\n"


def render_ndjson(sections: list[Section]) -> str:
    """Return one JSON object per line naming its ``section``, for log and warehouse loaders."""
    return "".join(
        json.dumps({"section": section.name, **record}, default=json_default) + "\n"
        for section in sections
        for record in _records(section)
    )


def render_csv(section: Section) -> str:
    """Return one section as a CSV table under a header; a missing value is an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(section.columns)
    writer.writerows(
        ["" if value is None else _spelled(value) for value in row] for row in section.rows
    )
    return out.getvalue()


def _spelled(value: Any) -> Any:
    return json_default(value) if isinstance(value, datetime) else value


def write_csv_files(sections: list[Section], folder: str) -> list[tuple[Path, int]]:
    """Write ``<section>.csv`` per section into ``folder`` (made if missing); return them.

    Raises:
        EtlError: the folder cannot be made or a file cannot be written.
    """
    written = []
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for section in sections:
            path = Path(folder) / f"{section.name}.csv"
            path.write_text(render_csv(section), encoding="utf-8")
            written.append((path, len(section.rows)))
    except OSError as exc:
        raise EtlError(
            f"--output-dir {folder} cannot be written ({exc.strerror}); choose a folder you "
            "may write to"
        ) from exc
    return written
