"""microscale.runlog: one record per run in STORE/runs/, whole, tolerant of crashes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from microscale.errors import StoreLockedError
from microscale.lock import lock_holder
from microscale.runlog import RUNS_DIR, parameters_digest, read_runs, record_run
from microscale.testing.runs import lock_held_elsewhere, run_env


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_completed_run_leaves_one_whole_record(tmp_path):
    store = tmp_path / "store"
    out = store / "results" / "map.html"
    params = {"tile_size": 64, "descriptors": ["ps"]}
    with record_run(store, run_id="run-1", archive="/data/a", parameters=params) as run:
        # while it runs, the record already says so, and the reader sees it live
        (live,) = read_runs(store).runs
        assert (live.outcome, live.ended) == ("running", None)
        run.update(counts={"files_found": 3, "images": 2})
        out.parent.mkdir()
        out.write_text("<html>map</html>")
        run.update(counts={"tiles": 32}, outputs=[out], weights_sha256="abc")
    files = list((store / RUNS_DIR).iterdir())
    assert len(files) == 1 and re.fullmatch(r"\d{8}T\d{12}Z-run-1\.json", files[0].name)
    (rec,) = read_runs(store).runs
    assert rec.run_id == "run-1" and rec.file == files[0].name
    assert (rec.outcome, rec.reason) == ("completed", "")
    assert rec.started <= rec.ended and rec.started.endswith("+00:00")
    assert rec.counts == {"files_found": 3, "images": 2, "tiles": 32}  # merged
    assert rec.archive == "/data/a" and rec.weights_sha256 == "abc"
    assert rec.parameters_digest == parameters_digest(params)
    stat = out.stat()
    assert rec.outputs == (
        {"path": "results/map.html", "kind": "file", "size": stat.st_size,
         "mtime_ns": stat.st_mtime_ns},
    )  # fmt: skip
    assert rec.pid == os.getpid() and rec.versions["microscale"]
    assert json.loads(json.dumps(rec.to_json()))["run_id"] == "run-1"
    assert lock_holder(store) is None  # the lock taken for the block is released


def test_a_failed_run_is_recorded_with_its_reason_and_the_error_goes_on(tmp_path):
    store = tmp_path / "store"
    with pytest.raises(ValueError, match="no images"):
        with record_run(store, run_id="bad"):
            raise ValueError("no images\nin /data/a")
    (rec,) = read_runs(store).runs
    assert rec.outcome == rec.recorded_outcome == "failed"
    assert rec.reason == "ValueError: no images in /data/a"  # one line
    assert rec.ended is not None


def test_a_stopped_run_is_recorded_as_interrupted(tmp_path):
    store = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        with record_run(store):
            raise KeyboardInterrupt("SIGTERM")  # what microscale.reaper raises on SIGTERM
    (rec,) = read_runs(store).runs
    assert (rec.outcome, rec.reason) == ("interrupted", "stopped by SIGTERM")
    assert re.fullmatch(r"[0-9a-f]{12}", rec.run_id)  # no Prefect id: a random one


def test_a_run_killed_midway_shows_as_interrupted(tmp_path):
    """kill -9 leaves the record at 'running'; its process is gone and holds no lock."""
    store = tmp_path / "store"
    code = textwrap.dedent(
        f"""
        import os, signal
        from microscale.runlog import record_run
        with record_run({str(store)!r}, run_id="killed") as run:
            run.update(counts={{"files_found": 5}})
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], env=run_env(), timeout=60)
    assert done.returncode == -9
    (rec,) = read_runs(store).runs
    assert rec.recorded_outcome == "running"  # what the file says
    assert rec.outcome == "interrupted"
    assert rec.pid != os.getpid() and f"pid {rec.pid} on {rec.host}" in rec.reason
    assert "no longer holds the store's lock" in rec.reason
    assert rec.counts == {"files_found": 5}  # what it had recorded before it died
    # the next run takes the lock over and writes its own record; the old one stays
    with record_run(store, run_id="next"):
        pass
    assert [r.run_id for r in read_runs(store).runs] == ["next", "killed"]


def test_runs_are_listed_newest_first(tmp_path):
    store = tmp_path / "store"
    for name in ("first", "second", "third"):
        with record_run(store, run_id=name):
            pass
    assert [r.run_id for r in read_runs(store).runs] == ["third", "second", "first"]


def test_a_flow_inside_a_recorded_command_adds_to_its_record(tmp_path):
    """``microscale run`` records the run; the ``pipeline`` flow it calls adds its
    Prefect id and page to the same record instead of starting a second one."""
    store = tmp_path / "store"
    with record_run(store, parameters={"a": 1}) as outer:
        with record_run(store, run_id="flow-run-id", flow_run_url="http://ui/runs/x") as inner:
            assert inner is outer
            inner.update(counts={"images": 4})
        assert read_runs(store).runs[0].outcome == "running"  # the command has not ended
    (rec,) = read_runs(store).runs
    assert (rec.run_id, rec.flow_run_url, rec.outcome) == (
        "flow-run-id", "http://ui/runs/x", "completed",
    )  # fmt: skip
    assert rec.counts == {"images": 4} and rec.parameters_digest == parameters_digest({"a": 1})


def test_a_run_refused_by_the_lock_writes_nothing(tmp_path):
    store = tmp_path / "store"
    with lock_held_elsewhere(store):
        with pytest.raises(StoreLockedError):
            with record_run(store, run_id="refused"):
                pytest.fail("the block ran without the lock")
        assert not (store / RUNS_DIR).exists()


def test_a_damaged_record_is_named_and_hides_no_other(tmp_path):
    store = tmp_path / "store"
    for name in ("good-1", "good-2"):
        with record_run(store, run_id=name):
            pass
    runs = store / RUNS_DIR
    good = sorted(runs.iterdir())[0]
    (runs / "20250101T000000000000Z-cut.json").write_bytes(good.read_bytes()[:40])
    (runs / "20250101T000000000001Z-list.json").write_text("[1, 2]")
    (runs / "20250101T000000000002Z-nofield.json").write_text('{"run_id": "x"}')
    (runs / "20250101T000000000003Z-outcome.json").write_text(
        '{"run_id": "x", "started": "2025", "outcome": "exploded"}'
    )
    (runs / "20250101T000000000004Z-bytes.json").write_bytes(b"\xff\xfe")
    (runs / ".20250101-x.json.123.abc.tmp").write_text("{")  # a writer's leftover: ignored
    (runs / "notes.txt").write_text("not a record")  # not ours: ignored
    log = read_runs(store)
    assert [r.run_id for r in log.runs] == ["good-2", "good-1"]
    named = {p.file.name: str(p) for p in log.problems}
    assert set(named) == {
        "20250101T000000000000Z-cut.json",
        "20250101T000000000001Z-list.json",
        "20250101T000000000002Z-nofield.json",
        "20250101T000000000003Z-outcome.json",
        "20250101T000000000004Z-bytes.json",
    }
    assert "invalid JSON" in named["20250101T000000000000Z-cut.json"]
    assert "'started'" in named["20250101T000000000002Z-nofield.json"]
    assert "exploded" in named["20250101T000000000003Z-outcome.json"]
    assert all(str(runs) in text for text in named.values())  # each names its file


def test_nothing_is_written_outside_the_store_and_reading_writes_nothing(tmp_path):
    store = tmp_path / "store"
    (tmp_path / "beside.txt").write_text("untouched")
    before = _tree(tmp_path)
    with record_run(store, run_id="r", archive=tmp_path / "archive") as run:
        run.update(counts={"images": 1}, outputs=[tmp_path / "beside.txt"])
    after = _tree(tmp_path)
    added = sorted(set(after) - set(before))
    assert [p for p in added if not p.startswith("store/")] == []
    assert {k: v for k, v in after.items() if not k.startswith("store/")} == before
    assert [p for p in added if p.startswith(f"store/{RUNS_DIR}/")] and all(
        p.startswith((f"store/{RUNS_DIR}/", "store/.lock")) for p in added
    )
    (rec,) = read_runs(store).runs
    assert rec.outputs[0]["path"] == str((tmp_path / "beside.txt").resolve())  # outside: as is
    # a writer killed mid-write leaves a temporary file: the next run removes it
    leftover = store / RUNS_DIR / ".x.json.1.ff.tmp"
    leftover.write_text("{")
    snapshot = _tree(tmp_path)
    read_runs(store)
    assert _tree(tmp_path) == snapshot  # reading writes nothing
    with record_run(store, run_id="r2"):
        pass
    assert not leftover.exists()
