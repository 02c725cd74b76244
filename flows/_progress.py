"""Keyed Prefect artifacts: live progress per stage, tables of outcomes, links.

Every key ends with a short hash of the store's absolute path (:func:`artifact_key`), so
the history of a key in the UI belongs to one store, never to runs on other archives.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from microscale.progress import StageProgress

#: Seconds between two updates of a progress artifact whose percentage has not moved.
UPDATE_EVERY_S = 2.0
#: Least seconds between two updates of a progress artifact (the last one, at 100 %, goes
#: at once): a stage whose count moves within its tasks reports a few times a second.
MIN_UPDATE_S = 0.5


def store_tag(store: str | os.PathLike[str]) -> str:
    """Eight hex digits of the sha256 of the store's absolute path."""
    path = os.fspath(Path(store).expanduser().absolute())
    return hashlib.sha256(path.encode()).hexdigest()[:8]


def artifact_key(name: str, store: str | os.PathLike[str]) -> str:
    """``"<name>-<store tag>"``: a key whose history is that of one store."""
    return f"{name}-{store_tag(store)}"


def progress(
    name: str, store: str | os.PathLike[str], *, stage: str, unit: str
) -> Callable[[int, int], None]:
    """A callback ``on_done(done, total)`` that keeps a progress artifact up to date.

    Its description reads ``"<stage>: 12/40 files, 3 s elapsed, about 9 s left"``; the
    same line goes to the ``microscale.progress`` logger (:mod:`microscale.progress`) at
    every call. The artifact is updated when its percentage moved (at most every
    :data:`MIN_UPDATE_S` seconds, so that the Prefect API is not flooded), when
    :data:`UPDATE_EVERY_S` seconds passed since the last update (the time left), and
    always at the end.
    """
    tracker = StageProgress(stage, unit)
    artifact_id = create_progress_artifact(
        progress=0.0, key=artifact_key(name, store), description=f"{stage}: waiting to start"
    )
    last = {"pct": -1.0, "at": 0.0}

    def on_done(done: int, total: int) -> None:
        line = tracker.update(done, total)
        pct = 100.0 if total == 0 else round(100.0 * done / total, 1)
        now = time.monotonic()
        since = now - last["at"]
        moved = pct != last["pct"] and since >= MIN_UPDATE_S
        if done >= total or moved or since >= UPDATE_EVERY_S:
            update_progress_artifact(
                artifact_id=artifact_id, progress=pct, description=f"{stage}: {line}"
            )
            last.update(pct=pct, at=now)

    return on_done


def table(
    name: str, store: str | os.PathLike[str], rows: list[dict[str, Any]], description: str
) -> None:
    """A table artifact (rows of equal keys)."""
    create_table_artifact(table=rows, key=artifact_key(name, store), description=description)


def markdown(name: str, store: str | os.PathLike[str], text: str, description: str) -> None:
    """A markdown artifact."""
    create_markdown_artifact(markdown=text, key=artifact_key(name, store), description=description)


def link(name: str, store: str | os.PathLike[str], url: str, text: str, description: str) -> None:
    """A link artifact."""
    create_link_artifact(
        link=url, link_text=text, key=artifact_key(name, store), description=description
    )
