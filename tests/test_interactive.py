"""The interactive map: written from a real map, opened offline in headless Chromium.

Chromium is driven through the DevTools protocol (``--remote-debugging-port``, the
``websockets`` client): the page is loaded from ``file://`` with every host name
unresolvable, Bokeh's document is inspected with ``Runtime.evaluate``, a point is hovered
and clicked with real mouse events, and a screenshot is saved under ``tmp_path``.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from microscale import pipeline
from microscale.demo import write_demo_archive
from microscale.ingest import ingest_archive
from microscale.interactive import colorings, thumbnail_uri, write_interactive_map
from microscale.mapping import map_store, write_map

BROWSER_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """A 12-image demo archive mapped with the power spectrum, and its written outputs."""
    root = tmp_path_factory.mktemp("interactive")
    archive, st = root / "demo", root / "st"
    write_demo_archive(archive, n=12, size=32, seed=3)
    ingest_archive(archive, st, tile_size=32, normalize="minmax")
    pipeline.run_features(st, descriptor="ps")
    pipeline.image_features(st, descriptor="ps")
    pipeline.run_distances(st, descriptor="ps", block_size=5)
    ds = map_store(st, descriptors=["ps"], n_components=[1, 2, 3], archive=archive, n_neighbors=3)
    files = write_map(ds, st)
    return ds, st, files


def test_write_map_writes_a_self_contained_page(mapped):
    ds, st, files = mapped
    page = st / "results" / "map.html"
    assert page in files
    text = page.read_text(encoding="utf-8")
    # offline: no script, stylesheet or image tag points anywhere (Chromium checks requests)
    remote = r"""<(script|link|img)\b[^>]*\b(src|href)\s*=\s*["']?(https?:)?//"""
    assert not re.search(remote, text)
    assert "Bokeh" in text
    assert text.count("data:image/jpeg;base64,") >= ds.sizes["image"]
    assert str(ds.image_path.values[0]) in text


def test_colorings_offer_what_the_dataset_has(mapped):
    ds, _, _ = mapped
    options = colorings(ds)
    assert {"theta", "k", "A", "folder", "pixel size (nm)"} <= set(options)
    assert {"outlier score (ps)", "cluster (ps)"} <= set(options)
    assert options["theta"][1] == "cyclic" and options["cluster (ps)"][1] == "categorical"
    bare = ds.drop_vars(["theta", "k", "A", "outlier_score", "cluster"])
    assert "theta" not in colorings(bare) and "cluster (ps)" not in colorings(bare)


def test_thumbnail_uri():
    from PIL import Image

    img = np.random.default_rng(0).random((200, 100))
    uri = thumbnail_uri(img, size=64)
    assert uri.startswith("data:image/jpeg;base64,")
    pic = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert pic.size == (32, 64) and pic.mode == "L"
    with pytest.raises(ValueError, match="needs a 2-D image"):
        thumbnail_uri(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="'size' parameter"):
        thumbnail_uri(img, size=0)


def test_thumbnails_are_capped(mapped, tmp_path):
    ds, _, _ = mapped
    calls = []

    def thumbnail(i):
        calls.append(i)
        return np.random.default_rng(i).random((32, 32))

    page = write_interactive_map(ds, tmp_path / "m.html", thumbnail=thumbnail, max_thumbnails=10)
    text = page.read_text(encoding="utf-8")
    assert len(calls) == 10 and calls == sorted(set(calls))
    assert int(np.argmax(ds.outlier_score.values[0])) in calls  # a tenth go to the top outliers
    assert {0, ds.sizes["image"] - 1} <= set(calls)  # the rest spread along the archive
    assert text.count("data:image/jpeg;base64,") >= 10
    calls.clear()
    write_interactive_map(ds, tmp_path / "none.html", thumbnail=thumbnail, max_thumbnails=0)
    assert calls == []
    with pytest.raises(ValueError, match="'max_thumbnails' parameter must be an int >= 0"):
        write_interactive_map(ds, tmp_path / "x.html", max_thumbnails=-1)
    with pytest.raises(ValueError, match="no 'embedding' variable"):
        write_interactive_map(ds.drop_vars("embedding"), tmp_path / "x.html")


def test_thumbnail_choice_for_a_large_archive():
    from microscale.interactive import _chosen

    scores = np.random.default_rng(0).random(100_000)
    chosen = _chosen(100_000, scores, 2000)
    assert len(chosen) == 2000 and len(np.unique(chosen)) == 2000
    assert set(np.argsort(-scores)[:200]) <= set(chosen)  # the 200 most outlying
    assert chosen.min() == 0 and chosen.max() >= 99_000  # the rest spread over the archive
    np.testing.assert_array_equal(_chosen(5, None, 10), np.arange(5))


# -- the page in a browser --------------------------------------------------------------------


class DevTools:
    """A headless Chromium with no network, one page, driven over the DevTools protocol."""

    def __init__(self, browser: str, user_data: Path) -> None:
        cmd = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-proxy-server",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,800",
            "--remote-debugging-port=0", "--remote-allow-origins=*",
            f"--user-data-dir={user_data}", "about:blank",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = user_data / "DevToolsActivePort"
        deadline = time.monotonic() + BROWSER_TIMEOUT_S
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                pytest.fail("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            targets = json.load(resp)
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=2**26, open_timeout=BROWSER_TIMEOUT_S)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=BROWSER_TIMEOUT_S))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def evaluate(self, expression: str):
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:200]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout_s: float = BROWSER_TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        pytest.fail(f"the page never satisfied {expression!r}")

    def mouse(self, kind: str, x: float, y: float) -> None:
        params = {"type": kind, "x": x, "y": y, "button": "none"}
        if kind in ("mousePressed", "mouseReleased"):
            params.update(button="left", clickCount=1)
        self.send("Input.dispatchMouseEvent", **params)

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def devtools(chromium, tmp_path):
    pytest.importorskip("websockets", reason="the DevTools protocol client is `websockets`")
    browser = DevTools(chromium, tmp_path / "chromium-profile")
    try:
        yield browser
    finally:
        browser.close()


# JavaScript: the page position of point i (the plot view's scales, plus its element's box).
_POINT_XY = """(() => {
  const doc = Bokeh.documents[0];
  const view = Bokeh.index.find_one(doc.get_model_by_name('map'));
  const data = doc.get_model_by_name('points-source').data;
  const box = view.el.getBoundingClientRect();
  return [box.left + view.frame.x_scale.compute(data.x[%d]),
          box.top + view.frame.y_scale.compute(data.y[%d])];
})()"""

_IMAGES_LOADED = """[...document.querySelectorAll('%s')].every(
    (img) => img.complete && img.naturalWidth > 0) && document.querySelectorAll('%s').length"""

# Bokeh widgets render inside shadow roots: search them all.
_DEEP = """(() => {
  const out = [];
  const walk = (root) => {
    root.querySelectorAll('*').forEach((el) => {
      if (el.matches('%s')) out.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
    });
  };
  walk(document);
  return out;
})()"""


def _deep_images(selector: str, *, host: str | None = None) -> str:
    """JavaScript: how many ``selector`` images (in a shadow root of a ``host``) there are,
    or 0 unless all of them have been decoded."""
    img = _DEEP % selector
    if host is not None:
        img += f".filter((i) => i.getRootNode().host?.classList.contains('{host}'))"
    return (
        f"(() => {{ const imgs = {img}; return imgs.length > 0 && imgs.every((i) => "
        "i.complete && i.naturalWidth > 0) ? imgs.length : 0; })()"
    )


@pytest.mark.slow
def test_page_renders_offline_in_chromium(mapped, devtools, tmp_path):
    ds, st, _ = mapped
    n = ds.sizes["image"]
    page = (st / "results" / "map.html").resolve()
    devtools.send("Network.enable")
    devtools.send("Page.enable")
    devtools.send("Page.navigate", url=page.as_uri())
    devtools.wait_for("window.Bokeh !== undefined && Bokeh.documents.length > 0")

    # the points: every image is in the scatter's data and its glyphs were drawn
    length = devtools.wait_for(
        "Bokeh.documents[0].get_model_by_name('points-source').data.x.length"
    )
    assert length == n
    devtools.wait_for(
        "Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('map')) != null && "
        "Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('map')).is_idle"
    )
    # a thumbnail: the side panel shows the first image's, decoded
    assert devtools.wait_for(_deep_images("#microscale-selected img")) == 1

    # hover a point: the tooltip shows that image's thumbnail and path
    x, y = devtools.evaluate(_POINT_XY % (4, 4))
    devtools.mouse("mouseMoved", x - 20, y - 20)
    devtools.mouse("mouseMoved", x, y)
    assert devtools.wait_for(_deep_images("img", host="bk-Tooltip")) >= 1
    tooltip = devtools.evaluate(
        f"{_DEEP % '.bk-tooltip-content'}.map((el) => el.innerText).join(' ')"
    )
    assert str(ds.image_path.values[4]) in tooltip

    # click it: the panel lists its nearest neighbours, in the stored order
    devtools.mouse("mousePressed", x, y)
    devtools.mouse("mouseReleased", x, y)
    devtools.wait_for(
        "Bokeh.documents[0].get_model_by_name('points-source').selected.indices.length > 0"
    )
    clicked = devtools.evaluate(
        "Bokeh.documents[0].get_model_by_name('points-source').selected.indices[0]"
    )
    assert devtools.wait_for(_deep_images("#microscale-neighbors img")) == ds.sizes["rank"]
    listed = devtools.evaluate(f"{_DEEP % '#microscale-neighbors li'}.map((li) => li.innerText)")
    neighbours = ds.neighbor.sel(descriptor="ps").values[clicked]
    for text, j in zip(listed, neighbours, strict=True):
        assert str(ds.image_path.values[j]) in text

    # the colour selector recolours the points
    before = devtools.evaluate(
        "Array.from(Bokeh.documents[0].get_model_by_name('points-source').data.color)"
    )
    devtools.evaluate("Bokeh.documents[0].get_model_by_name('csel').value = 'outlier score (ps)'")
    after = devtools.evaluate(
        "Array.from(Bokeh.documents[0].get_model_by_name('points-source').data.color)"
    )
    assert len(after) == n and after != before

    # the axis selectors show the third MDS component
    devtools.evaluate("Bokeh.documents[0].get_model_by_name('xsel').value = '3'")
    shown = devtools.evaluate(
        "(() => { const d = Bokeh.documents[0].get_model_by_name('points-source').data;"
        " return [Array.from(d.x), Array.from(d.ps_c2)]; })()"
    )
    assert shown[0] == shown[1]
    np.testing.assert_allclose(
        shown[0], ds.embedding.sel(descriptor="ps", n_components=3).values[:, 2], rtol=1e-6
    )

    # offline: nothing but the file itself and data: URIs was requested
    devtools.send("Runtime.evaluate", expression="1")  # flush pending events
    urls = [
        e["params"]["request"]["url"]
        for e in devtools.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls

    # a screenshot that is not blank
    shot = base64.b64decode(devtools.send("Page.captureScreenshot", format="png")["data"])
    path = tmp_path / "map.png"
    path.write_bytes(shot)
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 800
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    print(f"screenshot of the interactive map: {path}")


def test_pipeline_summary_links_the_interactive_map(mapped, tmp_path):
    from flows.embed import embed_task, summary_markdown
    from flows.params import PipelineParams

    _, mapped_store, _ = mapped
    archive, st = mapped_store.parent / "demo", tmp_path / "st"
    shutil.copytree(mapped_store, st)  # the flow rewrites results/: leave the fixture's alone
    params = PipelineParams(
        archive=archive, store=st, descriptors=["ps"], n_components=[1, 2, 3], tile_size=32
    )
    files, summary = embed_task.fn(params)
    page = (st / "results" / "map.html").resolve()
    assert summary["interactive_map"] == str(page)
    assert summary["n_neighbors"] == 5 and set(summary["outliers"]) == {"ps"}
    top_path, top_score = summary["outliers"]["ps"][0]
    scores = summary["outliers"]["ps"]
    assert [s for _, s in scores] == sorted((s for _, s in scores), reverse=True)
    text = summary_markdown(summary, files)
    assert f"[map.html]({page.as_uri()})" in text
    assert "## Interactive map" in text and f"`{top_path}` ({top_score})" in text
