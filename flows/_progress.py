"""Keyed Prefect artifacts: live progress per stage, tables of outcomes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)


def progress(key: str, description: str) -> Callable[[int, int], None]:
    """A callback ``on_done(done, total)`` that keeps a progress artifact up to date."""
    artifact_id = create_progress_artifact(progress=0.0, key=key, description=description)
    last = [-1.0]

    def on_done(done: int, total: int) -> None:
        pct = 100.0 if total == 0 else round(100.0 * done / total, 1)
        if pct != last[0]:
            update_progress_artifact(artifact_id=artifact_id, progress=pct)
            last[0] = pct

    return on_done


def table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A table artifact (rows of equal keys)."""
    create_table_artifact(table=rows, key=key, description=description)


def markdown(key: str, text: str, description: str) -> None:
    """A markdown artifact."""
    create_markdown_artifact(markdown=text, key=key, description=description)
