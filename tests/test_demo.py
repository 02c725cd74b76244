"""Tests for microscale.demo: the demo archive is what its docstring says, and deterministic.

Oracle: every image in the archive is re-made from its CSV row with
``microscale.synth.texture`` and compared with what ``read_micrograph`` decodes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from microscale.demo import DEMO_PIXEL_SIZE_NM, read_parameters, write_demo_archive
from microscale.io import (
    DecodeError,
    UnsupportedFormatError,
    count_pages,
    discover,
    file_digest,
    read_micrograph,
    sniff_format,
)
from microscale.synth import texture

N, SIZE = 10, 32

BROKEN = {
    "README.txt": (None, UnsupportedFormatError, r"README\.txt.*not an image"),
    "optical/empty.png": (None, UnsupportedFormatError, r"empty\.png.*empty \(0 bytes\)"),
    "sem/.DS_Store": (None, UnsupportedFormatError, r"\.DS_Store.*not an image"),
    "tem/grid_a/notes.tif": (None, UnsupportedFormatError, r"notes\.tif.*not an image"),
    "sem/2019-03-14/img_trunc.png": ("png", DecodeError, r"img_trunc\.png.*could not be decoded"),
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_archive(tmp_path_factory.mktemp("demo") / "archive", n=N, size=SIZE, seed=3)


def _rel(root: Path, paths: list[Path]) -> list[str]:
    return [p.relative_to(root.resolve()).as_posix() for p in paths]


def test_archive_has_the_expected_files(archive: Path) -> None:
    params = read_parameters(archive)
    assert len(params) == N
    image_files = {name.split("#")[0] for name in params}
    expected = image_files | set(BROKEN) | {"parameters.csv"}
    assert set(_rel(archive, discover(archive))) == expected
    formats = {f: sniff_format(archive / f) for f in image_files}
    assert sorted(formats.values()).count("jpeg") == 1
    assert sum(1 for f in image_files if f.endswith(".tif")) >= 3
    stack = [name for name in params if "#" in name]
    assert stack == [f"tem/tilt_series/stack.tif#{i}" for i in range(3)]
    assert len({Path(f).parent for f in image_files}) >= 4  # nested folders


def test_csv_columns_and_ranges(archive: Path) -> None:
    with open(archive / "parameters.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["file", "theta", "k", "A", "seed"]
        rows = list(reader)
    assert len(rows) == N
    for row in rows:
        assert 0.0 <= float(row["theta"]) < np.pi
        assert 5.0 <= float(row["k"]) < 15.0
        assert 0.5 <= float(row["A"]) < 2.0
        assert int(row["seed"]) >= 0
        assert not Path(row["file"]).is_absolute()


def test_images_match_their_parameters(archive: Path) -> None:
    kinds = set()
    for name, p in read_parameters(archive).items():
        m = read_micrograph(p["path"], page=p["page"])
        phi = texture(p["theta"], p["k"], p["A"], size=SIZE, seed=p["seed"])
        assert m.data.shape == (SIZE, SIZE)
        fmt, dtype = m.metadata["format"], m.data.dtype
        kinds.add((fmt, str(dtype), m.metadata["channel_policy"].split(" ")[0]))
        if fmt == "jpeg":
            assert np.corrcoef(m.data.ravel(), phi.ravel())[0, 1] > 0.95, name
        elif dtype == np.float32:
            np.testing.assert_array_equal(m.data, phi.astype(np.float32))
        elif m.metadata["channel_policy"].startswith("RGB"):
            assert np.corrcoef(m.data.ravel(), phi.ravel())[0, 1] > 0.999, name
        else:
            top = np.iinfo(dtype).max
            np.testing.assert_array_equal(m.data, np.rint((phi + 1) / 2 * top).astype(dtype))
    assert kinds >= {
        ("png", "uint8", "grey"),
        ("png", "uint8", "RGB"),
        ("jpeg", "uint8", "grey"),
        ("tiff", "uint16", "grey"),
        ("tiff", "float32", "grey"),
    }


def test_pixel_sizes_in_resolution_tags(archive: Path) -> None:
    sizes = {
        name: read_micrograph(p["path"], page=p["page"]).pixel_size_nm
        for name, p in read_parameters(archive).items()
    }
    calibrated = {name for name, s in sizes.items() if s is not None}
    assert calibrated and all(name.endswith(".tif") for name in calibrated)
    assert all(sizes[n] == pytest.approx(DEMO_PIXEL_SIZE_NM) for n in calibrated)
    assert len(calibrated) < len(sizes)


def test_multi_page_stack(archive: Path) -> None:
    assert count_pages(archive / "tem/tilt_series/stack.tif") == 3


@pytest.mark.parametrize("rel", sorted(BROKEN))
def test_broken_files_are_classified(archive: Path, rel: str) -> None:
    fmt, error, match = BROKEN[rel]
    assert sniff_format(archive / rel) == fmt
    with pytest.raises(error, match=match):
        read_micrograph(archive / rel)


def test_deterministic_and_seed_dependent(tmp_path: Path, archive: Path) -> None:
    again = write_demo_archive(tmp_path / "again", n=N, size=SIZE, seed=3)
    other = write_demo_archive(tmp_path / "other", n=N, size=SIZE, seed=4)

    def digests(root: Path) -> dict[str, str]:
        paths = discover(root)
        return {r: file_digest(p) for r, p in zip(_rel(root, paths), paths, strict=True)}

    assert digests(again) == digests(archive)
    assert digests(other) != digests(archive)
    assert read_parameters(other) != read_parameters(archive)


def test_without_broken_files(tmp_path: Path) -> None:
    root = write_demo_archive(tmp_path / "clean", n=9, size=16, broken=False)
    for path in discover(root):
        if path.name != "parameters.csv":
            read_micrograph(path)  # every file is a readable image


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match=r"not an empty folder"):
        write_demo_archive(tmp_path, n=9, size=16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 8}, r"'n' parameter must be an int >= 9. Got 8"),
        ({"n": 9.0}, r"'n' parameter must be an int >= 9"),
        ({"size": 8}, r"'size' parameter must be an int >= 16. Got 8"),
        ({"seed": -1}, r"'seed' parameter must be an int >= 0. Got -1"),
    ],
)
def test_validates_options(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_demo_archive(tmp_path / "a", **kwargs)


def test_read_parameters_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"parameters\.csv.*not a demo archive"):
        read_parameters(tmp_path)
    (tmp_path / "parameters.csv").write_text("file,theta\nx.png,1.0\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['A', 'k', 'seed'\]"):
        read_parameters(tmp_path)
