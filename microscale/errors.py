"""Every error microscale raises on purpose, under one base class.

Each class derives from :class:`MicroscaleError` *and* from the built-in exception it
refines, so ``except MicroscaleError`` catches all of them while ``except ValueError`` (or
``FileNotFoundError``, ``OSError``, ``RuntimeError``) keeps working as it always has::

    MicroscaleError
    |-- DtypeError (TypeError, ValueError)       an array of a dtype that cannot be used
    |-- UnsupportedFormatError (ValueError)      a file that is not an image microscale reads
    |-- DecodeError (OSError)                    an image file that cannot be decoded
    |-- ImageTooLargeError (ValueError)          more pixels than ``max_pixels`` allows
    |   `-- DecompressionBombError               a file whose data ranges are shared or overlap
    |-- ImageTooSmallError (ValueError)          too small to cut a tile from
    |-- PageNotFoundError (ValueError)           a page index past a file's last page
    |-- ConstantImageError (ValueError)          an image without texture (all pixels equal)
    |-- NoImagesError (ValueError)               an archive in which no image was found
    |-- WeightsError (ValueError)                weights that are not the normalised VGG-19
    |   `-- WeightsUnavailableError (FileNotFoundError)   not cached, cannot be downloaded
    |-- StoreError (ValueError)                  a store that does not hold what was asked
    |   |-- StoreNotFoundError (FileNotFoundError)
    |   |-- StoreExistsError (FileExistsError)
    |   |-- StoreLockedError (BlockingIOError)
    |   |-- StoreNotADirectoryError (NotADirectoryError)
    |   |-- UnsupportedFileSystemError (OSError)     a file system without flock
    |   |-- IncompleteStageError
    |   |-- DamagedStoreError                    chunks that differ from their records
    |   `-- WeightsMismatchError                 a query's weights differ from the store's
    |-- RepositoryNotFoundError (FileNotFoundError)   a deployment without its checkout
    |-- ClusterError (RuntimeError)              a Dask cluster that cannot be used as asked
    |   |-- GPUUnavailableError
    |   |-- InsecureAddressError (ValueError)
    |   `-- NoWorkersError                       a stage's cluster has no workers
    `-- FailedUnitsError (RuntimeError)          units of a stage that killed every worker

The modules that raise them re-export them under their old names
(``microscale.store.StoreError`` is ``microscale.errors.StoreError``).

Examples
--------
>>> from microscale.errors import MicroscaleError, StoreNotFoundError
>>> issubclass(StoreNotFoundError, MicroscaleError), issubclass(StoreNotFoundError, OSError)
(True, True)
"""

from __future__ import annotations

__all__ = [
    "ClusterError",
    "ConstantImageError",
    "DamagedStoreError",
    "DecodeError",
    "DecompressionBombError",
    "DtypeError",
    "FailedUnitsError",
    "GPUUnavailableError",
    "ImageTooLargeError",
    "ImageTooSmallError",
    "IncompleteStageError",
    "InsecureAddressError",
    "MicroscaleError",
    "NoImagesError",
    "NoWorkersError",
    "PageNotFoundError",
    "RepositoryNotFoundError",
    "StoreError",
    "StoreExistsError",
    "StoreLockedError",
    "StoreNotADirectoryError",
    "StoreNotFoundError",
    "UnsupportedFileSystemError",
    "UnsupportedFormatError",
    "WeightsError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
]


class MicroscaleError(Exception):
    """Base class of every error microscale raises on purpose."""


# --------------------------------------------------------------------------- arguments


class DtypeError(MicroscaleError, TypeError, ValueError):
    """An array of a dtype the function cannot compute with (complex, strings, objects).

    Both a :class:`TypeError` and a :class:`ValueError` (as :class:`numpy.exceptions.AxisError`
    is both an IndexError and a ValueError), so code written for either keeps catching it.
    """


# --------------------------------------------------------------------------- input files


class UnsupportedFormatError(MicroscaleError, ValueError):
    """The file is not an image in a format microscale reads (text, empty, unknown bytes)."""


class DecodeError(MicroscaleError, OSError):
    """The file looks like an image but cannot be decoded: truncated, corrupt or unsupported."""


class ImageTooLargeError(MicroscaleError, ValueError):
    """The image header announces more pixels than ``max_pixels`` allows.

    ``streamable`` is True when the page is a genuine tiled TIFF page that
    :func:`microscale.io.open_tiled_page` can read region by region within the budget (see
    :mod:`microscale.io.decode`); False for a suspected bomb or a format that cannot be
    streamed.
    """

    streamable: bool = False


class DecompressionBombError(ImageTooLargeError):
    """A file built to decode to far more than it stores: a decompression bomb.

    Raised from the header, before any pixel is decoded: TIFF tiles or strips whose byte
    ranges are shared or overlap (so a few kilobytes are counted, and decoded, thousands of
    times), or a page above ``max_pixels`` that stores less than ``1 / MAX_COMPRESSION_RATIO``
    of its decoded bytes (:mod:`microscale.io.decode`). Never ``streamable``.
    """


class ImageTooSmallError(MicroscaleError, ValueError):
    """The image is too small to cut a tile from, even with padding."""


class PageNotFoundError(MicroscaleError, ValueError):
    """A page index past the last page of a multi-page file."""


class ConstantImageError(MicroscaleError, ValueError):
    """An image whose pixels are all equal: it has no texture to describe."""


class NoImagesError(MicroscaleError, ValueError):
    """An archive in which no file is an image microscale can map (or none could be read)."""


# --------------------------------------------------------------------------- weights


class WeightsError(MicroscaleError, ValueError):
    """A weights file that is not the normalised VGG-19, or that tried to run code."""


class WeightsUnavailableError(WeightsError, FileNotFoundError):
    """The weights are not in the cache and cannot be downloaded."""


# --------------------------------------------------------------------------- stores


class StoreError(MicroscaleError, ValueError):
    """A store that does not hold what was asked, or a request that breaks its layout."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No microscale store at the given path."""


class StoreExistsError(StoreError, FileExistsError):
    """A store already exists where a new one was to be created."""


class StoreLockedError(StoreError, BlockingIOError):
    """Another process holds the store's run lock."""


class StoreNotADirectoryError(StoreError, NotADirectoryError):
    """The store's path names something that is not a folder (a file, say)."""


class UnsupportedFileSystemError(StoreError, OSError):
    """The store's file system lacks what concurrent runs and workers need (flock)."""


class IncompleteStageError(StoreError):
    """A stage needs the output of an earlier stage that is not complete."""


class DamagedStoreError(StoreError):
    """Data of a store that no longer match the checksums of their completion records.

    Its ``damaged`` attribute lists the problems (:class:`microscale.store.RecordProblem`);
    their records are dropped, so the next run recomputes exactly those units.
    """

    def __init__(self, message: str, *, damaged: list | None = None) -> None:
        super().__init__(message)
        self.damaged = list(damaged or [])


class WeightsMismatchError(StoreError):
    """The weights given are not those the store's texture vectors were computed with."""


# --------------------------------------------------------------------------- deployment


class RepositoryNotFoundError(MicroscaleError, FileNotFoundError):
    """A deployment run that cannot find the microscale checkout it runs the flows from."""


# --------------------------------------------------------------------------- clusters


class ClusterError(MicroscaleError, RuntimeError):
    """A Dask cluster could not be set up, or used, as asked."""


class GPUUnavailableError(ClusterError):
    """GPU workers were asked for on a machine where torch sees no CUDA device."""


class InsecureAddressError(ClusterError, ValueError):
    """A scheduler address that would send work over the network without TLS."""


class NoWorkersError(ClusterError):
    """The Dask cluster of a stage has no workers (none started, or all gone)."""


class FailedUnitsError(MicroscaleError, RuntimeError):
    """Units of a stage that killed every worker that ran them; the other units are done.

    Attributes
    ----------
    failed : dict
        Description of each failed unit (its record key and rows) -> the reason.
    """

    def __init__(self, message: str, *, failed: dict[str, str]) -> None:
        super().__init__(message)
        self.failed = dict(failed)
