"""`microscale run` leaves one record per run in STORE/runs/, whatever ends it."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from microscale.demo import write_demo_archive
from microscale.runlog import read_runs
from microscale.testing.runs import start_run, wait_for_children

pytestmark = pytest.mark.slow

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_a_stopped_run_and_a_completed_run_are_each_recorded(tmp_path):
    archive = write_demo_archive(tmp_path / "archive", n=9, size=64, seed=4)
    store = tmp_path / "store"
    run = start_run(archive, store, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_children(run.pid)
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 128 + signal.SIGTERM, out
    (stopped,) = read_runs(store).runs
    assert (stopped.outcome, stopped.reason) == ("interrupted", "stopped by SIGTERM")

    done = start_run(archive, store, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    runs = read_runs(store).runs
    assert [r.outcome for r in runs] == ["completed", "interrupted"]  # newest first
    rec = runs[0]
    assert re.fullmatch(UUID, rec.run_id)  # the flow run's id, in the command's one record
    assert rec.flow_run_url is None  # the ephemeral API ends with the run: no page to link
    c = rec.counts
    files = re.search(r"Files: (\d+) processed, (\d+) skipped, (\d+) failed; (\d+) new", out)
    assert files, out
    assert [c["files_processed"], c["files_skipped"], c["files_failed"], c["images_new"]] == [
        int(n) for n in files.groups()
    ]
    assert c["images"] == 9 and c["tiles"] > 0
    printed = [str(Path(p).resolve()) for p in re.findall(r"^  (/\S+)$", out, flags=re.M)]
    assert sorted(str(store.resolve() / o["path"]) for o in rec.outputs) == sorted(printed)
    assert rec.parameters_digest == stopped.parameters_digest  # the same command
    assert rec.ended and rec.versions["prefect"]
