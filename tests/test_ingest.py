import numpy as np
import pytest
import tifffile

from microscale.demo import read_parameters, write_demo_archive
from microscale.ingest import ingest_archive
from microscale.intensity import normalize_intensity
from microscale.io import read_micrograph, tile
from microscale.store import image_table, open_store, read_manifest, read_tiles, tile_table


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    write_demo_archive(root, n=12, size=64, seed=3)
    return root


def test_every_file_has_one_outcome_and_counts_add_up(archive, tmp_path):
    report = ingest_archive(archive, tmp_path / "st", tile_size=32)
    files = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*") if p.is_file())
    assert sorted(report.outcomes) == files
    counts = report.counts()
    assert sum(counts.values()) == len(files)
    assert counts["failed"] >= 1 and counts["skipped"] >= 4  # the demo's broken files
    manifest = read_manifest(tmp_path / "st")
    assert {k: v["status"] for k, v in manifest["files"].items()} == {
        k: v["status"] for k, v in report.outcomes.items()
    }
    truncated = [v for k, v in report.outcomes.items() if "trunc" in k]
    assert truncated and all(
        v["status"] == "failed" and "decoded" in v["reason"] for v in truncated
    )
    # every parameterised image of the sidecar made it in
    params = read_parameters(archive)
    st = open_store(tmp_path / "st")
    assert st.n_images == len(params)


def test_tiles_equal_the_library_path(archive, tmp_path):
    ingest_archive(archive, tmp_path / "st", tile_size=32, normalize="minmax")
    st = open_store(tmp_path / "st")
    images, tiles = image_table(st), tile_table(st)
    path = str(images["image_path"][0])
    micro = read_micrograph(archive / path.split("#")[0])
    expect, origins = tile(normalize_intensity(micro.data, method="minmax")[0], tile_size=32)
    start, stop = images["image_tiles"][0]
    np.testing.assert_allclose(read_tiles(st, start, stop), expect, rtol=1e-6)
    np.testing.assert_array_equal(tiles["tile_origin"][start:stop], origins)


def test_rerun_adds_only_new_files_and_duplicates_are_computed_once(archive, tmp_path):
    first = ingest_archive(archive, tmp_path / "st", tile_size=32)
    again = ingest_archive(archive, tmp_path / "st", tile_size=32)
    assert again.new_images == 0 and again.n_images == first.n_images
    # grow the archive: one new image and a copy of an old one under another name
    rng = np.random.default_rng(0)
    tifffile.imwrite(archive / "new.tif", (rng.random((40, 40)) * 4000).astype(np.uint16))
    old = next(p for p in archive.rglob("*.png") if "trunc" not in p.name and p.stat().st_size)
    (archive / "copy_of_old.png").write_bytes(old.read_bytes())
    try:
        grown = ingest_archive(archive, tmp_path / "st", tile_size=32)
    finally:
        (archive / "new.tif").unlink()
        (archive / "copy_of_old.png").unlink()
    assert grown.new_images == 1
    dup = grown.outcomes["copy_of_old.png"]
    assert dup["status"] == "processed" and dup["kind"] == "duplicate"
    manifest = read_manifest(tmp_path / "st")
    assert len(manifest["images"][dup["image_id"]]) == 2  # both paths recorded


def test_changed_settings_are_refused(archive, tmp_path):
    ingest_archive(archive, tmp_path / "st", tile_size=32)
    with pytest.raises(ValueError, match="different ingest settings.*tile_size"):
        ingest_archive(archive, tmp_path / "st", tile_size=48)


def test_constant_and_small_images_are_skipped_with_reason(tmp_path):
    (tmp_path / "a").mkdir()
    tifffile.imwrite(tmp_path / "a" / "flat.tif", np.full((64, 64), 7, np.uint8))
    tifffile.imwrite(tmp_path / "a" / "tiny.tif", np.arange(16, dtype=np.uint8).reshape(4, 4))
    nan = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    nan[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "a" / "nan.tif", nan)
    report = ingest_archive(tmp_path / "a", tmp_path / "st", tile_size=32)
    assert report.outcomes["flat.tif"]["kind"] == "constant"
    assert report.outcomes["tiny.tif"]["kind"] == "too small"
    assert report.outcomes["nan.tif"]["status"] == "processed"
    assert np.isfinite(read_tiles(open_store(tmp_path / "st"))).all()


def test_crash_after_commit_before_outcomes_does_not_duplicate(archive, tmp_path, monkeypatch):
    import microscale.ingest as ingest_mod

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed before the outcomes were written")

    monkeypatch.setattr(ingest_mod, "record_files", crash)
    with pytest.raises(KeyboardInterrupt):
        ingest_archive(archive, tmp_path / "st", tile_size=32)
    monkeypatch.undo()
    committed = open_store(tmp_path / "st").n_images
    assert committed > 0  # images were committed, their outcomes were not
    report = ingest_archive(archive, tmp_path / "st", tile_size=32)
    clean = ingest_archive(archive, tmp_path / "clean", tile_size=32)
    assert report.n_images == clean.n_images  # nothing appended twice
    assert report.counts() == clean.counts()
    np.testing.assert_array_equal(
        read_tiles(open_store(tmp_path / "st")), read_tiles(open_store(tmp_path / "clean"))
    )


def _outcome_table(report):
    return {k: (v["status"], v["kind"], v.get("image_id")) for k, v in report.outcomes.items()}


@pytest.fixture(scope="module")
def process_cluster():
    import dask
    import distributed

    # A poison file kills workers on purpose: the scheduler gives up after one retry.
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.mark.slow
def test_ingest_on_dask_workers_equals_the_sequential_ingest(tmp_path, process_cluster):
    write_demo_archive(tmp_path / "a", n=10, size=64)
    here = ingest_archive(tmp_path / "a", tmp_path / "here", tile_size=32)
    there = ingest_archive(
        tmp_path / "a", tmp_path / "there", tile_size=32, client=process_cluster, files_per_task=3
    )

    def first_outcomes(outcomes):  # when each file was last seen differs by the runs' times
        return {f: {k: v for k, v in o.items() if k != "last_seen"} for f, o in outcomes.items()}

    assert first_outcomes(here.outcomes) == first_outcomes(there.outcomes)
    assert (here.new_images, here.new_tiles) == (there.new_images, there.new_tiles)
    a, b = open_store(tmp_path / "here"), open_store(tmp_path / "there")
    np.testing.assert_array_equal(read_tiles(a), read_tiles(b))
    for table in (tile_table, image_table):
        x, y = table(a), table(b)
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(np.asarray(x[key]), np.asarray(y[key]))
    assert first_outcomes(read_manifest(a)["files"]) == first_outcomes(read_manifest(b)["files"])
    again = ingest_archive(tmp_path / "a", tmp_path / "there", tile_size=32, client=process_cluster)
    assert again.new_images == 0 and again.n_images == there.n_images


@pytest.mark.slow
def test_a_file_that_kills_every_worker_is_recorded_failed(tmp_path, process_cluster):
    import time

    from distributed.diagnostics.plugin import WorkerPlugin

    write_demo_archive(tmp_path / "a", n=10, size=64)
    images = sorted(p for p in (tmp_path / "a").rglob("*.tif") if "trunc" not in p.name)
    poison = images[len(images) // 2]

    class Poison(WorkerPlugin):  # defined here, so pickled by value to the workers
        name = "poison-decoder"

        def __init__(self, victim: str):
            self.victim = victim

        def setup(self, worker):
            import os

            from microscale import io

            real = io.read_micrograph
            victim = self.victim

            def read_micrograph(path, *args, **kwargs):
                if os.path.basename(str(path)) == victim:
                    os._exit(1)  # the decoder "segfaults": the worker process dies
                return real(path, *args, **kwargs)

            io.read_micrograph = read_micrograph

    clean = ingest_archive(tmp_path / "a", tmp_path / "clean", tile_size=32)
    process_cluster.register_plugin(Poison(poison.name))  # re-applied to restarted workers
    try:
        start = time.monotonic()
        report = ingest_archive(
            tmp_path / "a", tmp_path / "st", tile_size=32, client=process_cluster, files_per_task=4
        )
        elapsed = time.monotonic() - start
    finally:
        process_cluster.unregister_worker_plugin("poison-decoder")
    assert elapsed < 60
    rel = poison.relative_to(tmp_path / "a").as_posix()
    bad = report.outcomes[rel]
    assert bad["status"] == "failed" and bad["kind"] == "worker killed"
    assert rel in bad["reason"] and "decoder crashed" in bad["reason"]
    others = {k: v for k, v in _outcome_table(report).items() if k != rel}
    assert others == {k: v for k, v in _outcome_table(clean).items() if k != rel}
    assert read_manifest(tmp_path / "st")["files"][rel]["kind"] == "worker killed"
    assert report.n_images == clean.n_images - 1


def test_transient_read_errors_are_retried_and_permanent_ones_recorded(tmp_path, monkeypatch):
    import errno

    import microscale.ingest as ingest_mod

    (tmp_path / "a").mkdir()
    rng = np.random.default_rng(4)
    for name in ("flaky.tif", "denied.tif", "fine.tif"):
        tifffile.imwrite(tmp_path / "a" / name, (rng.random((40, 40)) * 200).astype(np.uint8))
    calls = {"flaky.tif": 0, "denied.tif": 0}
    real = ingest_mod.io.read_micrograph

    def flaky(path, **kw):
        name = path.name
        if name in calls:
            calls[name] += 1
            if name == "denied.tif":
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            if calls[name] <= 2:  # a network file system hiccup, twice
                raise OSError(errno.EIO, "Input/output error", str(path))
        return real(path, **kw)

    monkeypatch.setattr(ingest_mod.io, "read_micrograph", flaky)
    monkeypatch.setattr(ingest_mod.time, "sleep", lambda s: None)
    report = ingest_archive(tmp_path / "a", tmp_path / "st", tile_size=32)
    assert report.outcomes["flaky.tif"]["status"] == "processed" and calls["flaky.tif"] == 3
    denied = report.outcomes["denied.tif"]
    assert denied["status"] == "failed" and "Permission denied" in denied["reason"]
    assert calls["denied.tif"] == 1  # a permanent error is not retried
    assert report.outcomes["fine.tif"]["status"] == "processed"
