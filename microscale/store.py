"""The archive store: tiles, texture vectors and distances of an archive, in Zarr v3.

This is the only module that imports zarr. The pipeline stages (:mod:`microscale.stages`)
read and write through the functions here; Dask workers open the store by its path.

Layout
------
A store is a directory ``ROOT``::

    ROOT/
      store.zarr/                      Zarr v3 group; attributes below
        tiles               (tile, y, x)     float32  chunks (tiles_per_chunk, s, s)
        tile_image          (tile,)          int64    index of the image the tile came from
        tile_origin         (tile, 2)        int32    (row, column) of its top-left pixel
        tile_weight         (tile,)          float64  pixels it contributes to its image's mean
        image_id            (image,)         string   content hash of the image (its identity)
        image_path          (image,)         string   first path seen with that content
        pixel_size_nm       (image,)         float64  NaN when the file does not say
        crop_rows           (image, edge)    int32    rows of info bar cut at the top and at
                                             the bottom (edge = top, bottom); -1: not recorded
        crop_source         (image,)         string   how the bar was found (fei-metadata,
                                             detected, user, none...); "": not recorded
        image_tiles         (image, 2)       int64    [start, stop) of the image's tiles
        features/<d>        (tile, feature)  float32 (cnn) or float64 (ps),
                                             chunks (features_chunk, n_features)
                                             attrs ``sketch``: null, or ``{n_components,
                                             seed, input_dim, block}`` when the vectors are
                                             stored as sketches (microscale.sketch)
        image_features/<d>  (image, feature) same dtype and ``sketch``, chunks (c, n_features)
        image_feature_sums/<d> (group, feature) float64, chunks (1, n_features): sum of the
                                             image features of each group of images
        center/<d>          (feature,)       float64: the common centre of the distance kernel
        distances/<d>       (image, image)   float64, chunks (block, block)
        landmarks/<d>       (landmark,)      int64: the rows chosen as landmarks ("landmarks"
                                             distance mode), attrs how they were chosen
        landmark_vectors/<d> (landmark, feature)  their rows, copied once
        landmark_distances/<d> (image, landmark)  float64, chunks (block, m)
        neighbors/<d>/index (image, rank)    int64, chunks (block, k): the k nearest other
                                             images, nearest first (ties: lower index)
        neighbors/<d>/distance (image, rank) float64: their distances
        embeddings/<d>/d<k> (image, k)       float64: the last MDS embedding in k dimensions
      images.jsonl                         manifest, an append-only log (one JSON line per
                                           update): content hash -> every path with that
                                           content; per-file outcomes (see read_manifest)
      _done/<stage>/<key>                  completion records (JSON), with the CRC32C of
                                           each chunk they cover
      .lock                                run lock (``fcntl.flock``), holder's pid and time
      runs/<stamp>-<id>.json               the run log: one record per run
                                           (:mod:`microscale.runlog`)

``<d>`` is a descriptor name (``cnn``, ``ps``). Every array has ``dimension_names``. Group
attributes: ``microscale_store`` (format version, 1), ``tile_size``, ``tiles_per_chunk``,
``features_chunk``, ``n_tiles`` and ``n_images`` (the committed lengths, see below), plus
whatever the caller passed to :func:`create_store` (e.g. the intensity normalisation).
Strings use Zarr's variable-length UTF-8 data type (fixed-width numpy ``'U'`` arrays have
no Zarr v3 specification). Float arrays have fill value NaN, so a chunk that was never
written reads back as NaN rather than as plausible zeros.

Commit, concurrency and crash rules
-----------------------------------
- **Images are append-only and committed by the group attributes.** :func:`append_tiles`
  writes tile rows past the committed end; :func:`append_images` writes the image rows and
  then, last, sets ``n_tiles`` and ``n_images``. Rows past those counts (left by a crash)
  are invisible to every reader and are overwritten by the next append. Image and tile
  indices therefore never change once committed, and later arrays (features, distances)
  only ever grow. Appending is done by one process (the ingest stage) under the run lock.
- **One writer per chunk.** Workers write only through :func:`write_block`, which accepts
  only regions made of whole chunks, and every planned task owns its chunks. Sharded
  arrays are never used: concurrent writers to one shard lose each other's updates.
  Arrays are created and resized only by the driver (under the run lock) before it submits
  the tasks that write them. Zarr's local store writes each chunk and metadata document to
  a temporary file (``<chunk>.<uuid>.partial``) and renames it, so a chunk is never
  half-written. A process killed between the two leaves the temporary file behind; the
  driver removes such leftovers of an array when it reuses the array
  (:func:`ensure_array`, under the run lock, before any task writes it).
- **Full disks and flaky reads.** A write that fails (e.g. ``ENOSPC``) raises before the
  completion record is written, so nothing is marked done that is not on disk; free space
  and re-run. Reads of tiles and rows (:func:`read_tiles`, :func:`read_rows`,
  :func:`read_array`) retry transient I/O errors (``EIO``, ``EAGAIN``, ``ETIMEDOUT``,
  ``ESTALE``: a network file system's hiccups) with exponential backoff; any other error,
  such as a missing or unreadable file, is raised at once.
- **Completion records.** A chunk never written reads back as the fill value, silently, so
  a task marks its work done with :meth:`Store.mark_done` *after* writing the data: a small
  JSON file ``_done/<stage>/<key>`` written to a temporary name, fsynced and renamed. The
  record holds the *extent* the work covered (its row ranges); :meth:`Store.is_done` says
  yes only when the extent still matches, so a partial last block that gains rows when the
  archive grows is recomputed. A run that crashes resumes by recomputing exactly the keys
  without a matching record.
- **Checksums.** A record also lists the chunk files its work wrote (``covers=``), each
  with its CRC32C (:data:`CHECKSUM`, google-crc32c: Zarr's own dependency, hardware
  CRC32C at ~10-17 GB/s, 5x zlib's CRC-32), size and modification time, read back from
  disk after the write: the bytes as written. :func:`verify_records` compares them with
  the files (``full=False``: only files whose size or time changed are hashed, one
  ``stat`` each). Tile chunks get records too (stage :data:`TILES_STAGE`, written by
  :func:`append_images` after each commit). Records without ``chunks`` (older stores)
  are trusted. :meth:`Store.drop_done` deletes a damaged unit's record and its chunks, so
  that the unit is computed again (:mod:`microscale.stages.verify`).
- **One run at a time.** :meth:`Store.lock` takes an exclusive ``flock`` on ``ROOT/.lock``
  (re-entrant within one process; :mod:`microscale.lock`); a whole run holds it from its
  first write to its last, and a second run fails fast with :class:`StoreLockedError`.
  The lock dies with its process, so a crashed run never blocks the store (a lock file a
  dead process of this host left is taken over; one naming another host is refused with
  how to break it). ``flock`` is honoured on local file systems and on NFSv4 / Lustre /
  GPFS mounts that support it.

The store assumes all workers see ``ROOT`` at the same path (a local disk for one node, a
shared file system for several).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import zarr
from numpy.typing import ArrayLike, DTypeLike

from microscale._validation import check_int
from microscale.atomic import atomic_write
from microscale.errors import (
    DamagedStoreError,
    IncompleteStageError,
    StoreError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
)
from microscale.lock import NO_FLOCK_ERRNOS, no_flock_message, store_lock

__all__ = [
    "CHECKSUM",
    "DESCRIPTORS",
    "LEVELS",
    "FORMAT_VERSION",
    "NO_FLOCK_ERRNOS",
    "GROUP_NAME",
    "DamagedStoreError",
    "IncompleteStageError",
    "RecordProblem",
    "Store",
    "StoreError",
    "StoreExistsError",
    "StoreLockedError",
    "StoreNotFoundError",
    "TILES_STAGE",
    "append_images",
    "append_tiles",
    "array_attrs",
    "array_chunks",
    "array_shape",
    "chunk_checksum",
    "chunk_keys",
    "create_store",
    "delete_array",
    "ensure_array",
    "ensure_distance_matrix",
    "ensure_features_array",
    "has_array",
    "image_table",
    "no_flock_message",
    "open_store",
    "read_array",
    "read_manifest",
    "read_row_selection",
    "read_rows",
    "read_tiles",
    "record_files",
    "record_tile_chunks",
    "tile_chunks",
    "tile_table",
    "verify_records",
    "write_array",
    "write_block",
]

#: Version of the layout described in the module docstring.
FORMAT_VERSION = 1
#: Name of the Zarr group inside the store directory.
GROUP_NAME = "store.zarr"
#: The manifest: an append-only log, one JSON object per line (see :func:`read_manifest`).
MANIFEST_NAME = "images.jsonl"
#: The manifest of stores written before the log: read first, never written.
LEGACY_MANIFEST_NAME = "images.json"
DONE_DIR = "_done"
#: Stage name of the tile chunks' records, written when images are committed.
TILES_STAGE = "tiles"
#: The checksum of a chunk file kept in completion records (google-crc32c, which Zarr
#: itself depends on: hardware CRC32C, ~17 GB/s on one core).
CHECKSUM = "crc32c"
FILE_STATUSES = ("processed", "skipped", "failed")

#: errno values of read errors worth retrying: a network file system's transient failures.
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE})
#: Attempts of a read that fails transiently, and the first wait (doubled after each).
READ_ATTEMPTS = 4
READ_BACKOFF_S = 0.1
_sleep = time.sleep  # between read attempts (tests replace it)
_PARTIAL_SUFFIX = ".partial"  # zarr's LocalStore: <key>.<uuid hex>.partial, then rename

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STRING = str  # zarr's variable-length UTF-8 data type
_log = logging.getLogger(__name__)

#: Descriptors a store can hold (the ``<d>`` of the layout): Gram texture vectors and
#: power spectra.
DESCRIPTORS: tuple[str, ...] = ("cnn", "ps")
#: What a distance matrix can map: images (``distances/<d>``) or every tile
#: (``tile_distances/<d>``, with ``tile_center``, ``tile_embeddings``).
LEVELS: tuple[str, ...] = ("image", "tile")


# --------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _retry_transient(
    read: Callable[[], Any], *, attempts: int = READ_ATTEMPTS, backoff: float = READ_BACKOFF_S
) -> Any:
    """``read()``, retried with exponential backoff while it fails with a transient errno.

    Waits ``backoff``, ``2 * backoff`` ... between attempts (0.7 s in all by default). Any
    other exception, and the last transient one, is raised unchanged.
    """
    for attempt in range(attempts):
        try:
            return read()
        except OSError as exc:
            if exc.errno not in TRANSIENT_ERRNOS:
                raise
            if attempt == attempts - 1:
                exc.add_note(f"microscale: the read failed {attempts} times; giving up.")
                raise
            wait = backoff * 2**attempt
            _log.warning("Transient read error (%s); retrying in %.2f s", exc, wait)
        _sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _remove_partial_writes(store: Store, name: str) -> int:
    """Delete the temporary chunk files of ``name`` left by killed writers; how many."""
    removed = 0
    for path in (store.root / GROUP_NAME / name).rglob(f"*{_PARTIAL_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    if removed:
        _log.info("Removed %d partial chunk file(s) of %r left by a killed writer", removed, name)
    return removed


def _jsonable(value: Any) -> Any:
    """Extents as JSON stores them: tuples become lists, numpy scalars Python numbers."""
    return json.loads(json.dumps(value, default=lambda v: v.item()))


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise StoreError(
            f"The {what} {value!r} is not a valid record name: use letters, digits, '.', "
            "'_' and '-', starting with a letter or digit."
        )
    return value


# --------------------------------------------------------------------------- checksums


@dataclass(frozen=True)
class RecordProblem:
    """A completion record whose work is not (or no longer) what the store holds.

    Attributes
    ----------
    stage, key : str
        The unit of work (``_done/<stage>/<key>``), e.g. ``"distances.cnn"``,
        ``"000000-000001"``.
    kind : str
        ``"damaged"`` (a chunk's bytes differ from the record's checksum, or are cut
        short), ``"missing"`` (a chunk file the record covers is gone), ``"unreadable
        record"`` (the record itself is corrupt), ``"not done"`` (a unit of a stage that
        has started has no record: a crash, or a deleted record) or ``"unverified"`` (a
        record written before checksums, trusted as it is).
    chunks : dict
        Chunk path (array path + chunk key, e.g. ``"distances/cnn/c/0/1"``) -> what is
        wrong with it.
    extent : JSON value
        What the unit covers (its row ranges), when known.
    """

    stage: str
    key: str
    kind: str
    chunks: Mapping[str, str]
    extent: Any = None

    def __str__(self) -> str:
        where = ""
        if isinstance(self.extent, Mapping):
            spans = [
                f"{k} {v[0]}:{v[1]}"
                for k in ("rows", "cols")
                if isinstance(v := self.extent.get(k), list) and len(v) == 2
            ]
            where = f" ({', '.join(spans)})" if spans else ""
        detail = "; ".join(f"{c}: {why}" for c, why in self.chunks.items())
        return f"{self.kind}: {self.stage} {self.key}{where}" + (f": {detail}" if detail else "")


def chunk_keys(
    store: Store, name: str, rows: tuple[int, int], cols: tuple[int, int] | None = None
) -> list[str]:
    """Paths of the chunk files of array ``name`` that hold rows ``rows`` (and ``cols``).

    Paths are relative to the Zarr group: the array's path and Zarr's chunk key, e.g.
    ``chunk_keys(store, "distances/cnn", (0, 5), (5, 10))`` is ``["distances/cnn/c/0/1"]``
    for blocks of 5. Trailing axes are covered whole.
    """
    arr = _array(store, name)
    ranges = []
    for axis, (start, stop) in enumerate([rows] if cols is None else [rows, cols]):
        c = arr.chunks[axis]
        ranges.append(range(int(start) // c, -(-int(stop) // c)))
    for axis in range(len(ranges), arr.ndim):
        ranges.append(range(arr.cdata_shape[axis]))
    return [f"{name}/{arr.metadata.encode_chunk_key(c)}" for c in itertools.product(*ranges)]


def _crc32c(path: Path) -> str:
    crc = 0
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(1 << 24):
            crc = google_crc32c.extend(crc, block)
    return f"{crc:08x}"


def chunk_checksum(store: Store, chunk: str) -> dict[str, Any] | None:
    """``{"crc32c", "size", "mtime_ns"}`` of the chunk file ``chunk``; None if it is absent.

    ``chunk`` is a path from :func:`chunk_keys`. Zarr leaves a chunk that holds only the
    fill value unwritten, so an absent chunk can be what was written.
    """
    path = store.root / GROUP_NAME / chunk
    try:
        info = os.stat(path)
        crc = _retry_transient(lambda: _crc32c(path))
    except FileNotFoundError:
        return None
    return {CHECKSUM: crc, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _check_chunk(store: Store, chunk: str, want: Any, *, full: bool) -> str | None:
    """What is wrong with one recorded chunk file, or None."""
    path = store.root / GROUP_NAME / chunk
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None if want is None else "the chunk file is missing"
    if not isinstance(want, Mapping) or CHECKSUM not in want:
        return "the record holds no valid checksum" if want is not None else (
            f"a chunk file of {info.st_size} bytes where the record says none was written"
        )  # fmt: skip
    if info.st_size != want.get("size"):
        return f"{info.st_size} bytes, the record says {want.get('size')} (truncated or rewritten)"
    if not full and info.st_mtime_ns == want.get("mtime_ns"):
        return None  # unchanged since it was recorded (size and modification time)
    try:
        crc = _retry_transient(lambda: _crc32c(path))
    except FileNotFoundError:
        return "the chunk file is missing"
    if crc != want[CHECKSUM]:
        return f"{CHECKSUM} {crc}, the record says {want[CHECKSUM]} (its bytes were changed)"
    return None


def verify_records(
    store: Store, stage: str, *, full: bool = True, keys: Sequence[str] | None = None
) -> list[RecordProblem]:
    """Check the completion records of ``stage`` against the chunk files they cover.

    Each record written by this version lists the chunk files its work wrote with their
    CRC32C, size and modification time (:meth:`Store.mark_done`). A chunk is damaged
    when its file is gone (``"missing"``), or its size or bytes differ (``"damaged"``).

    Parameters
    ----------
    store : Store
    stage : str
        E.g. ``"distances.cnn"``.
    full : bool, optional
        Hash every chunk (default). False: hash only chunks whose size or modification
        time changed since they were recorded (what every run does, cheaply: one
        ``stat`` per chunk); a file changed in place with its time restored, or by the
        disk itself, is then found only by a full check (``microscale check``).
    keys : sequence of str, optional
        Check only these units.

    Returns
    -------
    list of RecordProblem
        Damaged or missing chunks, unreadable records, and (kind ``"unverified"``)
        records written before checksums, which are trusted.
    """
    problems = []
    records = store.records(stage)
    for key in records if keys is None else [k for k in keys if k in records]:
        record = records[key]
        if record is None:
            problems.append(RecordProblem(stage, key, "unreadable record", {}))
            continue
        extent = record.get("extent")
        chunks = record.get("chunks")
        if not isinstance(chunks, Mapping):
            problems.append(RecordProblem(stage, key, "unverified", {}, extent))
            continue
        bad = {c: why for c, w in chunks.items() if (why := _check_chunk(store, c, w, full=full))}
        if bad:
            kind = "missing" if all("missing" in why for why in bad.values()) else "damaged"
            problems.append(RecordProblem(stage, key, kind, bad, extent))
    return problems


class Store:
    """An open store: its root, its Zarr group and its bookkeeping.

    Create one with :func:`create_store` or :func:`open_store`. The object caches the
    group's metadata as read at opening; the functions of this module that change the
    layout (appends, :func:`ensure_array`) keep it up to date. A task on a Dask worker
    opens its own ``Store`` from the path.

    Attributes
    ----------
    root : Path
        The store directory.
    group : zarr.Group
        The Zarr group ``root / "store.zarr"``.
    """

    def __init__(self, root: Path, group: zarr.Group) -> None:
        self.root = root
        self.group = group
        self._pending: list[np.ndarray] = []  # tile_image of appended, uncommitted tiles
        self._ids: dict[str, int] | None = None

    def __repr__(self) -> str:
        return (
            f"<microscale Store {str(self.root)!r}: {self.n_images} images, {self.n_tiles} tiles>"
        )

    # --- attributes
    @property
    def attrs(self) -> dict[str, Any]:
        """The group attributes (a copy)."""
        return dict(self.group.attrs)

    @property
    def tile_size(self) -> int:
        """Side ``s`` of the square tiles."""
        return int(self.group.attrs["tile_size"])

    @property
    def tiles_per_chunk(self) -> int:
        """Tiles per chunk of the ``tiles`` array."""
        return int(self.group.attrs["tiles_per_chunk"])

    @property
    def features_chunk(self) -> int:
        """Default rows per chunk of new ``features/<d>`` arrays (one feature batch)."""
        return int(self.group.attrs["features_chunk"])

    @property
    def n_tiles(self) -> int:
        """Committed number of tiles."""
        return int(self.group.attrs["n_tiles"])

    @property
    def n_images(self) -> int:
        """Committed number of images."""
        return int(self.group.attrs["n_images"])

    @property
    def next_image_index(self) -> int:
        """Index the next appended image gets (pass it to :func:`append_tiles`)."""
        last = [int(p[-1]) + 1 for p in self._pending if len(p)]
        return max([self.n_images, *last])

    def image_index(self, image_id: str) -> int | None:
        """Index of the committed image with this content id, or None."""
        if self._ids is None:
            n = self.n_images
            ids = self.group["image_id"][:n] if n else []
            self._ids = {str(v): i for i, v in enumerate(ids)}
        return self._ids.get(image_id)

    # --- completion records
    def _done_path(self, stage: str, key: str) -> Path:
        return self.root / DONE_DIR / _check_name(stage, "stage") / _check_name(key, "key")

    def mark_done(
        self,
        stage: str,
        key: str,
        extent: Any,
        *,
        covers: Sequence[tuple[Any, ...]] = (),
    ) -> None:
        """Record that the work ``key`` of ``stage`` covering ``extent`` is written.

        Call it only after the data are written. The record is a JSON file written
        atomically (temporary file, fsync, rename).

        Parameters
        ----------
        stage : str
            Stage name, e.g. ``"features.cnn"``.
        key : str
            The unit of work, e.g. a chunk index.
        extent : JSON-serialisable
            What the work covered, typically row ranges ``{"rows": [start, stop]}``.
        covers : sequence of (name, rows) or (name, rows, cols)
            The regions of arrays the work wrote, e.g. ``[("features/cnn", (0, 64))]``.
            Each of their chunk files (:func:`chunk_keys`) is read back and its CRC32C,
            size and modification time kept in the record (``"chunks"``), so that
            :func:`verify_records` can tell when the data no longer match the record.
        """
        path = self._done_path(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "stage": stage,
            "key": key,
            "extent": _jsonable(extent),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": _now(),
        }
        if covers:
            chunks = [c for region in covers for c in chunk_keys(self, *region)]
            record["chunks"] = {c: chunk_checksum(self, c) for c in dict.fromkeys(chunks)}
        atomic_write(path, json.dumps(record, sort_keys=True).encode())

    def records(self, stage: str) -> dict[str, dict[str, Any] | None]:
        """Every completion record of ``stage``: key -> the record (None when unreadable)."""
        folder = self.root / DONE_DIR / _check_name(stage, "stage")
        if not folder.is_dir():
            return {}
        return {
            path.name: self._read_record(path)
            for path in sorted(folder.iterdir())
            if not path.name.startswith(".")
        }

    def stages(self) -> list[str]:
        """The stages that have completion records (folders of ``_done``)."""
        folder = self.root / DONE_DIR
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and _NAME.match(p.name))

    def drop_done(self, stage: str, key: str) -> list[str]:
        """Delete the record of ``key`` and the chunk files it covers; the chunks deleted.

        For a unit whose data are damaged: without a record it is computed again, and
        without its chunks nothing reads the damaged bytes meanwhile (a chunk file that
        is absent reads as the fill value, NaN). Driver-side, under the run lock.
        """
        path = self._done_path(stage, key)
        record = self._read_record(path)
        removed = []
        chunks = record.get("chunks") if record else None
        if isinstance(chunks, Mapping):
            for chunk in chunks:
                if not isinstance(chunk, str) or ".." in chunk.split("/"):
                    continue  # never outside the group
                with contextlib.suppress(FileNotFoundError):
                    (self.root / GROUP_NAME / chunk).unlink()
                    removed.append(chunk)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return removed

    def is_done(self, stage: str, key: str, extent: Any) -> bool:
        """Whether ``key`` of ``stage`` has a completion record for exactly ``extent``."""
        record = self._read_record(self._done_path(stage, key))
        return record is not None and record.get("extent") == _jsonable(extent)

    def done_keys(self, stage: str) -> dict[str, Any]:
        """Every recorded key of ``stage`` with the extent it covered."""
        folder = self.root / DONE_DIR / _check_name(stage, "stage")
        if not folder.is_dir():
            return {}
        out = {}
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            record = self._read_record(path)
            if record is not None:
                out[path.name] = record.get("extent")
        return out

    def done_digest(self, stage: str) -> str:
        """sha256 of every completion record of ``stage``, names and contents.

        It changes whenever a unit of the stage is recomputed, added or dropped: what a
        result derived from the whole stage (an embedding of the distance matrix) records
        to tell whether its inputs are still those it was computed from.
        """
        folder = self.root / DONE_DIR / _check_name(stage, "stage")
        digest = hashlib.sha256()
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.name.startswith("."):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    data = path.read_bytes()
                    digest.update(f"{path.name}\0{len(data)}\0".encode())
                    digest.update(data)
        return digest.hexdigest()

    def clear_done(self, stage: str, key: str | None = None) -> int:
        """Delete the record of ``key`` (or every record of ``stage``); return how many."""
        if key is not None:
            try:
                self._done_path(stage, key).unlink()
            except FileNotFoundError:
                return 0
            return 1
        folder = self.root / DONE_DIR / _check_name(stage, "stage")
        paths = (
            [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []
        )
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return len(paths)

    @staticmethod
    def _read_record(path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # unreadable: treated as not done, the work is redone
        return record if isinstance(record, dict) else None

    # --- the run lock
    @contextlib.contextmanager
    def lock(self, *, blocking: bool = False) -> Iterator[Store]:
        """Hold the store's run lock for the ``with`` block (:func:`microscale.lock.store_lock`).

        The lock is an exclusive ``fcntl.flock`` on ``ROOT/.lock``, which records the
        holder's pid, host and start time. It is re-entrant within one process (a run
        that holds it calls stages that take it again) and released when its process
        exits; a lock left by a dead process of this host is taken over, one named by
        another host is refused with how to break it.

        Parameters
        ----------
        blocking : bool, optional
            Wait for the lock instead of failing at once.

        Raises
        ------
        StoreLockedError
            If another process holds the lock (and ``blocking`` is False).
        """
        with store_lock(self.root, blocking=blocking):
            yield self


# --------------------------------------------------------------------------- create / open


def _as_store(store: Store | str | os.PathLike[str]) -> Store:
    return store if isinstance(store, Store) else open_store(store)


def create_store(
    root: str | os.PathLike[str],
    *,
    tile_size: int,
    tiles_per_chunk: int = 64,
    features_chunk: int | None = None,
    attrs: Mapping[str, Any] | None = None,
    exist_ok: bool = False,
) -> Store:
    """Create an empty store at ``root`` (see the module docstring for the layout).

    Parameters
    ----------
    root : path
        The store directory; created if absent (it may exist and hold other files).
    tile_size : int
        Side ``s`` of the square tiles, >= 1.
    tiles_per_chunk : int, optional
        Tiles per chunk of ``tiles`` (64 tiles of 256 x 256 float32 are 16 MiB).
    features_chunk : int, optional
        Rows per chunk of the ``features/<d>`` arrays: one feature batch, written by one
        task. Default ``tiles_per_chunk``.
    attrs : mapping, optional
        Further group attributes (JSON values), e.g. the intensity normalisation of the
        tiles.
    exist_ok : bool, optional
        Open an existing store instead of failing, if its tile size is the same.

    Returns
    -------
    Store

    Raises
    ------
    StoreExistsError
        If a store exists at ``root`` and ``exist_ok`` is False.
    StoreError
        If ``exist_ok`` is True but the existing store has another tile size.
    """
    s = check_int(tile_size, "tile_size", minimum=1)
    per_chunk = check_int(tiles_per_chunk, "tiles_per_chunk", minimum=1)
    f_chunk = (
        per_chunk
        if features_chunk is None
        else check_int(features_chunk, "features_chunk", minimum=1)
    )
    root = Path(root)
    if (root / GROUP_NAME / "zarr.json").exists():
        if not exist_ok:
            raise StoreExistsError(
                f"A microscale store already exists at {root}. Open it with open_store, or "
                "pass exist_ok=True."
            )
        store = open_store(root)
        if store.tile_size != s:
            raise StoreError(
                f"The store at {root} holds {store.tile_size}-pixel tiles, not {s}. Use "
                f"tile_size={store.tile_size} or a new store."
            )
        return store
    root.mkdir(parents=True, exist_ok=True)
    group_attrs = dict(attrs or {})
    group_attrs.update(
        microscale_store=FORMAT_VERSION,
        tile_size=s,
        tiles_per_chunk=per_chunk,
        features_chunk=f_chunk,
        n_tiles=0,
        n_images=0,
        created=_now(),
    )
    group = zarr.open_group(root / GROUP_NAME, mode="w", attributes=_jsonable(group_attrs))
    rows = 4096  # chunk length of the per-tile and per-image tables
    specs = [
        ("tiles", (0, s, s), (per_chunk, s, s), np.float32, ("tile", "y", "x"), np.nan),
        ("tile_image", (0,), (rows,), np.int64, ("tile",), -1),
        ("tile_origin", (0, 2), (rows, 2), np.int32, ("tile", "corner"), -1),
        ("tile_weight", (0,), (rows,), np.float64, ("tile",), np.nan),
        ("image_id", (0,), (rows,), _STRING, ("image",), ""),
        ("image_path", (0,), (rows,), _STRING, ("image",), ""),
        ("pixel_size_nm", (0,), (rows,), np.float64, ("image",), np.nan),
        ("image_tiles", (0, 2), (rows, 2), np.int64, ("image", "bound"), -1),
        *_crop_specs(0),
    ]
    for name, shape, chunks, dtype, dims, fill in specs:
        group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=fill,
            dimension_names=dims,
        )
    return Store(root, group)


def open_store(root: str | os.PathLike[str], *, mode: str = "r+") -> Store:
    """Open the store at ``root``.

    Parameters
    ----------
    root : path
        The store directory.
    mode : {"r+", "r"}, optional
        Read-write (default) or read-only.

    Returns
    -------
    Store

    Raises
    ------
    StoreNotFoundError
        If ``root`` holds no microscale store.
    """
    if mode not in ("r", "r+"):
        raise ValueError(f"The 'mode' parameter must be 'r' or 'r+'. Got {mode!r} instead.")
    root = Path(root)
    if not (root / GROUP_NAME / "zarr.json").is_file():
        raise StoreNotFoundError(
            f"No microscale store at {root} (no {GROUP_NAME}/zarr.json). Create one with "
            "create_store, or check the path."
        )
    group = zarr.open_group(root / GROUP_NAME, mode=mode)
    version = group.attrs.get("microscale_store")
    if version != FORMAT_VERSION:
        raise StoreError(
            f"{root} is not a microscale store of format {FORMAT_VERSION} "
            f"(microscale_store = {version!r})."
        )
    return Store(root, group)


# --------------------------------------------------------------------------- appending


_TILE_ARRAYS = ("tiles", "tile_image", "tile_origin", "tile_weight")
_IMAGE_ARRAYS = ("image_id", "image_path", "pixel_size_nm", "image_tiles")
_CROP_ARRAYS = ("crop_rows", "crop_source")


def _crop_specs(n: int) -> list[tuple[str, tuple[int, ...], tuple[int, ...], Any, tuple, Any]]:
    """Specs of the per-image crop arrays, ``n`` rows long (4096-row chunks)."""
    return [
        ("crop_rows", (n, 2), (4096, 2), np.int32, ("image", "edge"), -1),
        ("crop_source", (n,), (4096,), _STRING, ("image",), ""),
    ]


def _ensure_crop_arrays(group: zarr.Group, n: int) -> None:
    """Create the crop arrays of a store made before they existed (rows "not recorded")."""
    for name, shape, chunks, dtype, dims, fill in _crop_specs(n):
        if name not in group:
            group.create_array(
                name,
                shape=shape,
                chunks=chunks,
                dtype=dtype,
                fill_value=fill,
                dimension_names=dims,
            )


def _resize_rows(group: zarr.Group, names: Sequence[str], n: int) -> None:
    for name in names:
        arr = group[name]
        if arr.shape[0] != n:
            arr.resize((n, *arr.shape[1:]))


def append_tiles(
    store: Store,
    tiles: ArrayLike,
    *,
    image_index: ArrayLike,
    origins: ArrayLike,
    weights: ArrayLike,
) -> tuple[int, int]:
    """Write tiles past the committed end; :func:`append_images` commits them.

    Tiles must arrive grouped by image, in image order, and belong to images not yet
    committed: the first image is ``store.n_images`` and indices never decrease, across
    calls too (an image's tiles may be split over several calls;
    :attr:`Store.next_image_index` is the index of the next new image). Until
    :func:`append_images` commits them the rows are invisible (``store.n_tiles`` does not
    count them), and a crash simply loses them.

    Parameters
    ----------
    store : Store
        Opened read-write. One process appends at a time (hold :meth:`Store.lock`).
    tiles : (t, s, s) array_like
        Tiles, finite; stored as float32. The features stage expects intensities already
        normalised to [0, 1] per image.
    image_index : (t,) array_like of int
        Index of each tile's image.
    origins : (t, 2) array_like of int
        (row, column) of each tile's top-left pixel in its image.
    weights : (t,) array_like of float
        Non-negative weight of each tile in its image's mean: the number of real (not
        padded) pixels it holds.

    Returns
    -------
    (start, stop) : tuple of int
        The rows written.
    """
    s = store.tile_size
    arr = np.asarray(tiles)
    if arr.ndim != 3 or arr.shape[1:] != (s, s):
        raise StoreError(
            f"tiles must have shape (t, {s}, {s}) for this store's {s}-pixel tiles. Got "
            f"{arr.shape} instead."
        )
    t = arr.shape[0]
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise StoreError("tiles contain NaN or infinite pixels; replace or mask them first.")
    idx = np.asarray(image_index)
    org = np.asarray(origins)
    w = np.asarray(weights, dtype=np.float64)
    if idx.shape != (t,) or not np.issubdtype(idx.dtype, np.integer):
        raise StoreError(f"image_index must be ({t},) integers, one per tile. Got {idx.shape}.")
    if org.shape != (t, 2):
        raise StoreError(f"origins must have shape ({t}, 2). Got {org.shape} instead.")
    if w.shape != (t,) or not (np.isfinite(w).all() and (w >= 0).all()):
        raise StoreError(f"weights must be ({t},) finite non-negative numbers, one per tile.")
    if t == 0:
        return (store.n_tiles + sum(len(p) for p in store._pending),) * 2
    first = max(store.n_images, store.next_image_index - 1)
    if idx[0] < first or (np.diff(idx) < 0).any():
        raise StoreError(
            f"image_index must not decrease and must start at {first} or later (images "
            f"0..{store.n_images - 1} are committed). Got {idx[0]}..{idx[-1]}."
        )
    start = store.n_tiles + sum(len(p) for p in store._pending)
    stop = start + t
    group = store.group
    for name in _TILE_ARRAYS:
        a = group[name]
        if a.shape[0] < stop:
            a.resize((stop, *a.shape[1:]))
    group["tiles"][start:stop] = arr
    group["tile_image"][start:stop] = idx.astype(np.int64)
    group["tile_origin"][start:stop] = org.astype(np.int32)
    group["tile_weight"][start:stop] = w
    store._pending.append(idx.astype(np.int64))
    return start, stop


def append_images(
    store: Store,
    *,
    image_ids: Sequence[str],
    paths: Sequence[str],
    pixel_size_nm: ArrayLike | None = None,
    crop_rows: ArrayLike | None = None,
    crop_source: Sequence[str] | None = None,
) -> tuple[int, int]:
    """Commit the images whose tiles were appended by :func:`append_tiles`.

    Writes the image rows, then sets the group attributes ``n_tiles`` and ``n_images``
    (the commit), then adds the paths to the manifest.

    Parameters
    ----------
    store : Store
        The store :func:`append_tiles` wrote to (same object).
    image_ids : sequence of str
        Content ids (hashes) of the new images, in index order, not yet in the store.
    paths : sequence of str
        The path each image was read from.
    pixel_size_nm : (m,) array_like, optional
        Physical pixel sizes; NaN (or None) when unknown.
    crop_rows : (m, 2) array_like of int, optional
        Rows of information bar cut from the top and the bottom of each image; -1 (the
        default) when not recorded.
    crop_source : sequence of str, optional
        How each crop was found (e.g. ``"detected"``, ``"fei-metadata"``, ``"user"``,
        ``"none"``); ``""`` (the default) when not recorded.

    Returns
    -------
    (start, stop) : tuple of int
        The indices of the committed images.

    Raises
    ------
    StoreError
        If an id is already in the store or repeated, or if the pending tiles do not
        belong to exactly these images (each image needs at least one tile).
    """
    ids = [str(v) for v in image_ids]
    m = len(ids)
    if len(paths) != m:
        raise StoreError(f"{m} image ids but {len(paths)} paths; give one path per image.")
    if pixel_size_nm is None:
        px = np.full(m, np.nan)
    else:
        px = np.array([np.nan if v is None else v for v in np.atleast_1d(pixel_size_nm)], float)
        if px.shape != (m,):
            raise StoreError(f"pixel_size_nm must have one entry per image ({m}).")
    crop = np.full((m, 2), -1, np.int32) if crop_rows is None else np.asarray(crop_rows)
    sources = [""] * m if crop_source is None else [str(v) for v in crop_source]
    if crop.shape != (m, 2) or len(sources) != m:
        raise StoreError(
            f"crop_rows must be ({m}, 2) and crop_source {m} long: one entry per image."
        )
    if len(set(ids)) != m:
        raise StoreError("image_ids contains duplicates; store each content once.")
    known = [i for i in ids if store.image_index(i) is not None]
    if known:
        raise StoreError(
            f"Image {known[0]!r} is already in the store (index {store.image_index(known[0])});"
            " record its new path with record_files instead of appending it again."
        )
    n0 = store.n_images
    tile_image = np.concatenate(store._pending) if store._pending else np.empty(0, np.int64)
    t0 = store.n_tiles
    expected = np.arange(n0, n0 + m)
    present = np.unique(tile_image)
    if not np.array_equal(present, expected):
        raise StoreError(
            f"The pending tiles belong to images {present.tolist()[:10]} but images "
            f"{n0}..{n0 + m - 1} are being committed; every new image needs its tiles "
            "appended first (at least one each)."
        )
    starts = t0 + np.searchsorted(tile_image, expected, side="left")
    stops = t0 + np.searchsorted(tile_image, expected, side="right")
    t1 = t0 + len(tile_image)
    group = store.group
    _ensure_crop_arrays(group, n0)
    _resize_rows(group, _IMAGE_ARRAYS + _CROP_ARRAYS, n0 + m)
    _resize_rows(group, _TILE_ARRAYS, t1)  # drops rows left by a crashed append
    if m:
        group["image_id"][n0 : n0 + m] = np.array(ids, dtype=object)
        group["image_path"][n0 : n0 + m] = np.array([str(p) for p in paths], dtype=object)
        group["pixel_size_nm"][n0 : n0 + m] = px
        group["image_tiles"][n0 : n0 + m] = np.stack([starts, stops], axis=1)
        group["crop_rows"][n0 : n0 + m] = crop.astype(np.int32)
        group["crop_source"][n0 : n0 + m] = np.array(sources, dtype=object)
    group.attrs.update({"n_tiles": int(t1), "n_images": int(n0 + m)})  # the commit
    store._pending.clear()
    record_tile_chunks(store, t0, t1)
    if store._ids is not None:
        store._ids.update({i: n0 + k for k, i in enumerate(ids)})
    _update_manifest(store, images={i: [str(p)] for i, p in zip(ids, paths, strict=True)})
    return n0, n0 + m


def tile_chunks(store: Store, start: int = 0, stop: int | None = None) -> list[Any]:
    """The chunks of ``tiles`` holding committed tiles ``start:stop``: (key, rows) each.

    ``key`` names the chunk's completion record (stage :data:`TILES_STAGE`), ``rows`` the
    committed tiles ``[a, b)`` it holds.
    """
    n = store.n_tiles
    start, stop = _check_range(start, stop, n, "tiles")
    c = store.tiles_per_chunk
    keys = range(start // c, -(-stop // c)) if stop > start else range(0)
    return [(f"{k:09d}", (k * c, min((k + 1) * c, n))) for k in keys]


def record_tile_chunks(store: Store, start: int, stop: int) -> None:
    """Write the completion records (with checksums) of the tile chunks of ``start:stop``.

    Called by :func:`append_images` after each commit, for the chunks it wrote (the last
    chunk is written again, and recorded again, while it fills), and by the ingest stage
    when it rebuilds damaged tile chunks. Driver-side, under the run lock.
    """
    for key, rows in tile_chunks(store, start, stop):
        store.mark_done(TILES_STAGE, key, {"rows": list(rows)}, covers=[("tiles", rows)])


# --------------------------------------------------------------------------- manifest


def _merge_manifest(data: dict[str, Any], update: Mapping[str, Any]) -> None:
    for image_id, paths in (update.get("images") or {}).items():
        known = data["images"].setdefault(image_id, [])
        known.extend(p for p in paths if p not in known)
    for path, outcome in (update.get("files") or {}).items():
        data["files"][str(path)] = dict(outcome)


def read_manifest(store: Store | str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest: which paths hold each image, and what happened to each file.

    The manifest is the log ``images.jsonl``: each update (a batch of ingested files) is
    appended as one JSON line and never rewritten, so recording ``n`` files costs ``O(n)``
    in all rather than rewriting a growing document per batch. Reading replays the lines
    in order (a later outcome of a path replaces an earlier one; paths of an image
    accumulate). A last line cut short by a crash is ignored (its files are re-ingested
    by the next run and recorded again). Stores written before the log keep their
    ``images.json``, which is read first.

    Returns
    -------
    dict
        ``{"images": {image_id: [path, ...]}, "files": {path: {"status": ...,
        "reason": ..., "image_id": ...}}}``. ``status`` is ``"processed"``, ``"skipped"``
        (e.g. a duplicate, or not an image) or ``"failed"``.
    """
    root = store.root if isinstance(store, Store) else Path(store)
    data: dict[str, Any] = {"images": {}, "files": {}}
    with contextlib.suppress(FileNotFoundError):
        _merge_manifest(data, json.loads((root / LEGACY_MANIFEST_NAME).read_text()))
    try:
        raw = _retry_transient((root / MANIFEST_NAME).read_bytes)
    except FileNotFoundError:
        return data
    for line in raw.split(b"\n")[:-1]:  # the last piece is empty, or a torn write
        if line.strip():
            _merge_manifest(data, json.loads(line))
    return data


def _update_manifest(
    store: Store,
    *,
    images: Mapping[str, Sequence[str]] | None = None,
    files: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Append one update to the manifest log (by the single ingesting process)."""
    update = {"images": dict(images or {}), "files": {str(k): v for k, v in (files or {}).items()}}
    line = json.dumps(update, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path = store.root / MANIFEST_NAME
    with open(path, "ab+") as fh:
        end = fh.seek(0, os.SEEK_END)
        if end:  # drop a line a crash cut short, so that the new one starts a line
            fh.seek(max(0, end - 1))
            if fh.read(1) != b"\n":
                fh.seek(0)
                keep = fh.read().rfind(b"\n") + 1
                fh.truncate(keep)
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def record_files(store: Store, outcomes: Mapping[str, Mapping[str, Any]]) -> None:
    """Record what happened to each input file, in the manifest.

    Parameters
    ----------
    store : Store
        Opened read-write, by the single ingesting process.
    outcomes : mapping path -> mapping
        ``{"status": "processed" | "skipped" | "failed", "reason": str (optional),
        "image_id": str (optional)}``. A path with an ``image_id`` is added to that
        image's list of paths (how duplicates are recorded: computed once, every path
        kept).
    """
    files: dict[str, dict[str, Any]] = {}
    images: dict[str, list[str]] = {}
    for path, outcome in outcomes.items():
        status = outcome.get("status")
        if status not in FILE_STATUSES:
            raise StoreError(
                f"The outcome of {path!r} has status {status!r}; use one of {FILE_STATUSES}."
            )
        files[str(path)] = _jsonable(dict(outcome))
        if outcome.get("image_id"):
            images.setdefault(str(outcome["image_id"]), []).append(str(path))
    _update_manifest(store, images=images, files=files)


# --------------------------------------------------------------------------- reading


def _check_range(start: int, stop: int | None, n: int, what: str) -> tuple[int, int]:
    stop = n if stop is None else int(stop)
    start = int(start)
    if not 0 <= start <= stop <= n:
        raise StoreError(f"Rows {start}:{stop} are outside the {n} {what} of the store.")
    return start, stop


def read_tiles(store: Store, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Committed tiles ``start:stop``, a (t, s, s) float32 array."""
    start, stop = _check_range(start, stop, store.n_tiles, "tiles")
    return _retry_transient(lambda: store.group["tiles"][start:stop])


def tile_table(store: Store, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """Per-tile provenance of the committed tiles ``start:stop``.

    Returns
    -------
    dict
        ``tile_image`` (t,) int64, ``tile_origin`` (t, 2) int32, ``tile_weight`` (t,)
        float64.
    """
    start, stop = _check_range(start, stop, store.n_tiles, "tiles")
    return {name: store.group[name][start:stop] for name in _TILE_ARRAYS[1:]}


def image_table(store: Store, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """The committed image table, rows ``start:stop``.

    Returns
    -------
    dict
        ``image_id`` (m,) and ``image_path`` (m,): object arrays of str;
        ``pixel_size_nm`` (m,) float64; ``image_tiles`` (m, 2) int64 ([start, stop) of
        each image's tiles); ``crop_rows`` (m, 2) int32 (info-bar rows cut at the top and
        at the bottom, -1 when not recorded) and ``crop_source`` (m,) object array of str
        (``""`` when not recorded: images of a store made before crops were recorded).
    """
    start, stop = _check_range(start, stop, store.n_images, "images")
    out = {name: store.group[name][start:stop] for name in _IMAGE_ARRAYS}
    n = stop - start
    for name, fill in (("crop_rows", np.full((n, 2), -1, np.int32)), ("crop_source", [""] * n)):
        out[name] = store.group[name][start:stop] if name in store.group else fill
    for name in ("image_id", "image_path", "crop_source"):
        out[name] = np.asarray(out[name]).astype(object)
    return out


def has_array(store: Store, name: str) -> bool:
    """Whether the array ``name`` (e.g. ``"features/cnn"``) exists."""
    try:
        node = store.group[name]
    except KeyError:
        return False
    return isinstance(node, zarr.Array)


def _array(store: Store, name: str) -> zarr.Array:
    if not has_array(store, name):
        raise StoreError(f"The store {store.root} has no array {name!r}; run its stage first.")
    return store.group[name]


def array_shape(store: Store, name: str) -> tuple[int, ...]:
    """Shape of the array ``name``."""
    return tuple(_array(store, name).shape)


def array_chunks(store: Store, name: str) -> tuple[int, ...]:
    """Chunk shape of the array ``name``."""
    return tuple(_array(store, name).chunks)


def array_attrs(store: Store, name: str) -> dict[str, Any]:
    """Attributes of the array ``name`` (a copy)."""
    return dict(_array(store, name).attrs)


def read_rows(
    store: Store,
    name: str,
    start: int = 0,
    stop: int | None = None,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Rows ``start:stop`` of the array ``name``, as numpy.

    Examples: ``read_rows(store, "image_features/cnn", 0, 1024)`` is (1024, 305888)
    float32; ``read_rows(store, "distances/cnn")`` is the whole (n, n) matrix.

    ``out``, a C-contiguous array of the rows' shape and dtype, receives the rows (and is
    returned). Reading into a reused buffer avoids the page faults of fresh memory, which
    on some machines cost more than the copy itself (measured: 0.3-0.7 GB/s into fresh
    memory, 2 GB/s into a reused buffer).
    """
    arr = _array(store, name)
    start, stop = _check_range(start, stop, arr.shape[0], f"rows of {name!r} in")
    if out is None:
        return _retry_transient(lambda: arr[start:stop])
    want = (stop - start, *arr.shape[1:])
    if out.shape != want or out.dtype != arr.dtype or not out.flags.c_contiguous:
        raise StoreError(
            f"out must be a C-contiguous {arr.dtype} array of shape {want} for rows "
            f"{start}:{stop} of {name!r}; got {out.dtype} {out.shape}."
        )
    if _retry_transient(lambda: _read_plain_rows(arr, start, stop, out)):
        return out
    from zarr.core.buffer import default_buffer_prototype

    target = default_buffer_prototype().nd_buffer.from_numpy_array(out)
    _retry_transient(lambda: arr.get_basic_selection(slice(start, stop), out=target))
    return out


def _read_plain_rows(arr: zarr.Array, start: int, stop: int, out: np.ndarray) -> bool:
    """Rows ``start:stop`` read from the chunk files straight into ``out``; False if not
    possible (then Zarr reads them).

    An uncompressed array on a local disk whose chunks hold whole rows (every array this
    module creates) keeps each chunk as a file of raw little-endian rows, so a block of
    rows is ``readinto`` calls on those files: one copy, from the page cache into ``out``.
    Zarr's own read copies each chunk twice (into a fresh buffer, then into ``out``) and
    ran 2.2-2.8x slower (1024 texture vectors on a shared 2-core VM,
    ``benchmarks/bench_distances.py``). Anything else (compression, another codec or byte
    order, a missing or short chunk file: the fill value, or an error Zarr reports) is
    left to Zarr.
    """
    meta = arr.metadata
    codecs = getattr(meta, "codecs", ())
    local = isinstance(arr.store, zarr.storage.LocalStore)
    if not (local and len(codecs) == 1 and isinstance(codecs[0], zarr.codecs.BytesCodec)):
        return False
    little = codecs[0].endian is None or codecs[0].endian.value == "little"
    if not (little and np.little_endian):
        return False
    if tuple(arr.chunks[1:]) != tuple(arr.shape[1:]) or stop <= start:
        return False
    c, row_bytes = arr.chunks[0], out.nbytes // (stop - start)
    base = Path(arr.store.root) / arr.path
    tail = (0,) * (arr.ndim - 1)
    parts = []
    for k in range(start // c, -(-stop // c)):
        path = base / meta.encode_chunk_key((k, *tail))
        try:
            if os.stat(path).st_size != c * row_bytes:
                return False
        except FileNotFoundError:
            return False
        a, b = max(start, k * c), min(stop, (k + 1) * c)
        parts.append((path, (a - k * c) * row_bytes, (a - start) * row_bytes, (b - a) * row_bytes))
    view = memoryview(out.reshape(-1).view(np.uint8))
    for path, offset, at, size in parts:
        fd = os.open(path, os.O_RDONLY)
        try:
            done = 0
            while done < size:
                got = os.preadv(fd, [view[at + done : at + size]], offset + done)
                if got == 0:
                    return False  # cut short since the stat: let Zarr say what is wrong
                done += got
        finally:
            os.close(fd)
    return True


def read_array(store: Store, name: str) -> np.ndarray:
    """The whole array ``name``."""
    arr = _array(store, name)
    return _retry_transient(lambda: arr[...])


def read_row_selection(store: Store, name: str, indices: ArrayLike) -> np.ndarray:
    """The rows ``indices`` (any order, repeats allowed) of the array ``name``, as numpy.

    Only the chunks that hold them are read (Zarr's orthogonal selection), each once.

    Examples: ``read_row_selection(store, "image_features/cnn", [5, 2])`` is (2, d).
    """
    arr = _array(store, name)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = arr.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise StoreError(f"Rows {idx.min()}..{idx.max()} are outside the {n} rows of {name!r}.")
    if not idx.size:
        return np.empty((0, *arr.shape[1:]), dtype=arr.dtype)
    order = np.argsort(idx, kind="stable")
    uniq, inverse = np.unique(idx[order], return_inverse=True)
    rows = _retry_transient(
        lambda: arr.get_orthogonal_selection((uniq,) + (slice(None),) * (arr.ndim - 1))
    )
    out = np.empty((idx.size, *arr.shape[1:]), dtype=arr.dtype)
    out[order] = rows[inverse]
    return out


# --------------------------------------------------------------------------- arrays


def ensure_array(
    store: Store,
    name: str,
    *,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: DTypeLike,
    dimension_names: tuple[str, ...],
    attrs: Mapping[str, Any] | None = None,
    fill_value: Any = None,
) -> bool:
    """Create the array ``name``, or grow an existing one to ``shape``.

    Driver-side only (under the run lock, before tasks that write it are submitted).
    An existing array must have the same chunks, dtype and ``attrs`` (for the keys given:
    they identify what the array holds, e.g. the VGG layers), and may only grow. Growing
    keeps every chunk already written. The temporary chunk files of an existing array left
    by writers killed mid-write are removed. New arrays are uncompressed (texture vectors and
    distances do not compress) with fill value NaN (``fill_value``, e.g. -1 for an integer
    array, when given).

    Returns
    -------
    bool
        True if the array was created.

    Raises
    ------
    StoreError
        If the existing array differs in chunks, dtype or ``attrs``, or is larger.
    """
    want = _jsonable(dict(attrs or {}))
    dtype = np.dtype(dtype)
    if has_array(store, name):
        arr = store.group[name]
        have = dict(arr.attrs)
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            detail = "; ".join(f"{k}: stored {a!r}, asked {b!r}" for k, (a, b) in diff.items())
            raise StoreError(
                f"{name!r} in {store.root} was computed with other settings ({detail}). "
                f"Use the stored settings, or delete {name!r} to recompute it."
            )
        if tuple(arr.chunks) != tuple(chunks) or arr.dtype != dtype:
            raise StoreError(
                f"{name!r} in {store.root} has chunks {arr.chunks} and dtype {arr.dtype}, "
                f"not {tuple(chunks)} and {dtype}. Use the same block/batch size as before, "
                f"or delete {name!r} (and its completion records) to start it afresh."
            )
        if len(arr.shape) != len(shape) or any(
            a > b for a, b in zip(arr.shape, shape, strict=True)
        ):
            raise StoreError(
                f"{name!r} has shape {arr.shape}; it can grow to {tuple(shape)} but never "
                "shrink (images are append-only)."
            )
        if tuple(arr.shape) != tuple(shape):
            arr.resize(tuple(shape))
        _remove_partial_writes(store, name)
        return False
    parent, _, leaf = name.rpartition("/")
    group = store.group.require_group(parent) if parent else store.group
    group.create_array(
        leaf,
        shape=tuple(shape),
        chunks=tuple(chunks),
        dtype=dtype,
        fill_value=np.nan if fill_value is None else fill_value,
        compressors=None,
        dimension_names=tuple(dimension_names),
        attributes=want,
    )
    return True


def delete_array(store: Store, name: str) -> bool:
    """Delete the array ``name`` (driver-side, under the run lock); whether it existed.

    For arrays whose settings changed (e.g. the landmarks of a store, the ``k`` of its
    neighbours): they are recomputed from scratch by their stage.
    """
    if not has_array(store, name):
        return False
    parent, _, leaf = name.rpartition("/")
    group = store.group[parent] if parent else store.group
    del group[leaf]
    return True


def ensure_features_array(
    store: Store,
    name: str,
    n_features: int,
    *,
    n_rows: int,
    chunk_rows: int,
    dtype: DTypeLike = np.float32,
    row_dim: str = "tile",
    attrs: Mapping[str, Any] | None = None,
) -> bool:
    """Create or grow a (rows, n_features) array, e.g. ``"features/cnn"``.

    Parameters
    ----------
    store : Store
    name : str
        ``"features/<d>"`` (rows = tiles, ``chunk_rows`` = one feature batch) or
        ``"image_features/<d>"`` (rows = images, ``chunk_rows`` dividing the images of one
        task; 1 in older stores).
    n_features : int
        Length of a feature vector: of its sketch when the vectors are sketched (the
        ``"sketch"`` attribute, see :func:`microscale.stages.features.run_features`).
    n_rows : int
        Rows the array must hold.
    chunk_rows : int
        Rows per chunk; a chunk holds whole vectors.
    dtype : numpy dtype, optional
    row_dim : str, optional
        Name of the row dimension (``"tile"`` or ``"image"``).
    attrs : mapping, optional
        Settings that define the content (descriptor options); checked on reuse.

    Returns
    -------
    bool
        True if the array was created.
    """
    d = check_int(n_features, "n_features", minimum=1)
    rows = check_int(n_rows, "n_rows", minimum=0)
    c = check_int(chunk_rows, "chunk_rows", minimum=1)
    return ensure_array(
        store,
        name,
        shape=(rows, d),
        chunks=(c, d),
        dtype=dtype,
        dimension_names=(row_dim, "feature"),
        attrs=attrs,
    )


def ensure_distance_matrix(
    store: Store, name: str, n: int, block: int, *, attrs: Mapping[str, Any] | None = None
) -> bool:
    """Create or grow the (n, n) float64 distance matrix ``name`` in (block, block) chunks.

    Raises
    ------
    StoreError
        If the matrix exists with another block size.
    """
    n = check_int(n, "n", minimum=0)
    b = check_int(block, "block", minimum=1)
    return ensure_array(
        store,
        name,
        shape=(n, n),
        chunks=(b, b),
        dtype=np.float64,
        dimension_names=("image", "image_2"),
        attrs=attrs,
    )


def write_block(
    store: Store,
    name: str,
    data: ArrayLike,
    *,
    rows: tuple[int, int],
    cols: tuple[int, int] | None = None,
) -> None:
    """Write whole chunks of the array ``name``: rows ``rows`` (and columns ``cols``).

    This is how tasks write: a region made of whole chunks has one writer and needs no
    read-modify-write. A region ends at a chunk boundary or at the end of the array.

    Parameters
    ----------
    store : Store
    name : str
        The array, e.g. ``"features/cnn"`` or ``"distances/cnn"``.
    data : array_like
        ``(stop - start, ...)``, or ``(rows, cols)`` for a 2-D block of a matrix. Trailing
        axes (those not given by ``rows``/``cols``) are written whole.
    rows, cols : (start, stop)
        The region along the first (and second) axis.

    Raises
    ------
    StoreError
        If the region is not made of whole chunks or the data's shape does not match.
    OSError
        If the file system refuses the write (e.g. ``ENOSPC``: it is full). No chunk is
        half-written, and the caller's completion record is not written.
    """
    arr = _array(store, name)
    region = [rows] if cols is None else [rows, cols]
    index = []
    for axis, (start, stop) in enumerate(region):
        start, stop = int(start), int(stop)
        c, n = arr.chunks[axis], arr.shape[axis]
        if not (0 <= start < stop <= n) or start % c or (stop % c and stop != n):
            raise StoreError(
                f"Region {start}:{stop} along axis {axis} of {name!r} (length {n}, chunks of "
                f"{c}) is not made of whole chunks; a task may only write whole chunks."
            )
        index.append(slice(start, stop))
    data = np.asarray(data)
    expected = tuple(s.stop - s.start for s in index) + tuple(arr.shape[len(index) :])
    if data.shape != expected:
        raise StoreError(
            f"Data of shape {data.shape} does not fit a region of shape {expected} of {name!r}."
        )
    try:
        arr[tuple(index)] = data
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            exc.add_note(
                f"microscale: the file system of {store.root} is full (or over quota) while "
                f"writing {name!r}; this work is not marked done. Free space and re-run the "
                "stage: only the work without a completion record is computed."
            )
        raise


def write_array(
    store: Store, name: str, data: ArrayLike, *, attrs: Mapping[str, Any] | None = None
) -> None:
    """(Over)write a small array whole, in one chunk, then set its attributes.

    Driver-side only, for small results (the distance centre, embeddings). The
    attributes are written after the data, so attributes that say what the data are
    (e.g. how many images a centre covers) never describe data that are not there.
    """
    data = np.asarray(data)
    parent, _, leaf = name.rpartition("/")
    group = store.group.require_group(parent) if parent else store.group
    chunks = tuple(max(1, s) for s in data.shape)
    arr = group.create_array(
        leaf,
        shape=data.shape,
        chunks=chunks,
        dtype=data.dtype,
        fill_value=np.nan if data.dtype.kind == "f" else 0,
        compressors=None,
        overwrite=True,
    )
    if data.size:
        arr[...] = data
    if attrs:
        arr.attrs.update(_jsonable(dict(attrs)))
