"""A damaged store is found by name, and a run recomputes exactly the damaged units.

Each test damages one thing of a finished store (a chunk deleted, cut short or with a byte
flipped; both mirror chunks of a distance block rewritten consistently; a completion
record deleted, cut short or changed), checks that :func:`verify_store` names it (stage,
unit, chunk path), and that the stages, run again, end bit for bit equal to a clean run.
"""

import os
import shutil

import numpy as np
import pytest

from microscale import errors
from microscale import store as st
from microscale.stages import distances as dist
from microscale.stages import embed as emb
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.stages.verify import verify_store
from microscale.testing.stores import make, random_images

ARRAYS = ("features/ps", "image_features/ps", "image_feature_sums/ps", "distances/ps")


def _stages(root, descriptor="ps", **options):
    counts = {"features": feat.run_features(root, descriptor=descriptor, **options)}
    counts["image_features"] = imf.image_features(root, descriptor=descriptor, images_per_task=4)
    counts["distances"] = dist.run_distances(
        root, descriptor=descriptor, block_size=5, pairs_per_task=1
    )
    return counts


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = make(tmp_path_factory.mktemp("verify") / "clean", random_images(12, seed=21))
    _stages(root)
    return root


@pytest.fixture
def store(clean, tmp_path):
    return shutil.copytree(clean, tmp_path / "s")


def _assert_like_clean(clean, root, names=ARRAYS):
    a, b = st.open_store(clean), st.open_store(root)
    for name in names:
        np.testing.assert_array_equal(st.read_rows(b, name), st.read_rows(a, name), err_msg=name)
        want = {p.relative_to(clean) for p in (clean / st.GROUP_NAME / name).rglob("c/**/*")
                if p.is_file()}  # fmt: skip
        have = {p.relative_to(root) for p in (root / st.GROUP_NAME / name).rglob("c/**/*")
                if p.is_file()}  # fmt: skip
        assert have == want, name
        for path in want:  # bit for bit, as written
            assert (root / path).read_bytes() == (clean / path).read_bytes(), path
    assert verify_store(root).ok


def _damage(path, how):
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip one bit of a byte in the middle
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1 :])


# chunk -> the unit that wrote it (5 tiles per feature batch, 4 images per group, blocks of 5)
TARGETS = {
    "features/ps/c/1/0": ("features.ps", "000000001"),
    "image_features/ps/c/1/0": ("image_features.ps", "000000001"),
    "image_feature_sums/ps/c/2/0": ("image_features.ps", "000000002"),
    "distances/ps/c/0/1": ("distances.ps", "000000-000001"),
    "distances/ps/c/2/1": ("distances.ps", "000001-000002"),  # the mirror side of (1, 2)
}


@pytest.mark.parametrize("how", ["delete", "truncate", "flip"])
@pytest.mark.parametrize("chunk", list(TARGETS))
def test_a_damaged_chunk_is_named_and_a_run_recomputes_it(clean, store, chunk, how):
    _damage(store / st.GROUP_NAME / chunk, how)
    report = verify_store(store)
    assert not report.ok
    [problem] = report.problems
    assert (problem.stage, problem.key) == TARGETS[chunk]
    assert list(problem.chunks) == [chunk]
    assert problem.kind == ("missing" if how == "delete" else "damaged")
    assert chunk in str(problem) and TARGETS[chunk][1] in str(problem)
    counts = _stages(store)
    stage = TARGETS[chunk][0].split(".")[0]
    assert counts[stage].computed == 1  # exactly the damaged unit
    _assert_like_clean(clean, store)


@pytest.mark.parametrize("chunk", ["features/ps/c/1/0", "distances/ps/c/0/1"])
def test_repair_drops_the_damaged_unit_and_a_run_recomputes_exactly_it(clean, store, chunk):
    _damage(store / st.GROUP_NAME / chunk, "flip")
    report = verify_store(store, repair=True)
    assert [(p.stage, p.key) for p in report.repaired] == [TARGETS[chunk]]
    assert not (store / st.GROUP_NAME / chunk).exists()  # no one reads the damaged bytes
    after = verify_store(store)
    assert [(p.kind, p.stage, p.key) for p in after.problems] == [("not done", *TARGETS[chunk])]
    counts = _stages(store)
    assert counts[TARGETS[chunk][0].split(".")[0]].computed == 1
    _assert_like_clean(clean, store)


def _rewrite_block_consistently(root, i, j, factor):
    """Both mirror chunks of block (i, j) rewritten with other, still symmetric, distances."""
    s = st.open_store(root)
    D = st.read_rows(s, "distances/ps")
    rows, cols = slice(5 * i, 5 * i + 5), slice(5 * j, 5 * j + 5)
    block = D[rows, cols] * factor
    st.write_block(s, "distances/ps", block, rows=(5 * i, 5 * i + 5), cols=(5 * j, 5 * j + 5))
    st.write_block(
        s, "distances/ps", block.T.copy(), rows=(5 * j, 5 * j + 5), cols=(5 * i, 5 * i + 5)
    )
    D2 = st.read_rows(s, "distances/ps")
    np.testing.assert_array_equal(D2, D2.T)  # nothing a symmetry check could see


def test_both_mirror_chunks_rewritten_consistently_are_found_and_recomputed(clean, store):
    _rewrite_block_consistently(store, 0, 1, 3.0)
    [problem] = verify_store(store).problems
    assert (problem.stage, problem.key, problem.kind) == (
        "distances.ps",
        "000000-000001",
        "damaged",
    )
    assert set(problem.chunks) == {"distances/ps/c/0/1", "distances/ps/c/1/0"}
    # the embedding refuses the damaged matrix rather than using it, naming the block
    with pytest.raises(errors.DamagedStoreError, match=r"distances/ps/c/0/1") as info:
        emb.embed(store, descriptor="ps", n_components=[2], save=False)
    assert [(p.stage, p.key) for p in info.value.damaged] == [("distances.ps", "000000-000001")]
    assert dist.run_distances(store, descriptor="ps", block_size=5).computed == 1
    _assert_like_clean(clean, store)


def test_a_consistent_rewrite_with_its_time_restored_needs_the_full_check(clean, store):
    chunk = store / st.GROUP_NAME / "distances/ps/c/0/1"
    before = os.stat(chunk)
    data = bytearray(chunk.read_bytes())
    data[8] ^= 0x01  # same size
    chunk.write_bytes(bytes(data))
    os.utime(chunk, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert verify_store(store, full=False).ok  # what each run's cheap check sees
    assert [p.key for p in verify_store(store).problems] == ["000000-000001"]
    assert dist.run_distances(store, descriptor="ps", block_size=5).computed == 1  # hashed
    _assert_like_clean(clean, store)


@pytest.mark.parametrize("how", ["delete", "truncate", "flip"])
def test_a_damaged_completion_record_is_named_and_its_unit_recomputed(clean, store, how):
    record = store / st.DONE_DIR / "distances.ps" / "000001-000001"
    if how == "flip":  # a changed checksum in the record: its chunk no longer matches it
        text = record.read_text()
        i = text.index('"crc32c": "') + len('"crc32c": "')
        record.write_text(text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1 :])
    else:
        _damage(record, how)
    [problem] = verify_store(store).problems
    assert (problem.stage, problem.key) == ("distances.ps", "000001-000001")
    kind = {"delete": "not done", "truncate": "unreadable record", "flip": "damaged"}[how]
    assert problem.kind == kind
    assert dist.run_distances(store, descriptor="ps", block_size=5).computed == 1
    _assert_like_clean(clean, store)


def test_records_without_checksums_are_trusted(clean, store):
    import json

    for path in (store / st.DONE_DIR).rglob("*"):
        if path.is_file():
            record = json.loads(path.read_text())
            record.pop("chunks", None)  # as an older microscale wrote them
            path.write_text(json.dumps(record))
    report = verify_store(store)
    assert report.ok and report.verified == 0 and report.unverified > 0
    counts = _stages(store)
    assert all(c.computed == 0 for c in counts.values())


def test_damaged_texture_distances_are_recomputed_bit_for_bit(tmp_path, fake_weights):
    options = {"weights": fake_weights, "layers": ("conv1_1",), "device": "cpu"}
    clean = make(tmp_path / "clean", random_images(12, seed=22))
    _stages(clean, "cnn", **options)
    store = shutil.copytree(clean, tmp_path / "s")
    _damage(store / st.GROUP_NAME / "distances/cnn/c/1/2", "flip")  # one side of (1, 2)
    _damage(store / st.GROUP_NAME / "features/cnn/c/0/0", "truncate")
    named = {(p.stage, p.key) for p in verify_store(store).problems}
    assert named == {("distances.cnn", "000001-000002"), ("features.cnn", "000000000")}
    counts = _stages(store, "cnn", **options)
    assert counts["features"].computed == 1 and counts["distances"].computed == 1
    names = ("features/cnn", "image_features/cnn", "distances/cnn")
    _assert_like_clean(clean, store, names)
