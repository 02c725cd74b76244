"""A small, realistic demo archive of synthetic micrographs, with known parameters.

:func:`write_demo_archive` writes what a real archive looks like to the ingest flow:
textures from :func:`microscale.synth.texture` (docs/method.md section 5) saved as real files of
several formats and dtypes in nested folders, some with a physical pixel size in their
TIFF resolution tags, a ``parameters.csv`` sidecar with the ground truth, and (by default)
a few files that are not images or are damaged, as every real archive has.

Layout
------
Texture ``i`` (of ``n``) has parameters drawn from ``np.random.default_rng(seed)``:
``theta`` uniform in [0, pi), ``k`` in [5, 15), ``A`` in [0.5, 2) and a texture seed, an int
in [0, 2**31). Textures 0-2 are the three pages of ``tem/tilt_series/stack.tif`` (a
multi-page uint16 TIFF); texture 3 is an RGB PNG (a grey texture with a faint blue tint),
texture 4 a greyscale JPEG; the others cycle through an 8-bit PNG, a 16-bit TIFF with a
pixel size in its resolution tags (centimetres), a float32 TIFF (the raw field in [-1, 1]),
and a 16-bit TIFF without a pixel size. Integer images store ``(phi + 1) / 2`` scaled to the
dtype's full range and rounded. Files go to a few nested folders, named ``img_NNN`` by
texture index.

Sidecar
-------
``parameters.csv`` has one row per texture with columns ``file,theta,k,A,seed``: ``file``
is the POSIX path relative to ``root``, with ``#page`` appended for a page of a multi-page
file (``tem/tilt_series/stack.tif#2``). Floats are written with ``repr`` so they read back
exactly.

Broken files
------------
With ``broken=True`` the archive also holds, none of them in the CSV: a truncated PNG
(``sem/2019-03-14/img_trunc.png``, half its bytes), a text file named ``.tif``
(``tem/grid_a/notes.tif``), an empty file (``optical/empty.png``), a ``README.txt`` and a
``.DS_Store`` (``sem/.DS_Store``, with the real file's ``\\0\\0\\0\\1Bud1`` signature).

The archive is a pure function of ``(n, size, seed, broken)``: the same arguments give
byte-identical files.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np

from microscale.intensity import as_image_stack
from microscale.synth import texture

__all__ = ["PARAMETERS_FILE", "read_parameters", "write_demo_archive"]

PARAMETERS_FILE = "parameters.csv"

#: Pixel size (nm) written into the resolution tags of the calibrated 16-bit TIFFs.
DEMO_PIXEL_SIZE_NM = 2.5

_FOLDERS = ("sem/2019-03-14", "sem/2019-03-15", "tem/grid_a", "optical")
_STACK = "tem/tilt_series/stack.tif"
_STACK_PAGES = 3
_CYCLE = ("png8", "tiff16_calibrated", "tiff32f", "tiff16")
_MIN_N = _STACK_PAGES + 2 + len(_CYCLE)  # every kind of file at least once
_FIELDS = ("file", "theta", "k", "A", "seed")

_README = """Demo archive written by microscale.demo.write_demo_archive.

Synthetic stripe textures (Lubbers et al., Phys. Rev. E 96, 052111, 2017) saved as
PNG, JPEG and TIFF files; parameters.csv lists each image's (theta, k, A, seed).
Some files in this archive are deliberately broken or not images.
"""


def _to_uint(phi: np.ndarray, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """Map a field in [-1, 1] to the full range of an unsigned dtype, rounded."""
    top = np.iinfo(dtype).max
    return np.rint((np.clip(phi, -1.0, 1.0) + 1.0) / 2.0 * top).astype(dtype)


def _kind(i: int) -> str:
    if i < _STACK_PAGES:
        return "stack"
    if i == _STACK_PAGES:
        return "rgb_png"
    if i == _STACK_PAGES + 1:
        return "jpeg"
    return _CYCLE[(i - _STACK_PAGES - 2) % len(_CYCLE)]


_EXTENSIONS = {
    "rgb_png": ".png",
    "jpeg": ".jpg",
    "png8": ".png",
    "tiff16_calibrated": ".tif",
    "tiff32f": ".tif",
    "tiff16": ".tif",
}


def write_demo_archive(
    root: str | os.PathLike[str],
    *,
    n: int = 24,
    size: int = 256,
    seed: int = 0,
    broken: bool = True,
) -> Path:
    """Write a demo archive of ``n`` synthetic micrographs under ``root``.

    Parameters
    ----------
    root : str or path-like
        A folder that does not exist yet or is empty; it is created.
    n : int, optional
        Number of textures (and CSV rows), >= 9 so that every kind of file appears.
    size : int, optional
        Side of the square images in pixels (>= 16, as :func:`microscale.synth.texture`).
    seed : int, optional
        Seed (>= 0) of the parameter draw; the archive is a function of it.
    broken : bool, optional
        Also write the broken and non-image files listed in the module docstring.

    Returns
    -------
    root : Path
        The archive folder.

    Raises
    ------
    FileExistsError
        If ``root`` exists and is not an empty folder.
    ValueError
        For invalid ``n``, ``size`` or ``seed``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = write_demo_archive(Path(tmp) / "demo", n=9, size=32, broken=False)
    ...     len(read_parameters(root))
    9
    """
    n = _check_int(n, "n", minimum=_MIN_N)
    size = _check_int(size, "size", minimum=16)
    seed = _check_int(seed, "seed", minimum=0)
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{os.fspath(root)!r} already exists and is not an empty folder; the demo archive "
            "needs a new or empty folder so that parameters.csv lists every image in it."
        )

    import tifffile
    from PIL import Image

    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.0, math.pi, n)
    k = rng.uniform(5.0, 15.0, n)
    amplitude = rng.uniform(0.5, 2.0, n)
    seeds = rng.integers(0, 2**31, n)
    fields = as_image_stack(
        [
            texture(float(theta[i]), float(k[i]), float(amplitude[i]), size=size, seed=int(s))
            for i, s in enumerate(seeds)
        ]
    )

    root.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        phi = fields[i]
        kind = _kind(i)
        if kind == "stack":
            rel = f"{_STACK}#{i}"
        else:
            rel = f"{_FOLDERS[i % len(_FOLDERS)]}/img_{i:03d}{_EXTENSIONS[kind]}"
        rows.append(
            {
                "file": rel,
                "theta": repr(float(theta[i])),
                "k": repr(float(k[i])),
                "A": repr(float(amplitude[i])),
                "seed": str(int(seeds[i])),
            }
        )
        if kind == "stack":
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "png8":
            Image.fromarray(_to_uint(phi, np.uint8)).save(path, format="PNG")
        elif kind == "rgb_png":
            grey = _to_uint(phi, np.uint8)
            tint = np.rint(grey * 0.85).astype(np.uint8)
            Image.fromarray(np.stack([tint, tint, grey], axis=-1)).save(path, format="PNG")
        elif kind == "jpeg":
            Image.fromarray(_to_uint(phi, np.uint8)).save(path, format="JPEG", quality=95)
        elif kind == "tiff32f":
            tifffile.imwrite(path, phi.astype(np.float32), photometric="minisblack")
        else:
            calibrated = kind == "tiff16_calibrated"
            per_cm = 1e7 / DEMO_PIXEL_SIZE_NM
            tifffile.imwrite(
                path,
                _to_uint(phi, np.uint16),
                photometric="minisblack",
                resolution=(per_cm, per_cm) if calibrated else None,
                resolutionunit="CENTIMETER" if calibrated else None,
            )
    stack_path = root / _STACK
    stack_path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        stack_path, _to_uint(fields[:_STACK_PAGES], np.uint16), photometric="minisblack"
    )

    with open(root / PARAMETERS_FILE, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    if broken:
        _write_broken_files(root, size)
    return root


def _write_broken_files(root: Path, size: int) -> None:
    from PIL import Image

    folder = root / _FOLDERS[0]
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.tile(np.arange(size, dtype=np.uint8), (size, 1))
    whole = folder / "img_trunc.png"
    Image.fromarray(ramp).save(whole, format="PNG")
    data = whole.read_bytes()
    whole.write_bytes(data[: len(data) // 2])

    notes = root / _FOLDERS[2] / "notes.tif"
    notes.parent.mkdir(parents=True, exist_ok=True)
    notes.write_text("Grid A, 200 kV. Stage drift noticeable after image 12.\n", "utf-8")

    empty = root / _FOLDERS[3] / "empty.png"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_bytes(b"")

    (root / "README.txt").write_text(_README, "utf-8")
    ds_store = b"\x00\x00\x00\x01Bud1" + b"\x00" * 24
    (root / "sem" / ".DS_Store").write_bytes(ds_store)


def read_parameters(root: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The ground truth of a demo archive, from its ``parameters.csv``.

    Parameters
    ----------
    root : str or path-like
        A folder written by :func:`write_demo_archive`.

    Returns
    -------
    parameters : dict
        Keyed by the CSV's ``file`` entry (``"sem/2019-03-15/img_005.tif"``,
        ``"tem/tilt_series/stack.tif#1"``), in file order. Each value has ``path``
        (absolute :class:`~pathlib.Path` of the file), ``page`` (int), ``theta``, ``k``,
        ``A`` (float) and ``seed`` (int).

    Raises
    ------
    FileNotFoundError
        If ``root`` has no ``parameters.csv``.
    ValueError
        If the CSV lacks a column.
    """
    root = Path(root)
    csv_path = root / PARAMETERS_FILE
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"{os.fspath(csv_path)!r} does not exist: {os.fspath(root)!r} is not a demo archive "
            "written by write_demo_archive."
        )
    out: dict[str, dict[str, Any]] = {}
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(_FIELDS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{os.fspath(csv_path)!r} lacks the column(s) {sorted(missing)}; expected "
                f"{', '.join(_FIELDS)}."
            )
        for row in reader:
            name = row["file"]
            rel, sep, page = name.rpartition("#")
            if not (sep and page.isdigit()):
                rel, page = name, "0"
            out[name] = {
                "path": root.resolve() / rel,
                "page": int(page),
                "theta": float(row["theta"]),
                "k": float(row["k"]),
                "A": float(row["A"]),
                "seed": int(row["seed"]),
            }
    return out


def _check_int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"The '{name}' parameter must be an int >= {minimum}. Got {value!r} instead."
        )
    return int(value)
