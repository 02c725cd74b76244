"""microscale serve lists the store's runs (index table and /runs.json), read-only."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest

from microscale.runlog import RUNS_DIR, record_run
from microscale.serve import serving

FLOW_URL = "http://127.0.0.1:4200/runs/flow-run/0b5c"


def _get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        err.close()
        return err.code, b""


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture()
def store(tmp_path):
    """Four runs: one whose outputs a later run rewrote, that later run, a failed one and
    one killed midway; plus a damaged record file."""
    store = tmp_path / "store"
    results = store / "results"
    (results / "map.zarr").mkdir(parents=True)
    (results / "map.zarr" / "zarr.json").write_text("{}")
    html, png = results / "map.html", results / "map.png"
    with record_run(store, run_id="run-old", flow_run_url=FLOW_URL) as run:
        html.write_text("<html>old map</html>")
        png.write_bytes(b"\x89PNG old")
        run.update(
            counts={"files_found": 4, "files_processed": 3, "files_skipped": 1,
                    "files_failed": 0, "images": 3, "images_new": 3, "tiles": 12},
            outputs=[results / "map.zarr", html, png],
        )  # fmt: skip
    time.sleep(0.01)
    with record_run(store, run_id="run-new") as run:
        html.write_text("<html>the new map</html>")  # rewrites the old run's page
        run.update(outputs=[html, results / "gone.png"])
    with pytest.raises(RuntimeError):
        with record_run(store, run_id="<b>run-failed</b>", flow_run_url="javascript:alert(1)"):
            raise RuntimeError("the Dask cluster has no workers")
    # a run killed midway: its record says 'running', its process is gone
    with record_run(store, run_id="run-killed") as run:
        killed = run.record | {"outcome": "running", "ended": None, "pid": _dead_pid()}
        path = run.path
    path.write_text(json.dumps(killed))
    (store / RUNS_DIR / "20000101T000000000000Z-cut.json").write_text('{"run_id": ')
    return store


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture()
def served(store):
    with serving(store, port=0) as url:
        yield url


def _run_rows(page: str) -> list[str]:
    table = page[page.index("<table id='runs'>") :]
    return re.findall(r"<tr class='run [^']*'>.*?</tr>", table, flags=re.S)


def test_the_index_lists_the_runs_newest_first_with_working_links(served, store):
    status, body = _get(f"{served}/")
    page = body.decode()
    assert status == 200
    rows = _run_rows(page)
    ids = [re.search(r"<code>(.*?)</code>", row).group(1) for row in rows]
    assert ids == ["run-killed", "&lt;b&gt;run-failed&lt;/b&gt;", "run-new", "run-old"]
    killed, failed, new, old = rows
    assert "interrupted" in killed and "no longer holds the store" in killed
    assert "failed: RuntimeError: the Dask cluster has no workers" in failed
    assert "javascript:" not in failed  # only http(s) pages are linked
    assert f"<a href='{FLOW_URL}'>flow run</a>" in old
    assert "4 found: 3 processed, 1 skipped, 0 failed" in old
    assert "3 (3 new); 12 tiles" in old
    # each run links the outputs it wrote; a page a later run rewrote is marked so
    assert "map.html</a> <small>(rewritten)</small>" in old
    assert "map.html</a>" in new and "map.html</a> <small>" not in new
    assert "gone.png <small>(missing)</small>" in new and "gone.png</a>" not in new
    hrefs = {h for row in rows for h in re.findall(r"href='([^']*)'", row)} - {FLOW_URL}
    assert hrefs == {"/results/map.html", "/results/map.png", "/results/map.zarr.zip"}
    for href in hrefs:
        status, content = _get(served + href)
        assert status == 200 and content, href
    assert _get(f"{served}/results/map.html")[1] == b"<html>the new map</html>"
    names = zipfile.ZipFile(io.BytesIO(_get(f"{served}/results/map.zarr.zip")[1])).namelist()
    assert names == ["map.zarr/zarr.json"]
    # the damaged record is named, above the table, and hides no run
    cut = store / RUNS_DIR / "20000101T000000000000Z-cut.json"
    assert f"<li class='problem'>{cut}: not a readable run record" in page


def test_runs_json_parses_and_says_the_same(served, store):
    status, body = _get(f"{served}/runs.json")
    assert status == 200
    data = json.loads(body)
    assert data["store"] == str(store.resolve())
    runs = data["runs"]
    assert [r["run_id"] for r in runs] == [
        "run-killed", "<b>run-failed</b>", "run-new", "run-old",
    ]  # fmt: skip
    assert [r["outcome"] for r in runs] == ["interrupted", "failed", "completed", "completed"]
    assert runs[0]["recorded_outcome"] == "running"
    old = {Path(o["path"]).name: o for o in runs[3]["outputs"]}
    assert {k: (o["href"], o["state"]) for k, o in old.items()} == {
        "map.zarr": ("/results/map.zarr.zip", "current"),
        "map.html": ("/results/map.html", "rewritten"),
        "map.png": ("/results/map.png", "current"),
    }
    assert runs[3]["flow_run_url"] == FLOW_URL and runs[3]["counts"]["tiles"] == 12
    (problem,) = data["problems"]
    assert "20000101T000000000000Z-cut.json" in problem


def test_serving_the_runs_writes_nothing_and_serves_no_record_file(served, store):
    before = _tree(store.parent)
    for path in ("/", "/runs.json", "/index.html"):
        assert _get(served + path)[0] == 200
    name = urllib.parse.quote(sorted((store / RUNS_DIR).iterdir())[-1].name)
    assert _get(f"{served}/{RUNS_DIR}/{name}")[0] == 404  # only results/ as files
    assert _get(f"{served}/results/../{RUNS_DIR}/{name}")[0] == 404
    assert _tree(store.parent) == before


def test_a_store_without_runs_says_so(tmp_path):
    (tmp_path / "results").mkdir()
    with serving(tmp_path, port=0) as url:
        assert "no run recorded yet" in _get(f"{url}/")[1].decode()
        assert json.loads(_get(f"{url}/runs.json")[1])["runs"] == []
