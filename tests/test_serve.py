"""microscale.serve: the store's results over HTTP, and nothing else."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
import zipfile

import pytest

from microscale.errors import StoreNotFoundError
from microscale.serve import make_server, serving


@pytest.fixture()
def served(tmp_path):
    store = tmp_path / "store"
    (store / "results" / "map.zarr" / "embedding").mkdir(parents=True)
    (store / "results" / "map.html").write_text("<html>the map</html>")
    (store / "results" / "map.png").write_bytes(b"\x89PNG fake")
    (store / "results" / "map.zarr" / "zarr.json").write_text("{}")
    (store / "results" / "map.zarr" / "embedding" / "c0").write_bytes(b"abc")
    (store / "tiles.secret").write_text("not a result")
    (tmp_path / "outside.txt").write_text("outside")
    (store / "results" / "escape.txt").symlink_to(tmp_path / "outside.txt")
    with serving(store, port=0) as url:
        yield url


def _get(url: str) -> tuple[int, bytes, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        err.close()
        return err.code, b"", ""


def test_serves_the_results(served):
    status, body, kind = _get(f"{served}/results/map.html")
    assert (status, body) == (200, b"<html>the map</html>") and kind.startswith("text/html")
    assert _get(f"{served}/results/map.png")[2] == "image/png"
    status, body, _ = _get(f"{served}/")
    assert status == 200 and b"/results/map.html" in body and b"/results/map.zarr.zip" in body


def test_zarr_store_as_a_zip(served):
    status, body, kind = _get(f"{served}/results/map.zarr.zip")
    assert status == 200 and kind == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert sorted(names) == ["map.zarr/embedding/c0", "map.zarr/zarr.json"]


@pytest.mark.parametrize(
    "path",
    [
        "/tiles.secret",
        "/results/../tiles.secret",
        "/results/%2e%2e/tiles.secret",
        "/results/escape.txt",
        "/results/",
        "/results/map.zarr/",
        "/etc/passwd",
        "/results/../../outside.txt",
    ],
)
def test_nothing_outside_the_results(served, path):
    assert _get(f"{served}{path}")[0] == 404


def test_read_only(served):
    req = urllib.request.Request(f"{served}/results/map.html", data=b"x", method="PUT")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(req, timeout=10)
    info.value.close()
    assert info.value.code == 501


def test_missing_store(tmp_path):
    with pytest.raises(StoreNotFoundError, match="microscale run --store"):
        make_server(tmp_path / "nope", port=0)
