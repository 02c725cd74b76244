"""Bad and hostile archives (issue #4): every file gets one recorded outcome and a reason.

Each case builds a tiny archive under ``tmp_path``, runs :func:`ingest_archive` and checks
the outcome recorded for every file (status, kind and reason text), that nothing was read
from outside the archive, that nothing hung, that bombs were refused before allocating,
and that no NaN ever reached the store.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import socket
import stat
import tempfile
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageFile

from microscale.ingest import ingest_archive
from microscale.intensity import ConstantImageError, normalize_intensity
from microscale.io import discover, read_micrograph, tile
from microscale.io.metadata import pixel_size_ome
from microscale.store import image_table, open_store, read_manifest, read_tiles
from microscale.testing.hostile import BILLION_LAUGHS_OME_XML, lying_png, zlib_tiff_bomb

RNG = np.random.default_rng(4)
TILE = 16


def _random(shape: tuple[int, ...], dtype: type = np.uint8, high: int = 255) -> np.ndarray:
    return RNG.integers(0, high + 1, shape).astype(dtype)


def _ingest(archive: Path, tmp_path: Path, **kwargs):
    kwargs.setdefault("tile_size", TILE)
    return ingest_archive(archive, tmp_path / "store", **kwargs)


def _tiles(tmp_path: Path) -> np.ndarray:
    st_ = open_store(tmp_path / "store")
    return read_tiles(st_) if st_.n_tiles else np.zeros((0, TILE, TILE), np.float32)


@contextmanager
def _no_hang(seconds: int = 20) -> Iterator[None]:
    """Turn a hang (a FIFO opened for reading, a link loop) into a test failure."""

    def fail(signum, frame):
        raise TimeoutError(f"ingest hung for {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _assert_counts_add_up(report, archive: Path) -> None:
    counts = report.counts()
    assert sum(counts.values()) == len(report.outcomes)
    for outcome in report.outcomes.values():
        assert outcome["reason"] or outcome["status"] == "processed"
    # every name in the archive, of any kind, has an outcome
    names = {
        os.fsencode(os.path.relpath(os.path.join(d, f), archive)).decode(
            "utf-8", "backslashreplace"
        )
        for d, dirs, files in os.walk(archive)
        for f in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]
    }
    assert names == set(report.outcomes)


# --------------------------------------------------------------------------- damaged files


def _save(arr: np.ndarray, path: Path, fmt: str) -> bytes:
    Image.fromarray(arr).save(path, format=fmt)
    return path.read_bytes()


def test_damaged_files_fail_with_the_decoders_reason_and_never_give_tiles(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    tifffile.imwrite(a / "good.tif", _random((48, 48)))
    _save(_random((48, 48)), a / "good.png", "PNG")
    data = _save(_random((48, 48)), a / "cut.png", "PNG")
    (a / "cut.png").write_bytes(data[: len(data) // 2])
    data = _save(_random((48, 48, 3)), a / "cut.jpg", "JPEG")
    (a / "cut.jpg").write_bytes(data[: len(data) // 2])
    tifffile.imwrite(a / "cut_strip.tif", _random((48, 48), np.uint16, 4095))
    data = (a / "cut_strip.tif").read_bytes()
    (a / "cut_strip.tif").write_bytes(data[: len(data) - 300])
    tifffile.imwrite(a / "tiled.tif", _random((64, 64)), tile=(32, 32), compression="zlib")
    with tifffile.TiffFile(a / "tiled.tif") as tif:
        offsets = tif.pages[0].dataoffsets
    data = bytearray((a / "tiled.tif").read_bytes())
    flipped = bytearray(data)
    flipped[offsets[1] + 20 : offsets[1] + 30] = bytes(
        b ^ 0xFF for b in data[offsets[1] + 20 : offsets[1] + 30]
    )
    (a / "corrupt_tiled_zlib.tif").write_bytes(bytes(flipped))
    (a / "cut_tiled_zlib.tif").write_bytes(bytes(data[: offsets[3] + 10]))
    (a / "tiled.tif").unlink()

    report = _ingest(a, tmp_path)

    _assert_counts_add_up(report, a)
    assert report.counts() == {"processed": 2, "skipped": 0, "failed": 5}
    for name, fmt in [
        ("cut.png", "PNG"),
        ("cut.jpg", "JPEG"),
        ("cut_strip.tif", "TIFF"),
        ("corrupt_tiled_zlib.tif", "TIFF"),
        ("cut_tiled_zlib.tif", "TIFF"),
    ]:
        outcome = report.outcomes[name]
        assert (outcome["status"], outcome["kind"]) == ("failed", "decode"), name
        assert f"has a {fmt} signature but could not be decoded" in outcome["reason"]
        assert "truncated, corrupt" in outcome["reason"]
    assert "DeflateError" in report.outcomes["corrupt_tiled_zlib.tif"]["reason"]
    # only the two intact images were tiled: nothing partial or zero-filled was stored
    assert open_store(tmp_path / "store").n_images == 2 and report.new_tiles == 2 * 9
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_non_images_are_skipped_by_content_not_by_name(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "README").write_text("Micrographs of sample 12, taken 2016-04-03.\n")
    (a / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (a / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500))
    (a / "empty.tif").write_bytes(b"")
    (a / "text.tif").write_text("this is not a TIFF")
    (a / "image.txt").write_bytes(_save(_random((32, 32)), a / "x.png", "PNG"))
    (a / "x.png").unlink()

    report = _ingest(a, tmp_path)

    _assert_counts_add_up(report, a)
    assert report.outcomes["image.txt"]["status"] == "processed"  # a PNG, whatever its name
    for name in ("README", ".DS_Store", "Thumbs.db", "empty.tif", "text.tif"):
        outcome = report.outcomes[name]
        assert (outcome["status"], outcome["kind"]) == ("skipped", "not an image"), name
        assert outcome["reason"] == f"{name}: not an image (content sniffing)"


# --------------------------------------------------------------------------- bombs


@contextmanager
def _peak_memory() -> Iterator[dict[str, float]]:
    """Peak traced allocation and growth of the process's max RSS, in MiB."""
    out: dict[str, float] = {}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        yield out
        out["traced_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    out["maxrss_growth_mib"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    ) / 2**10  # ru_maxrss is in KiB on Linux


def test_decompression_bombs_are_refused_from_the_header(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "bomb.png").write_bytes(lying_png(20000, 20000))
    zlib_tiff_bomb(a / "bomb.tif")
    assert (a / "bomb.png").stat().st_size == 99
    assert (a / "bomb.tif").stat().st_size < 2 * 2**20

    with _peak_memory() as peak:
        report = _ingest(a, tmp_path)

    _assert_counts_add_up(report, a)
    for name, side, kind in [("bomb.png", 20000, "too large"), ("bomb.tif", 40960, "bomb")]:
        outcome = report.outcomes[name]
        assert (outcome["status"], outcome["kind"]) == ("failed", kind)
        assert f"holds a {side}x{side} image" in outcome["reason"]
        assert "max_pixels=268,435,456" in outcome["reason"]
        assert "pass a larger max_pixels" in outcome["reason"]
    # 1.6 GiB announced; a few MiB used (tracemalloc sees numpy's and Python's buffers)
    assert peak["traced_peak_mib"] < 20, peak
    assert peak["maxrss_growth_mib"] < 200, peak


def test_the_pixel_budget_can_be_raised(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    tifffile.imwrite(a / "big.tif", _random((40, 50)))
    refused = _ingest(a, tmp_path / "1", max_pixels=40 * 50 - 1).outcomes["big.tif"]
    assert (refused["status"], refused["kind"]) == ("failed", "too large")
    assert "2,000 pixels), more than max_pixels=1,999" in refused["reason"]
    assert _ingest(a, tmp_path / "2", max_pixels=40 * 50).outcomes["big.tif"]["status"] == (
        "processed"
    )


# --------------------------------------------------------------------------- bit depths


def _bit_depth_cases() -> dict[str, np.ndarray]:
    low12 = _random((40, 40), np.uint16, 4095)
    signed = (RNG.integers(-3000, 3000, (40, 40))).astype(np.int16)
    signed[0, :2] = (-32768, 32767)  # the extremes: no wrap-around when mapped
    floats = (RNG.standard_normal((40, 40)) * 100).astype(np.float32)
    floats[1, 1], floats[2, 2], floats[3, 3] = np.nan, np.inf, -np.inf
    return {
        "uint8": _random((40, 40)),
        "low12": low12,
        "high12": (low12 << 4).astype(np.uint16),
        "int16": signed,
        "float32": floats,
        "bool": RNG.random((40, 40)) > 0.5,
    }


@pytest.mark.parametrize("normalize", ["minmax", "percentile"])
def test_bit_depths_follow_the_documented_rule(tmp_path, normalize):
    a = tmp_path / "a"
    a.mkdir()
    cases = _bit_depth_cases()
    for name, arr in cases.items():
        tifffile.imwrite(a / f"{name}.tif", arr, photometric="minisblack")

    report = _ingest(a, tmp_path, normalize=normalize, tile_size=20)

    _assert_counts_add_up(report, a)
    st_ = open_store(tmp_path / "store")
    table = image_table(st_)
    for name, arr in cases.items():
        assert report.outcomes[f"{name}.tif"]["status"] == "processed", name
        row = list(table["image_path"]).index(f"{name}.tif")
        start, stop = table["image_tiles"][row]
        got = read_tiles(st_, start, stop)
        # the documented rule: NaN/inf take the median of the finite pixels, then the
        # per-image mapping of the raw (never wrapped) values
        finite = (
            arr
            if arr.dtype.kind != "f"
            else np.where(np.isfinite(arr), arr, np.median(arr[np.isfinite(arr)]))
        )
        expect, _ = tile(normalize_intensity(finite, method=normalize)[0], tile_size=20)
        np.testing.assert_allclose(got, expect, rtol=1e-6, err_msg=name)
        assert np.isfinite(got).all() and got.min() >= 0 and got.max() <= 1
    # 12-bit data low- or high-aligned in uint16 give the same tiles (scale-invariant rule)
    rows = [list(table["image_path"]).index(f"{n}.tif") for n in ("low12", "high12")]
    t = [read_tiles(st_, *table["image_tiles"][r]) for r in rows]
    np.testing.assert_allclose(t[0], t[1], atol=1e-6)


def test_all_nan_image_is_skipped(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    tifffile.imwrite(a / "nan.tif", np.full((32, 32), np.nan, np.float32))
    outcome = _ingest(a, tmp_path).outcomes["nan.tif"]
    assert (outcome["status"], outcome["kind"]) == ("skipped", "no finite pixels")
    assert outcome["reason"] == "nan.tif page 0: no finite pixels"


def test_nan_pixels_are_replaced_before_resampling(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    arr = RNG.random((64, 64)).astype(np.float32)
    arr[5, 5] = np.nan
    tifffile.imwrite(a / "nan.tif", arr, resolution=(1e7 / 2, 1e7 / 2), resolutionunit=3)
    assert read_micrograph(a / "nan.tif").pixel_size_nm == pytest.approx(2.0)
    outcome = _ingest(a, tmp_path, pixel_size_nm=4.0).outcomes["nan.tif"]
    assert outcome["status"] == "processed", outcome
    assert np.isfinite(_tiles(tmp_path)).all()


_DTYPES = st.sampled_from(["uint8", "uint16", "int16", "int32", "float32", "float64", "bool"])


def _arrays(dtype: str, shape: tuple[int, int]):
    if dtype == "float64":
        elements = st.floats(allow_nan=False, allow_infinity=False)
    elif dtype == "float32":
        elements = st.floats(allow_nan=False, allow_infinity=False, width=32)
    else:
        elements = None
    return hnp.arrays(np.dtype(dtype), shape, elements=elements)


@given(
    data=st.data(),
    dtype=_DTYPES,
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    method=st.sampled_from(["minmax", "percentile"]),
)
@settings(max_examples=150, deadline=None)
def test_normalize_intensity_property(data, dtype, shape, method):
    image = data.draw(_arrays(dtype, shape))
    try:
        out = normalize_intensity(image, method=method)
    except ConstantImageError:
        if method == "minmax":
            assert image.min() == image.max()
        return
    assert image.min() != image.max()
    assert not np.isnan(out).any()
    assert out.min() >= 0 and out.max() <= 1


def test_normalize_intensity_float64_extremes_are_finite():
    out = normalize_intensity(np.array([[-1e308, 0.0, 1e308]]), dtype=np.float64)
    np.testing.assert_allclose(out, [[[0.0, 0.5, 1.0]]])


@given(
    data=st.data(),
    dtype=st.sampled_from(["uint8", "uint16", "int16", "float32", "bool"]),
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    nan=st.booleans(),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_ingest_of_one_tiff_never_stores_nan(data, dtype, shape, nan):
    image = data.draw(_arrays(dtype, shape))
    if nan and dtype == "float32":
        image = image.copy()
        image.flat[data.draw(st.integers(0, image.size - 1))] = np.nan
    with tempfile.TemporaryDirectory() as tmp:
        a = Path(tmp) / "a"
        a.mkdir()
        tifffile.imwrite(a / "x.tif", image, photometric="minisblack")
        report = ingest_archive(a, Path(tmp) / "store", tile_size=8, normalize="minmax")
        outcome = report.outcomes["x.tif"]
        finite = image[np.isfinite(image)] if dtype == "float32" else image
        if finite.size == 0:
            assert outcome["kind"] == "no finite pixels"
        elif finite.min() == finite.max():
            assert (outcome["status"], outcome["kind"]) == ("skipped", "constant")
            assert "is constant" in outcome["reason"]
        elif min(shape) < 4:
            assert (outcome["status"], outcome["kind"]) == ("skipped", "too small")
        else:
            assert outcome["status"] == "processed", outcome
            tiles = read_tiles(open_store(Path(tmp) / "store"))
            assert np.isfinite(tiles).all() and tiles.min() >= 0 and tiles.max() <= 1


# --------------------------------------------------------------------------- channels


def test_channel_policies_are_recorded(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    grey = _random((32, 32))
    tifffile.imwrite(a / "grey.tif", grey)
    tifffile.imwrite(a / "rgb.tif", _random((32, 32, 3)), photometric="rgb")
    tifffile.imwrite(a / "rgba.tif", _random((32, 32, 4)), photometric="rgb", extrasamples=[2])
    Image.fromarray(_random((32, 32, 4))).save(a / "rgba.png")
    pal = Image.fromarray(_random((32, 32), high=15)).convert("P")
    pal.putpalette(list(RNG.integers(0, 256, 768)))
    pal.save(a / "palette.png")
    tifffile.imwrite(
        a / "two_samples.tif", _random((32, 32, 2)), photometric="minisblack", planarconfig="contig"
    )
    tifffile.imwrite(a / "channels.ome.tif", _random((3, 32, 32)), metadata={"axes": "CYX"})
    tifffile.imwrite(a / "pages.tif", _random((3, 32, 32)), photometric="minisblack")

    report = _ingest(a, tmp_path)

    _assert_counts_add_up(report, a)
    expected = {
        "grey.tif": "grey",
        "rgb.tif": "RGB -> luminance (BT.601)",
        "rgba.tif": "RGB -> luminance (BT.601), alpha dropped",
        "rgba.png": "RGB -> luminance (BT.601), alpha dropped",
        "palette.png": "palette -> RGB -> luminance (BT.601)",
        "two_samples.tif": "channel 0 of 2 samples per pixel",
        "channels.ome.tif": "grey; channel 0 of 3 (C axis)",
        "pages.tif": "grey",
    }
    for name, policy in expected.items():
        outcome = report.outcomes[name]
        assert outcome["status"] == "processed", (name, outcome)
        assert outcome["channel_policy"] == policy, name
    assert report.outcomes["pages.tif"]["reason"] == "3 page(s)"
    assert report.outcomes["channels.ome.tif"]["reason"] == "1 page(s)"
    manifest = read_manifest(tmp_path / "store")
    assert manifest["files"]["rgb.tif"]["channel_policy"] == expected["rgb.tif"]
    assert open_store(tmp_path / "store").n_images == 7 + 3


# --------------------------------------------------------------------------- tiny, constant


def test_tiny_and_constant_images_are_skipped_with_a_reason(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    tifffile.imwrite(a / "one_pixel.tif", np.array([[7]], np.uint8))
    tifffile.imwrite(a / "two_by_two.tif", np.array([[0, 1], [2, 3]], np.uint8))
    tifffile.imwrite(a / "strip.tif", _random((1, 64)))
    tifffile.imwrite(a / "flat.tif", np.full((64, 64), 9, np.uint16))
    tifffile.imwrite(a / "flat_float.tif", np.full((64, 64), -2.5, np.float32))
    tifffile.imwrite(a / "padded.tif", _random((10, 12)))  # >= min_fraction * tile

    report = _ingest(a, tmp_path)

    _assert_counts_add_up(report, a)
    got = {k: (v["status"], v["kind"]) for k, v in report.outcomes.items()}
    assert got == {
        "one_pixel.tif": ("skipped", "constant"),
        "two_by_two.tif": ("skipped", "too small"),
        "strip.tif": ("skipped", "too small"),
        "flat.tif": ("skipped", "constant"),
        "flat_float.tif": ("skipped", "constant"),
        "padded.tif": ("processed", "image"),
    }
    assert "flat.tif page 0: Image 0 is constant" in report.outcomes["flat.tif"]["reason"]
    assert "is 2x2 pixels, smaller than min_fraction" in report.outcomes["two_by_two.tif"]["reason"]
    assert np.isfinite(_tiles(tmp_path)).all()


# --------------------------------------------------------------------------- duplicates


def test_duplicates_and_hardlinks_are_computed_once_with_every_path(tmp_path):
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    tifffile.imwrite(a / "one.tif", _random((32, 32)))
    (a / "sub" / "copy.tif").write_bytes((a / "one.tif").read_bytes())
    os.link(a / "one.tif", a / "hard.tif")

    report = _ingest(a, tmp_path)

    _assert_counts_add_up(report, a)
    assert report.new_images == 1
    kinds = sorted(v["kind"] for v in report.outcomes.values())
    assert kinds == ["duplicate", "duplicate", "image"]
    digest = hashlib.sha256((a / "one.tif").read_bytes()).hexdigest()
    assert sorted(read_manifest(tmp_path / "store")["images"][digest]) == [
        "hard.tif",
        "one.tif",
        "sub/copy.tif",
    ]


# --------------------------------------------------------------------------- hostile trees


def test_links_fifos_and_devices_are_recorded_and_never_read(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = _random((32, 32))
    tifffile.imwrite(outside / "secret.tif", secret)
    tifffile.imwrite(outside / "linked_by_hardlink.tif", _random((32, 32)))
    a = tmp_path / "a"
    (a / "d").mkdir(parents=True)
    tifffile.imwrite(a / "d" / "inside.tif", _random((32, 32)))
    os.symlink(outside / "secret.tif", a / "out_file.tif")
    os.symlink(outside, a / "out_dir")
    os.symlink("..", a / "d" / "loop")
    os.symlink("self", a / "self")  # a link to itself
    os.symlink("missing.tif", a / "dangling.tif")
    os.mkfifo(a / "fifo.tif")
    expected_extra = {}
    try:
        os.mknod(a / "null.tif", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        expected_extra["null.tif"] = "not a regular file"
    except PermissionError:
        pass  # creating device files needs privileges; a FIFO covers the same branch
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(os.fspath(a / "s.sock"))
        expected_extra["s.sock"] = "not a regular file"
    except OSError:  # the path is longer than a socket address allows
        pass
    # a hard link is a regular file: its content is a file of the archive (documented rule)
    os.link(outside / "linked_by_hardlink.tif", a / "hard.tif")

    try:
        with _no_hang():
            report = _ingest(a, tmp_path)
    finally:
        sock.close()

    _assert_counts_add_up(report, a)
    links = ["out_file.tif", "out_dir", "d/loop", "self", "dangling.tif"]
    for name in links:
        outcome = report.outcomes[name]
        assert (outcome["status"], outcome["kind"]) == ("skipped", "not a regular file"), name
        assert outcome["reason"] == f"{name}: a symbolic link (links are not followed); not read"
    for name in ["fifo.tif", *expected_extra]:
        outcome = report.outcomes[name]
        assert (outcome["status"], outcome["kind"]) == ("skipped", "not a regular file"), name
        assert "FIFO, socket or device file" in outcome["reason"]
    assert report.outcomes["d/inside.tif"]["status"] == "processed"
    assert report.outcomes["hard.tif"]["status"] == "processed"
    assert report.new_images == 2
    stored = set(read_manifest(tmp_path / "store")["images"])
    assert hashlib.sha256((outside / "secret.tif").read_bytes()).hexdigest() not in stored


def test_discover_lists_what_it_leaves_out_even_when_following_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.tif").write_bytes(b"II*\x00")
    a = tmp_path / "a"
    (a / "d").mkdir(parents=True)
    os.symlink(outside / "x.tif", a / "out.tif")
    os.symlink("..", a / "d" / "loop")
    os.symlink("self", a / "self")
    os.mkfifo(a / "fifo")
    skipped: list[tuple[Path, str]] = []
    with _no_hang():
        assert discover(a, follow_symlinks=True, skipped=skipped) == []
    top = a.resolve()
    assert [(p.relative_to(top).as_posix(), why) for p, why in skipped] == [
        ("d/loop", "a link back to a folder above it (a loop)"),
        ("fifo", "not a regular file (a FIFO, socket or device file)"),
        ("out.tif", "a symbolic link to outside the archive root"),
        ("self", "a dangling symbolic link or a loop of links"),
    ]


def test_fifo_passed_directly_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "fifo.tif")
    with _no_hang(), pytest.raises(ValueError, match=r"fifo\.tif.*not a regular file"):
        read_micrograph(tmp_path / "fifo.tif")


def test_long_and_non_utf8_names_are_recorded_as_valid_strings(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    long_name = "x" * 251 + ".tif"  # 255 bytes, the usual limit of one name
    deep = a.joinpath(*["d" * 200] * 6)  # a path over 1200 characters
    deep.mkdir(parents=True)
    for folder, name in [(a, long_name), (deep, "deep.tif")]:
        tifffile.imwrite(folder / name, _random((32, 32)))
    raw = os.fsencode(a) + b"/caf\xe9_\xff.tif"  # Latin-1 and an invalid byte
    tifffile.imwrite(a / "tmp.tif", _random((32, 32)))
    os.rename(os.fsencode(a / "tmp.tif"), raw)

    report = _ingest(a, tmp_path)

    _assert_counts_add_up(report, a)
    recorded = "caf\\xe9_\\xff.tif"
    deep_rel = "/".join(["d" * 200] * 6) + "/deep.tif"
    for name in (long_name, deep_rel, recorded):
        assert report.outcomes[name]["status"] == "processed", name
    names = set(read_manifest(tmp_path / "store")["files"])
    assert {long_name, deep_rel, recorded} <= names
    for name in names:
        name.encode("utf-8")  # valid strings only
    assert recorded in set(image_table(open_store(tmp_path / "store"))["image_path"])


# --------------------------------------------------------------------------- XML bombs


def test_ome_xml_bomb_is_never_parsed_and_the_pixels_are_read(tmp_path, caplog):
    a = tmp_path / "a"
    a.mkdir()
    arr = _random((32, 32))
    tifffile.imwrite(a / "bomb.ome.tif", arr, description=BILLION_LAUGHS_OME_XML, metadata=None)
    with tifffile.TiffFile(a / "bomb.ome.tif") as tif:
        assert tif.is_ome  # tifffile would hand this XML to a parser

    with _no_hang(), _peak_memory() as peak:
        report = _ingest(a, tmp_path)

    outcome = report.outcomes["bomb.ome.tif"]
    assert (outcome["status"], outcome["channel_policy"]) == ("processed", "grey")
    assert "declares a DOCTYPE/ENTITY" in caplog.text
    assert peak["traced_peak_mib"] < 20, peak
    micro = read_micrograph(a / "bomb.ome.tif")
    np.testing.assert_array_equal(micro.data, arr)
    assert micro.metadata["ome"] is False and micro.pixel_size_nm is None
    assert pixel_size_ome(BILLION_LAUGHS_OME_XML) is None


# --------------------------------------------------------------------------- streamed pages


def _striped_noise(side: int) -> np.ndarray:
    """uint16 noise on vertical and horizontal stripes: a texture zlib cannot shrink much."""
    y, x = np.mgrid[:side, :side]
    stripes = (x % 64) * 20 + (y % 96) * 10
    return (RNG.integers(0, 2000, (side, side)) + stripes).astype(np.uint16)


def test_a_huge_genuine_tiled_tiff_is_streamed_within_budget(tmp_path):
    from microscale.ingest import prepare_file
    from microscale.io import ImageTooLargeError, open_tiled_page, read_regions

    side = 2048
    image = _striped_noise(side)
    a = tmp_path / "a"
    a.mkdir()
    path = a / "huge.tif"
    tifffile.imwrite(path, image, tile=(256, 256), compression="zlib", photometric="minisblack")
    budget = side * side // 8
    # read_micrograph never decodes it whole under this budget, but says it can be streamed
    with pytest.raises(ImageTooLargeError) as err:
        read_micrograph(path, max_pixels=budget)
    assert err.value.streamable and "region by region" in str(err.value)
    regions = list(read_regions(path, region=700, max_pixels=budget))
    assert len(regions) == 9
    for y0, x0, region in regions:
        np.testing.assert_array_equal(region, image[y0 : y0 + 700, x0 : x0 + 700])
    # a bomb is still refused when opened for streaming
    zlib_tiff_bomb(a / "bomb.tif", side=8192)
    with pytest.raises(ImageTooLargeError, match="holds a 8192x8192 image") as err:
        open_tiled_page(a / "bomb.tif", max_pixels=budget)
    assert not err.value.streamable
    (a / "bomb.tif").unlink()

    params = {
        "tile_size": 64,
        "stride": None,
        "min_fraction": 0.5,
        "pixel_size_nm": None,
        "crop_bottom": "auto",
    }
    for normalize in ("minmax", "percentile"):
        p = {**params, "normalize": normalize}
        whole = prepare_file(str(path), "huge.tif", p, side * side).pages[0]
        with _peak_memory() as peak:
            streamed = prepare_file(str(path), "huge.tif", p, budget).pages[0]
        assert (streamed.status, whole.status) == ("processed", "processed"), streamed
        assert "streamed in bands" in streamed.reason and "not cropped" in streamed.reason
        np.testing.assert_array_equal(streamed.origins, whole.origins)
        np.testing.assert_array_equal(streamed.weights, whole.weights)
        if normalize == "minmax":
            np.testing.assert_array_equal(streamed.tiles, whole.tiles)
            whole_tiles = whole.tiles
        else:  # histogram percentiles: exact for uint16 data, within 1e-3 in general
            np.testing.assert_allclose(streamed.tiles, whole.tiles, rtol=0, atol=1e-3)
        # beyond its result (the float32 tiles), the streamed page works in bands: far
        # below decoding and normalising the whole image (float64: 32 MiB here)
        working = peak["traced_peak_mib"] - streamed.tiles.nbytes / 2**20
        assert working < 0.4 * side * side * 8 / 2**20, peak

    report = _ingest(a, tmp_path, max_pixels=budget, tile_size=64, normalize="minmax")
    outcome = report.outcomes["huge.tif"]
    assert (outcome["status"], outcome["kind"]) == ("processed", "image"), outcome
    assert "streamed in bands of at most 524,288 pixels" in outcome["reason"]
    np.testing.assert_array_equal(read_tiles(open_store(tmp_path / "store")), whole_tiles)
