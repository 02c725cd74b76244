"""Checks of a run's inputs cheap enough to make before anything starts.

``microscale run`` calls :func:`check_run_inputs` before it starts Prefect or a Dask
cluster, so a wrong path or an archive without a single image is reported in a second,
in one line, rather than after the pipeline has run. The ``ingest`` flow raises the same
:class:`~microscale.errors.NoImagesError` (:func:`no_images_message`) when, after reading,
no image could be used, so a deployment run says the same thing in the Prefect UI.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     _ = (Path(tmp) / "notes.txt").write_text("hi")
...     try:
...         check_run_inputs(tmp, Path(tmp) / "store")
...     except NoImagesError as exc:
...         print(str(exc).replace(tmp, "ARCHIVE").split(";")[0])
no images found in ARCHIVE (1 file: 1 skipped, not an image)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from microscale import io
from microscale.errors import NoImagesError, StoreNotADirectoryError

__all__ = ["check_run_inputs", "no_images_message"]

_FORMATS = "TIFF, PNG, JPEG, BMP and DM3/DM4 files, recognised by their content"


def no_images_message(
    archive: str | os.PathLike[str], reasons: Mapping[tuple[str, str], int]
) -> str:
    """The one line that says an archive gave no image, and what its files were.

    Parameters
    ----------
    archive : path
        The archive folder.
    reasons : mapping
        ``(status, kind) -> number of files`` (:meth:`microscale.ingest.IngestReport.reasons`).

    Returns
    -------
    message : str
        ``"no images found in x/a (1 file: 1 skipped, not an image); ..."``.
    """
    parts = "; ".join(f"{n} {status}, {kind}" for (status, kind), n in sorted(reasons.items()))
    n = sum(reasons.values())
    files = f"{n} file{'' if n == 1 else 's'}" + (f": {parts}" if parts else "")
    return f"no images found in {os.fspath(archive)} ({files}); microscale reads {_FORMATS}"


def check_run_inputs(archive: str | os.PathLike[str] | None, store: str | os.PathLike[str]) -> None:
    """Raise at once if a run on ``archive`` into ``store`` cannot do anything useful.

    Reads no more than the first 20 bytes of each file, and stops at the first image.

    Parameters
    ----------
    archive : path or None
        The folder of micrographs; None checks only ``store``.
    store : path
        The store folder (it need not exist yet).

    Raises
    ------
    FileNotFoundError
        If ``archive`` does not exist.
    NotADirectoryError
        If ``archive`` is a file (:class:`StoreNotADirectoryError` if ``store`` is).
    NoImagesError
        If no file under ``archive`` is an image by content.
    """
    store_path = Path(store)
    if store_path.exists() and not store_path.is_dir():
        raise StoreNotADirectoryError(
            f"the store {os.fspath(store_path)} is a file, not a folder; pass --store a new or "
            "existing store folder"
        )
    if archive is None:
        return
    left_out: list[tuple[Path, str]] = []
    files = io.discover(archive, skipped=left_out)  # FileNotFoundError, NotADirectoryError
    reasons: dict[tuple[str, str], int] = {}
    if left_out:
        reasons["skipped", "not a regular file"] = len(left_out)
    for path in files:
        try:
            if io.sniff_format(path) is not None:
                return
        except OSError:
            reasons["failed", "unreadable"] = reasons.get(("failed", "unreadable"), 0) + 1
            continue
        reasons["skipped", "not an image"] = reasons.get(("skipped", "not an image"), 0) + 1
    raise NoImagesError(no_images_message(archive, reasons))
