"""The ledger of input files: a file keeps its first outcome; re-runs record when it was seen."""

import numpy as np
import pytest
import tifffile

from microscale.demo import write_demo_archive
from microscale.ingest import ingest_archive
from microscale.store import read_manifest


@pytest.fixture
def archive(tmp_path):
    return write_demo_archive(tmp_path / "archive", n=9, size=64, seed=3)


def _entries(root):
    return read_manifest(root)["files"]


def test_a_rerun_keeps_every_first_outcome_and_records_when_files_were_last_seen(archive, tmp_path):
    root = tmp_path / "st"
    first = ingest_archive(archive, root, tile_size=32)
    before = _entries(root)
    assert {e["kind"] for e in before.values()} >= {"image", "not an image"}
    again = ingest_archive(archive, root, tile_size=32)
    after = _entries(root)
    assert again.new_images == 0 and sorted(after) == sorted(before)
    for path, entry in after.items():
        old = {k: v for k, v in before[path].items() if k != "last_seen"}
        assert {k: v for k, v in entry.items() if k != "last_seen"} == old, path
        assert entry["last_seen"] >= before[path]["last_seen"], path
        assert again.outcomes[path] == entry
    assert again.counts() == first.counts() and again.reasons() == first.reasons()
    assert not any(e["kind"] == "duplicate" for e in after.values())


def test_a_real_duplicate_and_a_changed_file_are_recorded_as_what_they_are(archive, tmp_path):
    root = tmp_path / "st"
    ingest_archive(archive, root, tile_size=32)
    old = next(p for p in archive.rglob("*.tif") if p.name.startswith("img_"))
    rel = old.relative_to(archive).as_posix()
    first_id = _entries(root)[rel]["image_id"]
    (archive / "copy.tif").write_bytes(old.read_bytes())  # a new name for stored content
    rng = np.random.default_rng(1)
    tifffile.imwrite(old, (rng.random((64, 64)) * 4000).astype(np.uint16))  # new content
    report = ingest_archive(archive, root, tile_size=32)
    entries = _entries(root)
    assert report.new_images == 1
    assert entries["copy.tif"]["kind"] == "duplicate"
    assert entries["copy.tif"]["image_id"] == first_id
    assert entries[rel]["kind"] == "image" and entries[rel]["image_id"] != first_id
    # and on the next run both keep those outcomes
    ingest_archive(archive, root, tile_size=32)
    again = _entries(root)
    for path in ("copy.tif", rel):
        assert {k: v for k, v in again[path].items() if k != "last_seen"} == {
            k: v for k, v in entries[path].items() if k != "last_seen"
        }
