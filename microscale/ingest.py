r"""Ingest an archive folder into a store: discover, decode, normalise, tile, record.

Every discovered file ends with one outcome in the store's manifest, and the counts add up
(``processed + skipped + failed == discovered``):

- ``processed``: decoded and tiled; or already in the store (a re-run, or the same content
  under another name: files are identified by their sha256, computed once, and every path
  is recorded under that content);
- ``skipped``: not an image (decided by content sniffing, never by the extension), or an
  image with no texture (constant, or no finite pixel) or too small for one tile; or not a
  regular file: symbolic links (never followed, so nothing outside the archive is read;
  a loop cannot hang the walk), FIFOs, sockets and device files (never opened). A hard
  link is a regular file whose content is by definition that of a file in the archive; it
  is read like any other (and is a duplicate of its other names);
- ``failed``: an image that could not be decoded (truncated, corrupt, too many pixels),
  with the decoder's reason; kind ``"bomb"`` for a decompression bomb (TIFF tiles or strips
  that share bytes, or a page that stores far less than it declares: :mod:`microscale.io`).

Pixel and tile budget
---------------------
Before a page is decoded, its header is checked (:func:`microscale.io.page_shape`: TIFF tiles
that share bytes, pages above ``max_pixels`` that cannot be streamed, tiled pages that store
far less than they declare are ``failed``) and the tiles its declared size would make are
counted (:func:`microscale.io.count_tiles`). A page that would make more than
``max_tiles_per_image`` tiles is ``skipped`` (kind ``"too large"``), whatever its bytes,
with the declared pixels, the tiles and the cap in its reason; the cap is checked again
after resampling. The default, :data:`MAX_TILES_PER_IMAGE` = 1600, keeps one image within
about 1% of a run of 10^4 images: such a run of 1024 x 1024 micrographs cut into 256-pixel
tiles holds 16 tiles an image, 1.6 x 10^5 in all, and 1% of that is 1600 tiles (a 10240 x
10240 image, or a 2-D montage of 10 x 10 such frames). Raise it to map larger images; with
smaller tiles, scale it by the square of the ratio (6400 at 128 pixels).

A file keeps the outcome of the run that first recorded it while its content and outcome
stay the same: a re-run finds it as "same content as an image already stored" and records
only when it was last seen (``last_seen``, the UTC start of that run's ingest, ISO 8601).
A file whose content or outcome changed is recorded anew.

Paths are recorded relative to the archive, with ``/`` separators. A name that is not
valid UTF-8 (raw bytes on Linux) is recorded with its undecodable bytes written as
``\xNN`` escapes (``os.fsencode(name).decode("utf-8", "backslashreplace")``), so every
recorded path is a valid string. Processed files also record the ``channel_policy`` of
their first page (:mod:`microscale.io`: what was done with colour, alpha, palette or
extra channels).

One bad file never stops the others. Each image is committed to the store on its own, so a
crash loses at most the file being read.

Per image, in order: NaN and infinite pixels of a floating-point image are replaced by the
median of its finite pixels (an image with no finite pixel is skipped); the SEM information
bar is cropped (``crop_bottom`` rows; with ``crop_bottom="auto"``, the bar the vendor's
header declares, else the one found in the pixels: :func:`microscale.io.info_bar`), and the
crop is recorded per image in the store (``crop_rows``: top and bottom rows, and
``crop_source``: ``"fei-metadata"``, ``"tescan-metadata"``, ``"hitachi-metadata"``,
``"jeol-metadata"``, ``"detected"``, ``"user"`` or ``"none"``); the image is resampled to
``pixel_size_nm`` when that is set and the file has a calibration; intensities are mapped
to [0, 1] per image (``normalize``, docs/method.md section 1: so that all tiles of an image
share its contrast);
then it is tiled (:func:`microscale.io.tile`). A multi-page file contributes one image per
page, with identity ``sha256#p<page>``.

Streamed pages
--------------
``max_pixels`` bounds what is decoded at once. A tiled TIFF page above it that is genuine
(not a decompression bomb: :mod:`microscale.io`, "Pixel budget and streamed pages") is
ingested from bands of full-width rows of at most ``max_pixels`` pixels, never whole:

1. statistics pass over bands: exact minimum and maximum of the finite pixels and the count
   of non-finite ones; then, when needed (``normalize="percentile"``, or NaN/inf pixels), a
   histogram pass: integer data whose range spans at most ``HISTOGRAM_BINS`` (65536)
   values are counted per value, so their percentiles are exactly ``np.percentile``'s
   (linear interpolation between order statistics); other data are counted in
   ``HISTOGRAM_BINS`` equal bins between min and max, order statistics being interpolated
   uniformly within their bin (error below one bin, ``(max - min) / 65536``). The finite
   median that replaces NaN/inf pixels is approximated the same way, and those pixels are
   counted at it for the percentiles;
2. output pass: the rows of consecutive tile rows of the grid that :func:`io.tile` would
   use on the whole image are read as one band (as many tile rows as fit in
   ``max_pixels // width`` rows; overlapping tile rows with ``stride < tile_size`` read
   their shared rows again), normalised with the statistics of pass 1 by the same
   arithmetic as :func:`normalize_intensity` and cut into tiles. The tiles, origins and
   weights are exactly those of the whole-image path (for ``minmax`` and ``dtype``
   bit-identical; for ``percentile`` too when the histogram is exact).

A streamed page needs ``tile_size * width <= max_pixels`` (else it fails ``too large``).
Cropping the information bar and resampling are not supported for streamed pages: they
are skipped, and the outcome's reason says so. The page's tiles (float32, at least four
bytes a pixel) are still held in memory until they are committed.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import stat
import time
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from microscale import io
from microscale.intensity import (
    ConstantImageError,
    Normalization,
    dtype_range,
    normalize_intensity,
)
from microscale.store import (
    READ_ATTEMPTS,
    READ_BACKOFF_S,
    TILES_STAGE,
    TRANSIENT_ERRNOS,
    Store,
    append_images,
    append_tiles,
    array_shape,
    create_store,
    image_table,
    open_store,
    read_manifest,
    record_files,
    record_tile_chunks,
    tile_chunks,
    verify_records,
    write_block,
)

if TYPE_CHECKING:
    import distributed

__all__ = [
    "MAX_TILES_PER_IMAGE",
    "STORE_PARAMS",
    "IngestReport",
    "PreparedFile",
    "PreparedPage",
    "ingest_archive",
    "ledger_entry",
    "prepare_file",
    "prepare_files",
    "prepare_page",
    "rebuild_tiles",
    "with_retries",
]

log = logging.getLogger(__name__)

#: Bins of the histogram behind the percentiles and median of streamed pages.
HISTOGRAM_BINS = 65536

STORE_PARAMS = ("tile_size", "stride", "min_fraction", "normalize", "pixel_size_nm", "crop_bottom")

#: Default most tiles one image may make: 1% of a run of 10^4 images of 1024 x 1024 pixels
#: cut into 256-pixel tiles (16 tiles each): see the module docstring.
MAX_TILES_PER_IMAGE = 1600


@dataclass
class IngestReport:
    """What an ingest run did.

    Attributes
    ----------
    outcomes : dict
        Relative path -> {"status", "kind", "reason", "image_id", "last_seen"} for every
        entry found now (links, FIFOs and devices included, as skipped): the file's first
        recorded outcome while it is unchanged (see the module docstring); processed
        images also carry ``"channel_policy"``.
    new_images, new_tiles : int
        Images and tiles added by this run.
    n_images, n_tiles : int
        Totals in the store afterwards.
    """

    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_images: int = 0
    new_tiles: int = 0
    n_images: int = 0
    n_tiles: int = 0

    def counts(self) -> dict[str, int]:
        """Files by status; they add up to the number discovered."""
        out = {"processed": 0, "skipped": 0, "failed": 0}
        for outcome in self.outcomes.values():
            out[outcome["status"]] += 1
        return out

    def reasons(self) -> dict[tuple[str, str], int]:
        """Files by (status, short reason)."""
        table: dict[tuple[str, str], int] = {}
        for outcome in self.outcomes.values():
            key = (outcome["status"], outcome.get("kind", ""))
            table[key] = table.get(key, 0) + 1
        return table


def _open_or_create(
    store: str | os.PathLike[str], *, params: dict[str, Any], tiles_per_chunk: int
) -> Store:
    root = Path(store)
    if (root / "store.zarr").exists():
        st = open_store(root)
        fixed = st.attrs.get("ingest", {})
        changed = {k: (fixed.get(k), v) for k, v in params.items() if fixed.get(k) != v}
        if changed:
            raise ValueError(
                f"The store {root} was made with different ingest settings "
                f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in changed.items())}). "
                "Use the same settings, or a new store."
            )
        return st
    return create_store(
        root,
        tile_size=params["tile_size"],
        tiles_per_chunk=tiles_per_chunk,
        attrs={"ingest": params},
        exist_ok=True,
    )


def ingest_archive(
    archive: str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    tile_size: int = 256,
    stride: int | None = None,
    min_fraction: float = 0.5,
    normalize: Normalization = "percentile",
    pixel_size_nm: float | None = None,
    crop_bottom: int | Literal["auto"] = "auto",
    max_pixels: int = 2**28,
    max_tiles_per_image: int | None = MAX_TILES_PER_IMAGE,
    tiles_per_chunk: int = 64,
    on_file: Callable[[int, int], None] | None = None,
    client: distributed.Client | None = None,
    files_per_task: int = 8,
) -> IngestReport:
    """Add the new images of ``archive`` to the store at ``store`` (created if absent).

    Parameters
    ----------
    archive : path
        Folder searched recursively.
    store : path
        Store directory (:mod:`microscale.store`).
    tile_size, stride, min_fraction : optional
        Tiling (:func:`microscale.io.tile`); fixed for the life of a store.
    normalize : {"percentile", "minmax", "dtype"}, optional
        Per-image intensity mapping (robust percentiles by default for real micrographs).
    pixel_size_nm : float, optional
        Resample every calibrated image to this pixel size, so that textures at different
        magnifications compare. Uncalibrated images are kept as they are (and say so).
    crop_bottom : int or "auto", optional
        Rows of SEM information bar to cut off the bottom (0: none); "auto" (default) takes
        the bar the vendor's header declares, else finds one in the pixels
        (:func:`microscale.io.info_bar`).
    max_pixels : int, optional
        Most pixels decoded at once; tiled TIFF pages above it are streamed, other images
        above it refused (decompression bombs); raise it for huge images.
    max_tiles_per_image : int or None, optional
        Skip (``"too large"``) a page that would make more tiles than this, judged from its
        declared size before decoding (module docstring, "Pixel and tile budget"); None: no
        cap.
    tiles_per_chunk : int, optional
        Zarr chunk length along the tile axis, for a new store.
    on_file : callable(done, total), optional
        Progress callback after each file.
    client : distributed.Client, optional
        Decode, normalise and tile the files on this cluster's workers (which must see
        ``archive`` at the same path), ``files_per_task`` files per task; this process
        only writes the store, in discovery order, so the store is the
        same as without a client. A file that kills the worker decoding it (a decoder
        crash: segfault, memory) is recorded ``failed`` (kind ``"worker killed"``) once
        Dask gives up on it (``distributed.scheduler.allowed-failures``); the other files
        of its task (and of tasks beside it on the dying worker, which Dask blames too) are
        retried one by one, each alone on the cluster, so only the file that kills workers
        on its own is recorded so. Without a client, files are read here, one after the
        other.
    files_per_task : int, optional
        Files per Dask task.

    Returns
    -------
    IngestReport
    """
    params = {
        "tile_size": int(tile_size),
        "stride": None if stride is None else int(stride),
        "min_fraction": float(min_fraction),
        "normalize": normalize,
        "pixel_size_nm": None if pixel_size_nm is None else float(pixel_size_nm),
        "crop_bottom": crop_bottom,
    }
    if int(files_per_task) < 1:
        raise ValueError(f"files_per_task must be at least 1, not {files_per_task!r}")
    if max_tiles_per_image is not None and int(max_tiles_per_image) < 1:
        raise ValueError(
            f"max_tiles_per_image must be at least 1 (or None), not {max_tiles_per_image!r}"
        )
    max_tiles = None if max_tiles_per_image is None else int(max_tiles_per_image)
    root = Path(archive)
    left_out: list[tuple[Path, str]] = []
    files = io.discover(root, skipped=left_out)
    st = _open_or_create(store, params=params, tiles_per_chunk=tiles_per_chunk)
    report = IngestReport()
    seen = datetime.now(UTC).isoformat(timespec="seconds")
    with st.lock():
        known = read_manifest(st)
        rebuild_tiles(st, root, known, params=params, max_pixels=max_pixels)
        ledger = known["files"]
        # Contents already done: those the manifest lists, and single-page images that a
        # crashed run committed before it could write their outcome (pages of a multi-page
        # file that was cut short are completed page by page below).
        committed = image_table(st)["image_id"] if st.n_images else []
        known_digests = {image_id.split("#")[0] for image_id in known["images"]}
        known_digests |= {str(i) for i in committed if "#" not in str(i)}
        pending: dict[str, dict[str, Any]] = {}
        for path, why in left_out:
            rel = _recorded_name(path.relative_to(root.resolve()).as_posix())
            report.outcomes[rel] = pending[rel] = ledger_entry(
                ledger.get(rel),
                _outcome("skipped", "not a regular file", f"{rel}: {why}; not read"),
                seen=seen,
            )
        if pending and not files:
            record_files(st, pending)
            pending = {}
        items = [
            (str(path), _recorded_name(path.relative_to(root.resolve()).as_posix()))
            for path in files
        ]
        if client is None:
            stream = (
                prepare_file(path, rel, params, max_pixels, known_digests, max_tiles=max_tiles)
                for path, rel in items
            )
        else:
            stream = _prepare_on_cluster(
                client,
                items,
                params,
                max_pixels,
                frozenset(known_digests),
                int(files_per_task),
                max_tiles=max_tiles,
            )
        for done, prepared in enumerate(stream, 1):
            rel = prepared.rel
            try:
                outcome = _commit_file(st, prepared, known_digests, report)
            except Exception as exc:  # one bad file never loses the others
                log.exception("unexpected error on %s", rel)
                outcome = _outcome("failed", "error", f"{type(exc).__name__}: {exc}")
            outcome = ledger_entry(ledger.get(rel), outcome, seen=seen)
            report.outcomes[rel] = outcome
            pending[rel] = outcome
            if len(pending) >= 64 or done == len(files):
                record_files(st, pending)  # images are committed already; outcomes follow
                pending = {}
            if on_file is not None:
                on_file(done, len(files))
    report.n_images, report.n_tiles = st.n_images, st.n_tiles
    return report


def _recorded_name(rel: str) -> str:
    """``rel`` as a valid string: undecodable bytes of the file name as ``\\xNN``."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(rel).decode("utf-8", "backslashreplace")
    return rel


def ledger_entry(
    previous: dict[str, Any] | None, outcome: dict[str, Any], *, seen: str
) -> dict[str, Any]:
    """What the manifest records for a file found now: its first outcome while unchanged.

    Parameters
    ----------
    previous : dict or None
        The file's entry in the manifest (:func:`microscale.store.read_manifest`), if any.
    outcome : dict
        Its outcome in this run.
    seen : str
        When this run found it (ISO 8601), recorded as ``last_seen``.

    Returns
    -------
    dict
        ``previous`` with ``last_seen`` updated when the file is as it was: the same
        outcome, or found as a duplicate of the very image it was recorded with (what a
        re-run finds for every file it already stored); else ``outcome`` with
        ``last_seen``.

    Examples
    --------
    >>> first = {"status": "processed", "kind": "image", "reason": "1 page(s)", "image_id": "ab"}
    >>> again = {"status": "processed", "kind": "duplicate", "reason": "same content as an "
    ...          "image already stored", "image_id": "ab"}
    >>> ledger_entry(first, again, seen="2025-01-02T00:00:00+00:00")["kind"]
    'image'
    """
    if previous is not None:
        core = ("status", "kind", "reason", "image_id")
        same = all(previous.get(k) == outcome.get(k) for k in core)
        rerun = (
            outcome.get("kind") == "duplicate"
            and previous.get("status") == "processed"
            and previous.get("image_id") is not None
            and previous.get("image_id") == outcome.get("image_id")
        )
        if same or rerun:
            return {**previous, "last_seen": seen}
    return {**outcome, "last_seen": seen}


def _outcome(status: str, kind: str, reason: str = "", image_id: str | None = None) -> dict:
    out: dict[str, Any] = {"status": status, "kind": kind, "reason": reason}
    if image_id is not None:
        out["image_id"] = image_id
    return out


@dataclass
class PreparedPage:
    """One page of a file, ready to append (``status == "processed"``) or with its reason."""

    image_id: str
    label: str
    status: str
    kind: str
    reason: str = ""
    decoded: bool = False
    channel_policy: Any = None
    tiles: np.ndarray | None = None
    origins: np.ndarray | None = None
    weights: np.ndarray | None = None
    pixel_size_nm: float | None = None
    crop: io.InfoBar = field(default_factory=io.InfoBar)


@dataclass
class PreparedFile:
    """What a worker made of one file: its tiles per page, or its outcome.

    ``outcome`` is set when the file ends without pages to append (not a regular file, not
    an image, undecodable, or content already known: ``digest`` then says which).
    """

    rel: str
    digest: str | None = None
    outcome: dict[str, Any] | None = None
    pages: list[PreparedPage] = field(default_factory=list)


def prepare_file(
    path: str,
    rel: str,
    params: dict[str, Any],
    max_pixels: int,
    known_digests: Set[str] = frozenset(),
    *,
    max_tiles: int | None = None,
) -> PreparedFile:
    """Sniff, hash, decode, normalise and tile every page of one file; no store access.

    Runs on a Dask worker (or in this process without a client). A file whose digest is in
    ``known_digests`` is not decoded. Pages that would make more than ``max_tiles`` tiles
    are skipped (:func:`prepare_page`). Never raises for a bad file: the reason is in the
    result.
    """
    try:
        return _prepare(Path(path), rel, params, max_pixels, known_digests, max_tiles)
    except Exception as exc:  # one bad file never loses the others
        log.exception("unexpected error on %s", rel)
        return PreparedFile(
            rel, outcome=_outcome("failed", "error", f"{type(exc).__name__}: {exc}")
        )


def prepare_files(
    items: list[tuple[str, str]],
    params: dict[str, Any],
    max_pixels: int,
    known_digests: Set[str] = frozenset(),
    *,
    max_tiles: int | None = None,
) -> list[PreparedFile]:
    """:func:`prepare_file` of each ``(path, rel)``: one Dask task."""
    return [
        prepare_file(path, rel, params, max_pixels, known_digests, max_tiles=max_tiles)
        for path, rel in items
    ]


def _prepare(
    path: Path,
    rel: str,
    params: dict[str, Any],
    max_pixels: int,
    known_digests: Set[str],
    max_tiles: int | None,
) -> PreparedFile:
    if not stat.S_ISREG(os.lstat(path).st_mode):  # replaced since discover: never opened
        return PreparedFile(
            rel,
            outcome=_outcome(
                "skipped", "not a regular file", f"{rel}: not a regular file; not read"
            ),
        )
    fmt = io.sniff_format(path)
    if fmt is None:
        return PreparedFile(
            rel,
            outcome=_outcome("skipped", "not an image", f"{rel}: not an image (content sniffing)"),
        )
    try:
        digest = with_retries(lambda: io.file_digest(path))
    except OSError as exc:  # permission denied, or an I/O error that did not go away
        return PreparedFile(rel, outcome=_outcome("failed", "unreadable", f"{rel}: {exc}"))
    if digest in known_digests:
        return PreparedFile(rel, digest=digest)  # the driver records the duplicate
    try:
        n_pages = with_retries(lambda: io.count_pages(path))
    except (OSError, io.UnsupportedFormatError, ValueError, ImportError) as exc:
        return PreparedFile(rel, digest=digest, outcome=_outcome("failed", "decode", str(exc)))
    out = PreparedFile(rel, digest=digest)
    for page in range(n_pages):
        image_id = digest if n_pages == 1 else f"{digest}#p{page}"
        label = rel if n_pages == 1 else f"{rel}#{page}"
        out.pages.append(
            prepare_page(path, label, page, image_id, params, max_pixels, max_tiles=max_tiles)
        )
    return out


def _is_transient(exc: BaseException | None) -> bool:
    """An I/O error worth retrying (EIO, EAGAIN, ETIMEDOUT, ESTALE), here or as a cause."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def with_retries(read: Callable[[], Any]) -> Any:
    """``read()``, retried with exponential back-off on transient I/O errors.

    A transient error (a flaky network file system) is retried after 0.1, 0.2, 0.4 s, up
    to ``READ_ATTEMPTS`` reads; any other error is raised at once (the caller records the
    file as failed without retry).
    """
    for attempt in range(READ_ATTEMPTS):
        try:
            return read()
        except OSError as exc:
            if not _is_transient(exc) or attempt == READ_ATTEMPTS - 1:
                raise
            wait = READ_BACKOFF_S * 2**attempt
            log.warning("transient read error (%s); retrying in %.2f s", exc, wait)
        time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


# What decoding a page may raise for a bad file (never for a bug of ours).
_READ_ERRORS = (OSError, io.UnsupportedFormatError, ImportError, ValueError)


def _failed_read(exc: BaseException, image_id: str, rel: str) -> PreparedPage:
    """The outcome of a page that could not be read: a bomb, too large, or undecodable."""
    if isinstance(exc, io.DecompressionBombError):
        kind = "bomb"
    elif isinstance(exc, io.ImageTooLargeError):
        kind = "too large"
    else:
        kind = "decode"
    return PreparedPage(image_id, rel, "failed", kind, str(exc))


def _too_many_tiles(
    image_id: str, rel: str, page: int, shape: tuple[int, int], params: dict[str, Any], cap: int
) -> PreparedPage | None:
    """A ``skipped: too large`` page when ``shape`` would make more than ``cap`` tiles."""
    n = io.count_tiles(shape, tile_size=params["tile_size"], stride=params["stride"])
    if n <= cap:
        return None
    h, w = shape
    return PreparedPage(
        image_id,
        rel,
        "skipped",
        "too large",
        f"{rel} page {page}: {h}x{w} pixels ({h * w:,}) would make {n:,} tiles of "
        f"{params['tile_size']} pixels, more than max_tiles_per_image={cap:,} (one image "
        "must not take more than ~1% of a large run); not decoded. Raise "
        "max_tiles_per_image (--max-tiles-per-image) to map it, or split it into frames.",
    )


def _info_bar(micro: io.Micrograph, crop_bottom: int | str) -> io.InfoBar:
    """The bar to crop: found (``"auto"``), given by the user, or none (0)."""
    if crop_bottom == "auto":
        return io.info_bar(micro)
    if int(crop_bottom) > 0:
        return io.InfoBar(bottom=int(crop_bottom), source="user")
    return io.InfoBar()


def prepare_page(
    path: Path,
    rel: str,
    page: int,
    image_id: str,
    params: dict[str, Any],
    max_pixels: int,
    *,
    max_tiles: int | None = None,
) -> PreparedPage:
    """Decode, normalise and tile one page of a file; never raises for a bad file.

    Parameters
    ----------
    path : Path
        The file.
    rel : str
        Its path relative to the archive (the label in outcomes and errors).
    page : int
        The page to read (0 for single-image files).
    image_id : str
        The image's identity in the store: the file's content hash
        (:func:`microscale.io.file_digest`), with ``#p<page>`` for a multi-page file.
    params : dict
        The ingest options of the store (:data:`STORE_PARAMS`).
    max_pixels : int
        Pages above it are read by bands when they are tiled TIFF pages
        (:func:`microscale.io.open_tiled_page`), else refused as too large.
    max_tiles : int, optional
        Skip the page (``"too large"``) if it would make more tiles, judged from its declared
        size before decoding (unless it is resampled), and again before tiling.

    Returns
    -------
    PreparedPage
        Its tiles (and the information bar cropped, ``crop``), or the reason it was skipped
        or failed.
    """
    try:  # the header only: bombs, pages above max_pixels that cannot be streamed, the size
        shape = with_retries(lambda: io.page_shape(path, page=page, max_pixels=max_pixels))
    except _READ_ERRORS as exc:
        return _failed_read(exc, image_id, rel)
    if max_tiles is not None and params["pixel_size_nm"] is None:
        skipped = _too_many_tiles(image_id, rel, page, shape, params, max_tiles)
        if skipped is not None:
            return skipped
    try:
        micro = with_retries(lambda: io.read_micrograph(path, page=page, max_pixels=max_pixels))
    except _READ_ERRORS as exc:
        if getattr(exc, "streamable", False):
            return _prepare_streamed(path, rel, page, image_id, params, max_pixels)
        return _failed_read(exc, image_id, rel)
    image = micro.data
    done = PreparedPage(
        image_id, rel, "", "", decoded=True, channel_policy=micro.metadata.get("channel_policy")
    )
    if np.issubdtype(image.dtype, np.floating):
        bad = ~np.isfinite(image)
        if bad.any():  # documented rule: NaN/inf pixels take the image's finite median
            if bad.all():
                return replace(
                    done,
                    status="skipped",
                    kind="no finite pixels",
                    reason=f"{rel} page {page}: no finite pixels",
                )
            image = np.where(bad, np.median(image[~bad]), image)
    bar = _info_bar(micro, params["crop_bottom"])
    if bar.rows:
        image = io.crop(image, top=bar.top, bottom=bar.bottom)
    pixel_size = micro.pixel_size_nm
    if params["pixel_size_nm"] is not None and pixel_size is not None:
        image = io.resample(image, pixel_size_nm=pixel_size, target_nm=params["pixel_size_nm"])
        pixel_size = params["pixel_size_nm"]
    if max_tiles is not None:
        skipped = _too_many_tiles(image_id, rel, page, image.shape, params, max_tiles)
        if skipped is not None:
            return replace(skipped, decoded=True, channel_policy=done.channel_policy)
    try:
        grey = normalize_intensity(image, method=params["normalize"])[0]
    except ConstantImageError as exc:
        return replace(done, status="skipped", kind="constant", reason=f"{rel} page {page}: {exc}")
    try:
        tiles, origins = io.tile(
            grey,
            tile_size=params["tile_size"],
            stride=params["stride"],
            min_fraction=params["min_fraction"],
            source=rel,
        )
    except io.ImageTooSmallError as exc:
        return replace(done, status="skipped", kind="too small", reason=str(exc))
    real = np.minimum(origins + params["tile_size"], grey.shape) - origins
    return replace(
        done,
        status="processed",
        kind="image",
        tiles=tiles,
        origins=origins,
        weights=real.prod(axis=1).astype(np.float64),
        pixel_size_nm=pixel_size,
        crop=bar,
    )


def _prepare_streamed(
    path: Path,
    rel: str,
    page: int,
    image_id: str,
    params: dict[str, Any],
    max_pixels: int,
) -> PreparedPage:
    """:func:`prepare_page` for a page above ``max_pixels`` read by bands (module docstring)."""
    try:
        opened = with_retries(lambda: io.open_tiled_page(path, page=page, max_pixels=max_pixels))
    except _READ_ERRORS as exc:
        return _failed_read(exc, image_id, rel)
    with opened as tp:
        try:
            return _stream_page(tp, rel, page, image_id, params, max_pixels)
        except io.ImageTooLargeError as exc:
            return PreparedPage(image_id, rel, "failed", "too large", str(exc))
        except (OSError, io.UnsupportedFormatError, ValueError) as exc:
            return PreparedPage(image_id, rel, "failed", "decode", str(exc))


def _stream_page(
    tp: io.TiledPage,
    rel: str,
    page: int,
    image_id: str,
    params: dict[str, Any],
    max_pixels: int,
) -> PreparedPage:
    h, w = tp.shape
    s = params["tile_size"]
    step = s if params["stride"] is None else params["stride"]
    done = PreparedPage(
        image_id, rel, "", "", decoded=True, channel_policy=tp.metadata.get("channel_policy")
    )
    budget_rows = max_pixels // w
    if budget_rows < s:
        return replace(
            done,
            status="failed",
            kind="too large",
            reason=(
                f"{rel} page {page}: a {h}x{w} image above max_pixels={max_pixels:,} is read "
                f"in bands of tile_size={s} full-width rows, but {s}x{w} pixels are more than "
                "max_pixels; pass a larger max_pixels."
            ),
        )
    notes = [f"page {page} ({h}x{w}) streamed in bands of at most {max_pixels:,} pixels"]
    if params["crop_bottom"] == "auto" or params["crop_bottom"]:
        notes.append("information bar not cropped (not supported for streamed pages)")
    if params["pixel_size_nm"] is not None and tp.pixel_size_nm is not None:
        notes.append("not resampled (not supported for streamed pages)")
    floating = np.issubdtype(tp.dtype, np.floating)

    def bands(rows: int) -> Iterator[np.ndarray]:
        for y0 in range(0, h, rows):
            yield tp.read(y0, y0 + rows)

    # pass 1: exact min / max of the finite pixels, count of the others
    lo, hi, n_bad = np.inf, -np.inf, 0
    for band in bands(budget_rows):
        if floating:
            finite = np.isfinite(band)
            n_bad += int(band.size - np.count_nonzero(finite))
            band = band[finite]
            if band.size == 0:
                continue
        lo, hi = min(lo, band.min().item()), max(hi, band.max().item())
    if n_bad == h * w:
        reason = f"{rel} page {page}: no finite pixels"
        return replace(done, status="skipped", kind="no finite pixels", reason=reason)
    if lo == hi:
        return replace(
            done,
            status="skipped",
            kind="constant",
            reason=(
                f"{rel} page {page}: Image 0 is constant (every pixel equals {lo!r}): it has no "
                "texture. Remove it from the input."
            ),
        )
    method = params["normalize"]
    fill = None
    if method == "percentile" or n_bad:
        hist = _Histogram(tp.dtype, lo, hi)
        for band in bands(budget_rows):
            hist.add(band[np.isfinite(band)] if floating and n_bad else band)
        if n_bad:
            fill = hist.quantile(50.0)
            hist.add_value(fill, n_bad)
    if method == "percentile":
        p_lo, p_hi = 0.5, 99.5  # normalize_intensity's default percentiles
        lo_f, hi_f = hist.quantile(p_lo), hist.quantile(p_hi)
        if lo_f == hi_f:
            return replace(
                done,
                status="skipped",
                kind="constant",
                reason=(
                    f"{rel} page {page}: Image 0 has no contrast between its {p_lo} and {p_hi} "
                    f"percentiles (both equal {lo_f!r}). Use method='minmax' or wider "
                    "percentiles."
                ),
            )
    elif method == "minmax":
        lo_f, hi_f = float(lo), float(hi)
    else:
        lo_a, hi_a = dtype_range(tp.dtype, None, np.array([lo]), np.array([hi]))
        lo_f, hi_f = float(lo_a[0]), float(hi_a[0])
    half_lo, half_hi = lo_f / 2, hi_f / 2

    # pass 2: the tile grid of io.tile, tile rows grouped into bands within the budget
    if w < params["min_fraction"] * s:
        return replace(
            done,
            status="skipped",
            kind="too small",
            reason=f"{rel!r}: the image is {h}x{w} pixels, narrower than min_fraction * "
            f"tile_size = {params['min_fraction'] * s:g} pixels.",
        )
    rows = io.tile_starts(h, s, step)
    cols = io.tile_starts(max(w, s), s, step)
    origins = np.array([(r, c) for r in rows for c in cols], dtype=np.int64)
    tiles = np.empty((len(origins), s, s), np.float32)  # filled band by band
    i = 0
    while i < len(rows):
        j = i + 1
        while j < len(rows) and rows[j] + s - rows[i] <= budget_rows:
            j += 1
        y0, y1 = rows[i], rows[j - 1] + s
        band = tp.read(y0, y1)
        if fill is not None:
            band = np.where(np.isfinite(band), band, fill)
        grey = (band.astype(np.float64) / 2 - half_lo) / (half_hi - half_lo)
        if method == "percentile":
            np.clip(grey, 0.0, 1.0, out=grey)
        grey = grey.astype(np.float32)
        if w < s:
            grey = np.pad(grey, ((0, 0), (0, s - w)), mode="reflect" if w > 1 else "symmetric")
        first, last = i * len(cols), j * len(cols)
        windows = np.lib.stride_tricks.sliding_window_view(grey, (s, s))
        tiles[first:last] = windows[origins[first:last, 0] - y0, origins[first:last, 1]]
        del band, grey, windows
        i = j
    real = np.minimum(origins + s, (h, w)) - origins
    log.info("%s: %s", rel, "; ".join(notes))
    return replace(
        done,
        status="processed",
        kind="image",
        reason="; ".join(notes),
        tiles=tiles,
        origins=origins,
        weights=real.prod(axis=1).astype(np.float64),
        pixel_size_nm=tp.pixel_size_nm,
    )


class _Histogram:
    """Counts of a page's values for its percentiles (module docstring, "Streamed pages").

    Integer data spanning at most ``HISTOGRAM_BINS`` values: one bin per value (exact).
    Otherwise ``HISTOGRAM_BINS`` equal bins between ``lo`` and ``hi``.
    """

    def __init__(self, dtype: np.dtype, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        span = hi - lo + 1 if not np.issubdtype(dtype, np.floating) else math.inf
        self.exact = span <= HISTOGRAM_BINS
        self.n_bins = int(span) if self.exact else HISTOGRAM_BINS
        self.counts = np.zeros(self.n_bins, np.int64)

    def _index(self, values: np.ndarray) -> np.ndarray:
        if self.exact:
            return (values.astype(np.int64) - int(self.lo)).ravel()
        scaled = (values.astype(np.float64) / 2 - self.lo / 2) / (self.hi / 2 - self.lo / 2)
        return np.clip((scaled * self.n_bins).astype(np.int64), 0, self.n_bins - 1).ravel()

    def add(self, values: np.ndarray) -> None:
        self.counts += np.bincount(self._index(values), minlength=self.n_bins)

    def add_value(self, value: float, count: int) -> None:
        self.counts[self._index(np.array([value]))[0]] += count

    def _order_statistic(self, cum: np.ndarray, k: int) -> float:
        b = int(np.searchsorted(cum, k, side="right"))  # the bin holding the k-th value
        if self.exact:
            return float(self.lo + b)
        before = int(cum[b - 1]) if b else 0
        position = b + (k - before + 0.5) / int(self.counts[b])
        value = self.lo + position * ((self.hi / 2 - self.lo / 2) / self.n_bins) * 2
        return min(max(value, self.lo), self.hi)

    def quantile(self, q: float) -> float:
        """``np.percentile(values, q)`` (linear), exact or within a bin."""
        cum = np.cumsum(self.counts)
        rank = q / 100 * (int(cum[-1]) - 1)
        k0 = math.floor(rank)
        v0 = self._order_statistic(cum, k0)
        v1 = self._order_statistic(cum, min(k0 + 1, int(cum[-1]) - 1))
        return v0 + (rank - k0) * (v1 - v0)


def _commit_file(
    st: Store, prepared: PreparedFile, known_digests: set[str], report: IngestReport
) -> dict[str, Any]:
    """Append a prepared file's pages to the store (the single writer); its outcome."""
    digest = prepared.digest
    if digest is not None and digest in known_digests:  # stored before, or earlier this run
        first = next((i for i in (digest, f"{digest}#p0") if st.image_index(i) is not None), None)
        return _outcome("processed", "duplicate", "same content as an image already stored", first)
    if prepared.outcome is not None:
        return prepared.outcome
    assert digest is not None
    kinds = []
    first_id = None
    notes: dict[str, Any] = {}
    for page in prepared.pages:
        image_id = page.image_id
        if st.image_index(image_id) is not None:  # committed by a run that was cut short
            first_id = first_id or image_id
            kinds.append(("processed", "image", ""))
            continue
        if page.decoded:
            notes.setdefault("channel_policy", page.channel_policy)
        if page.status == "processed":
            assert page.tiles is not None and page.origins is not None
            index = st.next_image_index
            append_tiles(
                st,
                page.tiles,
                image_index=np.full(len(page.tiles), index),
                origins=page.origins,
                weights=page.weights,
            )
            append_images(
                st,
                image_ids=[image_id],
                paths=[page.label],
                pixel_size_nm=[np.nan if page.pixel_size_nm is None else page.pixel_size_nm],
                crop_rows=[[page.crop.top, page.crop.bottom]],
                crop_source=[page.crop.source],
            )
            report.new_images += 1
            report.new_tiles += len(page.tiles)
            if first_id is None:
                first_id = image_id
        kinds.append((page.status, page.kind, page.reason))
    known_digests.add(digest)
    if first_id is not None:
        bad = [r for s, _, r in kinds if s != "processed"]
        note = f"{len(kinds)} page(s)" + (f"; {len(bad)} page(s) not used: {bad[0]}" if bad else "")
        streamed = [r for s, _, r in kinds if s == "processed" and r]
        if streamed:
            note += f"; {streamed[0]}"
        return {**_outcome("processed", "image", note, first_id), **notes}
    status, kind, reason = kinds[0]
    return _outcome(status, kind, reason)


def _same(value: Any) -> Any:
    return value


def _prepare_on_cluster(
    client: distributed.Client,
    items: list[tuple[str, str]],
    params: dict[str, Any],
    max_pixels: int,
    known_digests: frozenset[str],
    files_per_task: int,
    *,
    max_tiles: int | None = None,
) -> Iterator[PreparedFile]:
    """Prepared files in the order of ``items``, prepared on the cluster's workers.

    Groups of ``files_per_task`` files are submitted at most ``2 * task slots`` ahead of
    the next one to yield (results that come early wait here: memory stays bounded).

    When a worker dies, Dask blames every task it was running or holding in its queue, so
    a task that ends in ``KilledWorker`` holds a file that kills workers, or was only next
    to one. Its files are therefore retried one by one, each alone on the cluster (no other
    task of this ingest in flight): a file whose lone task is killed again is the one that
    kills workers, and is reported failed; its neighbours are prepared as usual.
    """
    import distributed

    if not items:
        return
    groups = [items[i : i + files_per_task] for i in range(0, len(items), files_per_task)]
    window = max(2, 2 * sum(client.nthreads().values()))
    # A task rather than scattered data: the scheduler recomputes it if every worker that
    # held it was killed.
    known = client.submit(_same, known_digests, pure=False)
    units = itertools.count()
    members: dict[int, list[tuple[str, str]]] = {}  # unit -> its files
    alone: set[int] = set()  # units run with nothing else in flight
    suspects: list[int] = []  # units waiting to run alone, in order
    unit_of: dict[distributed.Future, int] = {}
    results: dict[int, list[PreparedFile]] = {}
    order: list[int] = []  # units still to yield, in discovery order
    done = distributed.as_completed()
    next_group = 0

    def submit(unit: int) -> None:
        future = client.submit(
            prepare_files, members[unit], params, max_pixels, known, max_tiles=max_tiles, pure=False
        )
        unit_of[future] = unit
        done.add(future)

    try:
        while order or next_group < len(groups):
            if suspects:
                if not unit_of:  # the cluster is ours alone: run the next suspect
                    unit = suspects.pop(0)
                    alone.add(unit)
                    submit(unit)
            else:
                while next_group < len(groups) and len(order) < window:
                    unit = next(units)
                    members[unit] = groups[next_group]
                    order.append(unit)
                    submit(unit)
                    next_group += 1
            while order and order[0] in results:
                unit = order.pop(0)
                yield from results.pop(unit)
                members.pop(unit)
                alone.discard(unit)
            if not unit_of:
                continue
            future = next(done)
            unit = unit_of.pop(future)
            try:
                results[unit] = future.result()
            except distributed.KilledWorker:
                files = members[unit]
                if unit not in alone:  # this task, or one beside it, killed workers
                    log.warning(
                        "a task of %d file(s) was on workers that died; "
                        "retrying its files one by one, each alone",
                        len(files),
                    )
                    retry = []
                    for file in files:
                        retry.append(next(units))
                        members[retry[-1]] = [file]
                    at = order.index(unit)
                    order[at : at + 1] = retry
                    suspects.extend(retry)
                    suspects.sort(key=order.index)  # unblock the next file to yield first
                    members.pop(unit)
                else:
                    path, rel = files[0]
                    log.error("%s killed the workers that decoded it", rel)
                    results[unit] = [
                        PreparedFile(
                            rel,
                            outcome=_outcome(
                                "failed",
                                "worker killed",
                                f"{rel}: decoding it killed the Dask worker process, on every "
                                "worker that tried: the decoder crashed (a bug in the decoder, "
                                "or a malformed or malicious file)",
                            ),
                        )
                    ]
            finally:
                future.release()
    finally:
        for future in list(unit_of):
            future.cancel()
        known.release()


# --------------------------------------------------------------------------- repair


def rebuild_tiles(
    st: Store,
    archive: str | os.PathLike[str],
    manifest: dict[str, Any],
    *,
    params: dict[str, Any],
    max_pixels: int,
) -> list[str]:
    """Rebuild the damaged tile chunks of a store from the archive's files.

    Every committed tile chunk has a completion record with its checksum (stage
    :data:`microscale.store.TILES_STAGE`, written when images are committed). A chunk whose
    record is missing (dropped by ``microscale check --repair``, or never written: a crash
    right after the commit) or whose file no longer matches it (size or modification time
    changed, then the CRC32C) is rebuilt: each image with tiles in it is read again from
    one of its files in the manifest (the same content: its sha256 is checked), and cut
    into tiles with the store's settings. Ingest is deterministic, so the chunk is rebuilt
    as it was and the features computed from it stay valid. A store written before tile
    checksums gets records of its chunks as they are (trusted). Driver-side, under the
    run lock.

    Returns
    -------
    list of str
        The keys of the chunks rebuilt. A chunk whose images' files are gone or changed is
        left as it is, with an error in the log naming it.
    """
    if not st.n_tiles:
        return []
    records = st.records(TILES_STAGE)
    if not records:
        log.info("no tile checksums in %s (an older store): recording them as they are", st.root)
        record_tile_chunks(st, 0, st.n_tiles)
        return []
    bad = {p.key for p in verify_records(st, TILES_STAGE, full=False) if p.kind != "unverified"}
    todo = [
        (key, rows)
        for key, rows in tile_chunks(st)
        if key in bad or (records.get(key) or {}).get("extent") != {"rows": list(rows)}
    ]
    if not todo:
        return []
    table = image_table(st)
    bounds = table["image_tiles"]
    files: dict[str, list[str]] = {}
    for rel, outcome in manifest.get("files", {}).items():
        digest = str(outcome.get("image_id") or "").split("#")[0]
        if digest:
            files.setdefault(digest, []).append(rel)
    root = Path(archive).resolve()
    size, end = st.tile_size, array_shape(st, "tiles")[0]
    rebuilt = []
    for key, (a, b) in todo:
        stop = min(a + st.tiles_per_chunk, end)  # a whole chunk: to its end, or the array's
        data = np.full((stop - a, size, size), np.nan, np.float32)
        first = int(np.searchsorted(bounds[:, 1], a, side="right"))
        missing = None
        for m in range(first, len(bounds)):
            lo, hi = (int(v) for v in bounds[m])
            if lo >= b:
                break
            image_id = str(table["image_id"][m])
            tiles = _tiles_of(image_id, files, root, params, max_pixels, hi - lo)
            if tiles is None:
                missing = f"image {m} ({table['image_path'][m]})"
                break
            x0, x1 = max(lo, a), min(hi, b)
            data[x0 - a : x1 - a] = tiles[x0 - lo : x1 - lo]
        if missing is not None:
            log.error(
                "tile chunk %s (tiles %d:%d) of %s is damaged and cannot be rebuilt: no file "
                "of %s with its content is left in %s",
                key, a, b, st.root, missing, root,
            )  # fmt: skip
            continue
        write_block(st, "tiles", data, rows=(a, stop))
        record_tile_chunks(st, a, b)
        log.warning("tile chunk %s (tiles %d:%d) of %s was damaged: rebuilt", key, a, b, st.root)
        rebuilt.append(key)
    return rebuilt


def _tiles_of(
    image_id: str,
    files: dict[str, list[str]],
    root: Path,
    params: dict[str, Any],
    max_pixels: int,
    n_tiles: int,
) -> np.ndarray | None:
    """The tiles of a stored image, made again from one of its files; None if none is left."""
    for rel in files.get(image_id.split("#")[0], []):
        path = root / rel
        if not path.is_file():
            continue
        prepared = prepare_file(str(path), rel, params, max_pixels)
        if prepared.digest != image_id.split("#")[0]:
            continue  # the file changed since
        for page in prepared.pages:
            if page.image_id == image_id and page.tiles is not None and len(page.tiles) == n_tiles:
                return page.tiles
    return None
