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
  with the decoder's reason.

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
bar is cropped (``crop_bottom`` pixels, or from the FEI header with
``crop_bottom="auto"``); the image is resampled to ``pixel_size_nm`` when that is set and
the file has a calibration; intensities are mapped to [0, 1] per image
(``normalize``, METHOD.md section 1: so that all tiles of an image share its contrast);
then it is tiled (:func:`microscale.io.tile`). A multi-page file contributes one image per
page, with identity ``sha256#p<page>``.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from microscale import io
from microscale.intensity import ConstantImageError, Normalization, normalize_intensity
from microscale.store import (
    READ_ATTEMPTS,
    READ_BACKOFF_S,
    TRANSIENT_ERRNOS,
    Store,
    append_images,
    append_tiles,
    create_store,
    image_table,
    open_store,
    read_manifest,
    record_files,
)

if TYPE_CHECKING:
    import distributed

__all__ = ["IngestReport", "PreparedFile", "ingest_archive", "prepare_file", "prepare_files"]

log = logging.getLogger(__name__)

STORE_PARAMS = ("tile_size", "stride", "min_fraction", "normalize", "pixel_size_nm", "crop_bottom")


@dataclass
class IngestReport:
    """What an ingest run did.

    Attributes
    ----------
    outcomes : dict
        Relative path -> {"status", "kind", "reason", "image_id"} for every entry found
        now (links, FIFOs and devices included, as skipped); processed images also carry
        ``"channel_policy"``.
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
        Rows of SEM information bar to cut off; "auto" reads it from FEI headers.
    max_pixels : int, optional
        Refuse images with more pixels (decompression bombs); raise it for huge images.
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
    root = Path(archive)
    left_out: list[tuple[Path, str]] = []
    files = io.discover(root, skipped=left_out)
    st = _open_or_create(store, params=params, tiles_per_chunk=tiles_per_chunk)
    report = IngestReport()
    with st.lock():
        known = read_manifest(st)
        # Contents already done: those the manifest lists, and single-page images that a
        # crashed run committed before it could write their outcome (pages of a multi-page
        # file that was cut short are completed page by page below).
        committed = image_table(st)["image_id"] if st.n_images else []
        known_digests = {image_id.split("#")[0] for image_id in known["images"]}
        known_digests |= {str(i) for i in committed if "#" not in str(i)}
        pending: dict[str, dict[str, Any]] = {}
        for path, why in left_out:
            rel = _recorded_name(path.relative_to(root.resolve()).as_posix())
            report.outcomes[rel] = pending[rel] = _outcome(
                "skipped", "not a regular file", f"{rel}: {why}; not read"
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
                prepare_file(path, rel, params, max_pixels, known_digests) for path, rel in items
            )
        else:
            stream = _prepare_on_cluster(
                client, items, params, max_pixels, frozenset(known_digests), int(files_per_task)
            )
        for done, prepared in enumerate(stream, 1):
            rel = prepared.rel
            try:
                outcome = _commit_file(st, prepared, known_digests, report)
            except Exception as exc:  # one bad file never loses the others
                log.exception("unexpected error on %s", rel)
                outcome = _outcome("failed", "error", f"{type(exc).__name__}: {exc}")
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
) -> PreparedFile:
    """Sniff, hash, decode, normalise and tile every page of one file; no store access.

    Runs on a Dask worker (or in this process without a client). A file whose digest is in
    ``known_digests`` is not decoded. Never raises for a bad file: the reason is in the
    result.
    """
    try:
        return _prepare(Path(path), rel, params, max_pixels, known_digests)
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
) -> list[PreparedFile]:
    """:func:`prepare_file` of each ``(path, rel)``: one Dask task."""
    return [prepare_file(path, rel, params, max_pixels, known_digests) for path, rel in items]


def _prepare(
    path: Path, rel: str, params: dict[str, Any], max_pixels: int, known_digests: Set[str]
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
        digest = _with_retries(lambda: io.file_digest(path))
    except OSError as exc:  # permission denied, or an I/O error that did not go away
        return PreparedFile(rel, outcome=_outcome("failed", "unreadable", f"{rel}: {exc}"))
    if digest in known_digests:
        return PreparedFile(rel, digest=digest)  # the driver records the duplicate
    try:
        n_pages = _with_retries(lambda: io.count_pages(path))
    except (OSError, io.UnsupportedFormatError, ValueError, ImportError) as exc:
        return PreparedFile(rel, digest=digest, outcome=_outcome("failed", "decode", str(exc)))
    out = PreparedFile(rel, digest=digest)
    for page in range(n_pages):
        image_id = digest if n_pages == 1 else f"{digest}#p{page}"
        label = rel if n_pages == 1 else f"{rel}#{page}"
        out.pages.append(_prepare_page(path, label, page, image_id, params, max_pixels))
    return out


def _is_transient(exc: BaseException | None) -> bool:
    """An I/O error worth retrying (EIO, EAGAIN, ETIMEDOUT, ESTALE), here or as a cause."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _with_retries(read: Callable[[], Any]) -> Any:
    """``read()``, retried with exponential back-off (0.1, 0.2, 0.4 s) on transient I/O
    errors (a flaky network file system); any other error is raised at once and the file is
    recorded as failed without retry."""
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


def _prepare_page(
    path: Path,
    rel: str,
    page: int,
    image_id: str,
    params: dict[str, Any],
    max_pixels: int,
) -> PreparedPage:
    try:
        micro = _with_retries(lambda: io.read_micrograph(path, page=page, max_pixels=max_pixels))
    except io.ImageTooLargeError as exc:
        return PreparedPage(image_id, rel, "failed", "too large", str(exc))
    except (OSError, io.UnsupportedFormatError, ImportError, ValueError) as exc:
        return PreparedPage(image_id, rel, "failed", "decode", str(exc))
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
    bar = io.detect_info_bar(micro) if params["crop_bottom"] == "auto" else params["crop_bottom"]
    if bar:
        image = io.crop(image, bottom=int(bar))
    pixel_size = micro.pixel_size_nm
    if params["pixel_size_nm"] is not None and pixel_size is not None:
        image = io.resample(image, pixel_size_nm=pixel_size, target_nm=params["pixel_size_nm"])
        pixel_size = params["pixel_size_nm"]
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
    )


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
        future = client.submit(prepare_files, members[unit], params, max_pixels, known, pure=False)
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
