"""microscale.preflight: a run's inputs checked in a second, before anything starts."""

from __future__ import annotations

import pytest

from microscale.errors import NoImagesError, StoreNotADirectoryError
from microscale.preflight import check_run_inputs, no_images_message


def test_an_image_anywhere_passes(tmp_path):
    from PIL import Image

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "notes.txt").write_text("x")
    Image.new("L", (8, 8)).save(tmp_path / "a" / "b" / "img.dat", format="PNG")  # by content
    check_run_inputs(tmp_path / "a", tmp_path / "store")


def test_no_image_names_the_files(tmp_path):
    (tmp_path / "t.txt").write_text("hi")
    (tmp_path / "u.tif").write_bytes(b"not a tiff at all")
    (tmp_path / "link").symlink_to(tmp_path / "t.txt")
    expected = r"\(3 files: 1 skipped, not a regular file; 2 skipped, not an image\)"
    with pytest.raises(NoImagesError, match=expected):
        check_run_inputs(tmp_path, tmp_path / "store")


def test_store_that_is_a_file(tmp_path):
    (tmp_path / "s").write_text("")
    with pytest.raises(StoreNotADirectoryError, match="is a file, not a folder"):
        check_run_inputs(None, tmp_path / "s")
    with pytest.raises(NotADirectoryError):
        check_run_inputs(tmp_path, tmp_path / "s")


def test_message_counts_every_reason():
    reasons = {("failed", "decode"): 2, ("skipped", "not an image"): 1}
    msg = no_images_message("x/a", reasons)
    assert msg.startswith("no images found in x/a (3 files: 2 failed, decode; 1 skipped, not an")
