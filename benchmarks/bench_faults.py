"""Fault-injection campaign on a small archive: what breaks, what is redone, what it costs.

Builds a demo archive (with its broken files) plus two decompression bombs, ingests it, runs
the stages once cleanly, then injects real faults with real processes and resumes:

* driver SIGKILLed mid-features and mid-distances (a subprocess that kills itself after k
  units), then a resume in this process;
* a worker SIGKILLed mid-features on a 3-worker LocalCluster (Dask reschedules its task);
* a poisoned batch (a worker plugin, :class:`microscale.testing.faults.Sabotage`, that
  SIGKILLs the worker on one batch: every worker that runs it dies) -> ``FailedUnitsError``
  names it, the others are done, a re-run retries it;
* a cluster with no workers -> ``NoWorkersError`` after ``WORKER_TIMEOUT``;
* damage at rest (a finished store): a tile chunk, a feature chunk or a distance chunk
  deleted, cut short or with a byte flipped; both mirror chunks of a distance block
  rewritten consistently; a completion record deleted, cut short or with its checksum
  changed. Each is checked (``verify_store``: is the unit named?), then healed by a run
  (ingest + stages) and compared with the clean store, chunk file by chunk file.
* hostile inputs of issue 13 (:func:`hostile_cases`, alone with ``--cases hostile``): the
  tile-offset bomb (20480 x 20480 declared in 117 KB, 6400 tiles at one offset), a
  10^10-pixel declaration (shared tiles, and sparse under a budget that admits it: the tile
  cap), and a Zeiss SEM TIFF whose data zone is found in the pixels. Each is ingested in a
  fresh subprocess beside a genuine image: outcome, time to the outcome, peak memory.
* whole ``microscale run`` commands as real processes (``--cases run``): a second run
  while one holds the store's lock, SIGTERM of the driver mid-run, ``kill -9`` of the
  driver mid-run (every process it started must end: Prefect's server, Dask workers),
  the resume, and a no-op re-run (the map must stay bit for bit).

Prints the tables of issue 4's "Figures": files by outcome and reason; units recomputed on
resume; time to detect and to recover; overhead vs a clean run; peak memory of ingesting the
bombs; numeric checks of every final distance matrix (asymmetry, min distance, diagonal,
NaNs) and its max abs difference from the clean run.

    python benchmarks/bench_faults.py [--n 24] [--size 256] [--tile 64] [--descriptor ps]
        [--cases stages,damage,hostile,bombs,run]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from microscale import pipeline as pl
from microscale import store as st
from microscale.demo import write_demo_archive
from microscale.ingest import ingest_archive
from microscale.stages import _runner as runner
from microscale.testing.faults import Sabotage, three_workers
from microscale.testing.hostile import lying_png, shared_tile_tiff, sparse_tiff, zlib_tiff_bomb
from microscale.testing.peaks import print_machine
from microscale.testing.runs import (
    QUICK_OPTIONS,
    descendants,
    run_env,
    start_run,
    wait_for_children,
)

FEATURES = "microscale.stages.features"  # the module whose read_tiles is sabotaged
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# --------------------------------------------------------------------------- helpers


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.3f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(header)]  # fmt: skip
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def add_bombs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    png, tif = folder / "bomb.png", folder / "bomb.tif"
    png.write_bytes(lying_png(20000, 20000))
    zlib_tiff_bomb(tif)
    return [png, tif]


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def distances(root: Path, descriptor: str) -> np.ndarray:
    return st.read_array(st.open_store(root), f"distances/{descriptor}")


def n_done(root: Path, stage: str) -> int:
    return len(st.open_store(root).done_keys(stage))


def run_and_kill(code: str) -> float:
    """Run ``code`` in a fresh interpreter that SIGKILLs itself; the wall time of its kill.

    The child writes ``time.time()`` to the file named by ``KILLED_AT`` just before it
    kills itself, so that the detection delay (kill -> exit seen -> store lock free) is
    measured across the two processes.
    """
    with tempfile.NamedTemporaryFile(suffix=".t", delete=False) as fh:
        stamp = fh.name
    env = {**os.environ, "KILLED_AT": stamp}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if out.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the driver was not killed (rc {out.returncode}):\n{out.stderr}")
    killed_at = float(Path(stamp).read_text())
    os.unlink(stamp)
    return killed_at


DIE_AFTER = """
import os, signal, time
from microscale import pipeline

def die_after(done, total):
    if done == {k}:
        with open(os.environ["KILLED_AT"], "w") as fh:
            fh.write(repr(time.time()))
        os.kill(os.getpid(), signal.SIGKILL)
"""


def wait_until_lock_free(root: Path) -> float:
    """Time of the first moment the store's run lock could be taken."""
    store = st.open_store(root)
    while True:
        try:
            with store.lock():
                return time.time()
        except st.StoreLockedError:
            time.sleep(0.01)


# --------------------------------------------------------------------------- stages


def stage_features(root: Path, d: str, client=None, on_done=None) -> pl.StageCounts:  # noqa: ANN001
    return pl.run_features(root, descriptor=d, client=client, on_done=on_done)


def stage_rest(root: Path, d: str, block: int, client=None, on_done=None) -> pl.StageCounts:  # noqa: ANN001
    pl.image_features(root, descriptor=d, client=client, images_per_task=4)
    return pl.run_distances(
        root, descriptor=d, client=client, block_size=block, pairs_per_task=1, on_done=on_done
    )


def all_stages(root: Path, d: str, block: int) -> dict[str, float]:
    times = {}
    t = time.perf_counter()
    stage_features(root, d)
    times["features"] = time.perf_counter() - t
    t = time.perf_counter()
    pl.image_features(root, descriptor=d, images_per_task=4)
    times["image_features"] = time.perf_counter() - t
    t = time.perf_counter()
    pl.run_distances(root, descriptor=d, block_size=block, pairs_per_task=1)
    times["distances"] = time.perf_counter() - t
    return times


# --------------------------------------------------------------------------- scenarios


def kill_driver_features(base: Path, work: Path, d: str, block: int, clean_t: dict) -> dict:
    root = copy_store(base, work / "kill_driver_features")
    todo = pl.plan_feature_batches(root, descriptor=d)
    k = max(1, len(todo) // 2)
    tiles = sum(b.stop - b.start for b in todo[:k])  # on_done counts tiles: k batches' worth
    t0 = time.perf_counter()
    killed_at = run_and_kill(
        DIE_AFTER.format(k=tiles)
        + f"pipeline.run_features({str(root)!r}, descriptor={d!r}, on_done=die_after)\n"
    )
    detected = wait_until_lock_free(root) - killed_at
    lost = time.perf_counter() - t0
    before = n_done(root, f"features.{d}")
    t = time.perf_counter()
    counts = stage_features(root, d)
    recover = time.perf_counter() - t
    stage_rest(root, d, block)
    return {
        "name": "driver killed mid-features",
        "root": root,
        "unit": "batches",
        "done_before": before,
        "counts": counts,
        "detect_s": detected,
        "recover_s": recover,
        "faulty_s": lost + recover,
        "clean_s": clean_t["features"],
        "note": f"SIGKILL after {k}/{len(todo)} batches (faulty total includes the killed "
        "driver's interpreter start, ~0.3 s)",
    }


def kill_driver_distances(base: Path, work: Path, d: str, block: int, clean_t: dict) -> dict:
    root = copy_store(base, work / "kill_driver_distances")
    stage_features(root, d)
    pl.image_features(root, descriptor=d, images_per_task=4)
    n_img = st.open_store(root).n_images
    nb = -(-n_img // block)
    n = nb * (nb + 1) // 2
    k = max(1, n // 2)
    t0 = time.perf_counter()
    killed_at = run_and_kill(
        DIE_AFTER.format(k=k)
        + f"pipeline.run_distances({str(root)!r}, descriptor={d!r}, block_size={block}, "
        "pairs_per_task=1, on_done=die_after)\n"
    )
    detected = wait_until_lock_free(root) - killed_at
    lost = time.perf_counter() - t0
    before = n_done(root, f"distances.{d}")
    t = time.perf_counter()
    counts = pl.run_distances(root, descriptor=d, block_size=block, pairs_per_task=1)
    recover = time.perf_counter() - t
    return {
        "name": "driver killed mid-distances",
        "root": root,
        "unit": "block pairs",
        "done_before": before,
        "counts": counts,
        "detect_s": detected,
        "recover_s": recover,
        "faulty_s": lost + recover,
        "clean_s": clean_t["distances"],
        "note": f"SIGKILL after {k}/{n} pairs (faulty total includes the killed driver's "
        "interpreter start and its features/centre reads)",
    }


def kill_worker_features(base: Path, work: Path, d: str, block: int, delay: float) -> dict:
    clean = copy_store(base, work / "cluster_clean")
    root = copy_store(base, work / "kill_worker_features")
    killed: list[dict] = []
    log = work / "worker_reads.log"
    with three_workers(
        Sabotage(FEATURES, "read_tiles", delay, log=str(log)), env=ONE_THREAD
    ) as client:
        t = time.perf_counter()
        stage_features(clean, d, client=client)
        clean_s = time.perf_counter() - t
        log.write_text("")  # count the faulty run's reads only
        n_workers_before = len(client.nthreads())

        def watch(address: str, t_kill: float) -> None:  # scheduler notices the loss
            while time.monotonic() - t_kill < 60:
                if address not in client.nthreads():
                    killed[0]["detect_s"] = time.monotonic() - t_kill
                    return
                time.sleep(0.02)

        calls: list[int] = []

        def on_done(done: int, total: int) -> None:  # the third report: with "ps" (no
            calls.append(done)  # counts within batches) the second batch's end
            if len(calls) == 3 and not killed:
                for address, keys in client.processing().items():
                    if keys:
                        pid = client.run(os.getpid, workers=[address])[address]
                        t_kill = time.monotonic()
                        os.kill(pid, signal.SIGKILL)
                        killed.append({"lost_tasks": len(keys), "t_kill": t_kill})
                        thread = threading.Thread(target=watch, args=(address, t_kill))
                        thread.start()
                        killed[0]["thread"] = thread
                        return

        t = time.perf_counter()
        counts = stage_features(root, d, client=client, on_done=on_done)
        faulty_s = time.perf_counter() - t
        if killed:
            killed[0]["recover_s"] = time.monotonic() - killed[0]["t_kill"]
            killed[0]["thread"].join()
        n_workers_after = len(client.nthreads())
    reads = len(log.read_text().splitlines())
    resume = stage_features(root, d)  # nothing should be left
    stage_rest(root, d, block)
    info = killed[0] if killed else {}
    return {
        "name": "worker killed mid-features",
        "root": root,
        "unit": "batches",
        "done_before": counts.total - resume.computed,
        "counts": resume,
        "detect_s": info.get("detect_s", float("nan")),
        "recover_s": info.get("recover_s", float("nan")),  # kill -> the run's end
        "faulty_s": faulty_s,
        "clean_s": clean_s,
        "note": (
            f"{len(killed)} worker SIGKILLed while running {info.get('lost_tasks', 0)} task(s); "
            f"batch reads on workers {reads} for {counts.total} batches (re-runs: "
            f"{reads - counts.total}, lost results included); workers "
            f"{n_workers_before}->{n_workers_after}; {delay} s/read sabotage"
        ),
    }


def poison_batch(base: Path, work: Path, d: str, block: int, delay: float) -> dict:
    root = copy_store(base, work / "poison_batch")
    batches = pl.plan_feature_batches(root, descriptor=d)
    victim = batches[len(batches) // 2]
    log = work / "poison_reads.log"
    plugin = Sabotage(FEATURES, "read_tiles", delay, poison=victim.start, log=str(log))
    with three_workers(plugin, allowed_failures=1, env=ONE_THREAD) as client:
        t = time.perf_counter()
        try:
            stage_features(root, d, client=client)
            failed, error = {}, "no error"
        except pl.FailedUnitsError as exc:
            failed, error = exc.failed, "FailedUnitsError"
        detect = time.perf_counter() - t
        alive = len(client.nthreads())
    done = st.open_store(root).done_keys(f"features.{d}")
    before = len(done)
    reads = len(log.read_text().splitlines())
    t = time.perf_counter()
    counts = stage_features(root, d)  # the poison is gone: a re-run retries only that batch
    recover = time.perf_counter() - t
    stage_rest(root, d, block)
    others = sorted(int(k) for k in done)
    all_but_victim = victim.index not in others and len(others) == len(batches) - 1
    victim_tries = log.read_text().split().count(str(victim.start))
    return {
        "name": "poisoned batch (kills every worker)",
        "root": root,
        "unit": "batches",
        "done_before": before,
        "counts": counts,
        "detect_s": detect,
        "recover_s": recover,
        "faulty_s": detect + recover,
        "clean_s": float("nan"),
        "note": (
            f"{error}: given up {list(failed)}; {len(others)}/{len(batches)} others done "
            f"(all but #{victim.index}: {all_but_victim}); {alive} workers alive after; "
            f"batch reads on workers {reads} for {len(batches)} batches "
            f"(victim tried {victim_tries}x)"
        ),
    }


def no_workers(base: Path, work: Path, d: str, block: int, timeout: float) -> dict:
    import distributed

    root = copy_store(base, work / "no_workers")
    old = runner.WORKER_TIMEOUT
    runner.WORKER_TIMEOUT = timeout
    try:
        with (
            distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as c,
            distributed.Client(c) as client,
        ):
            t = time.perf_counter()
            try:
                stage_features(root, d, client=client)
                error = "no error!"
            except pl.NoWorkersError as exc:
                error = f"NoWorkersError: {str(exc)[:60]}..."
            detect = time.perf_counter() - t
    finally:
        runner.WORKER_TIMEOUT = old
    before = n_done(root, f"features.{d}")
    t = time.perf_counter()
    counts = stage_features(root, d)
    recover = time.perf_counter() - t
    stage_rest(root, d, block)
    return {
        "name": "no workers",
        "root": root,
        "unit": "batches",
        "done_before": before,
        "counts": counts,
        "detect_s": detect,
        "recover_s": recover,
        "faulty_s": detect + recover,
        "clean_s": float("nan"),
        "note": f"WORKER_TIMEOUT={timeout}s -> {error}",
    }


# --------------------------------------------------------------------------- damage


def _flip(path: Path) -> None:
    data = path.read_bytes()
    i = len(data) // 2
    path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1 :])


def _chunk_damage(chunk: str, how: str):  # noqa: ANN202
    def damage(root: Path) -> None:
        path = root / st.GROUP_NAME / chunk
        if how == "delete":
            path.unlink()
        elif how == "truncate":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        else:
            _flip(path)

    return damage


def _mirror_rewrite(d: str, block: int):  # noqa: ANN202
    def damage(root: Path) -> None:  # block (0, 1) and its mirror, times 3: still symmetric
        s = st.open_store(root)
        name = f"distances/{d}"
        D = st.read_rows(s, name)
        a, b = (0, block), (block, 2 * block)
        st.write_block(s, name, 3 * D[0:block, block : 2 * block], rows=a, cols=b)
        st.write_block(s, name, 3 * D[block : 2 * block, 0:block], rows=b, cols=a)

    return damage


def _record_damage(stage: str, key: str, how: str):  # noqa: ANN202
    def damage(root: Path) -> None:
        path = root / st.DONE_DIR / stage / key
        if how == "delete":
            path.unlink()
        elif how == "truncate":
            path.write_bytes(path.read_bytes()[:20])
        else:  # a changed checksum
            text = path.read_text()
            i = text.index('"crc32c": "') + len('"crc32c": "')
            path.write_text(text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1 :])

    return damage


def _chunk_files(root: Path) -> dict[str, bytes]:
    group = root / st.GROUP_NAME
    names = ("tiles", "features", "image_features", "image_feature_sums", "distances")
    return {
        str(p.relative_to(group)): p.read_bytes()
        for name in names
        for p in (group / name).rglob("c/**/*")
        if p.is_file()
    }


def damage_cases(
    clean: Path, archive: Path, work: Path, d: str, block: int, ingest_options: dict
) -> list[list[object]]:
    """Each damage case on a copy of the finished store: named? healed? how long?"""
    from microscale.stages.verify import verify_store

    want = _chunk_files(clean)
    cases = [
        ("tile chunk: byte flipped", "tiles 000000001", _chunk_damage("tiles/c/1/0/0", "flip")),
        ("tile chunk: deleted", "tiles 000000001", _chunk_damage("tiles/c/1/0/0", "delete")),
    ]
    for how in ("delete", "truncate", "flip"):
        cases.append((f"feature chunk: {how}", f"features.{d} 000000001",
                      _chunk_damage(f"features/{d}/c/1/0", how)))  # fmt: skip
    for how in ("delete", "truncate", "flip"):
        cases.append((f"distance chunk (one side): {how}", f"distances.{d} 000000-000001",
                      _chunk_damage(f"distances/{d}/c/1/0", how)))  # fmt: skip
    cases.append(("distance block, both mirror chunks rewritten consistently",
                  f"distances.{d} 000000-000001", _mirror_rewrite(d, block)))  # fmt: skip
    for how in ("delete", "truncate", "flip"):
        cases.append((f"completion record: {how}", f"distances.{d} 000001-000001",
                      _record_damage(f"distances.{d}", "000001-000001", how)))  # fmt: skip
    rows = []
    for label, unit, damage in cases:
        root = copy_store(clean, work / f"damage_{len(rows)}")
        damage(root)
        t = time.perf_counter()
        report = verify_store(root)
        check_s = time.perf_counter() - t
        named = any(f"{p.stage} {p.key}" == unit for p in report.problems)
        t = time.perf_counter()
        try:
            ingest_archive(archive, root, **ingest_options)
            stage_features(root, d)
            pl.image_features(root, descriptor=d, images_per_task=4)
            counts = pl.run_distances(root, descriptor=d, block_size=block, pairs_per_task=1)
            outcome = (
                "healed, bit-identical" if _chunk_files(root) == want and verify_store(root).ok
                else "healed, DIFFERS from clean"
            )  # fmt: skip
            outcome += f" ({counts.computed} block pair(s) redone)"
        except Exception as exc:  # a case that fails must not hide the others
            outcome = f"run failed: {type(exc).__name__}: {str(exc)[:60]}"
        run_s = time.perf_counter() - t
        rows.append([label, f"{unit}: {'yes' if named else 'NO'}", outcome, check_s, run_s])
    return rows


# --------------------------------------------------------------------------- bombs

BOMB_CODE = """
import json, resource, sys, tracemalloc
from microscale.ingest import ingest_archive
import microscale.io, numpy, tifffile  # imported before the baseline
archive, store = sys.argv[1], sys.argv[2]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
report = ingest_archive(archive, store, tile_size=64)
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"traced_peak_mib": peak / 2**20, "maxrss_growth_mib": (rss1 - rss0) / 1024,
                  "maxrss_mib": rss1 / 1024,
                  "outcomes": {k: [v["status"], v.get("kind", ""), v.get("reason", "")]
                               for k, v in report.outcomes.items()}}))
"""


def bomb_memory(work: Path) -> list[list[object]]:
    rows = []
    for name in ("bomb.png", "bomb.tif"):
        archive = work / f"bombs_{name}"
        archive.mkdir()
        add_bombs(archive)
        for other in archive.iterdir():
            if other.name != name:
                other.unlink()
        size = (archive / name).stat().st_size
        out = subprocess.run(
            [sys.executable, "-c", BOMB_CODE, str(archive), str(work / f"store_{name}")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode:
            rows.append([name, size, "-", "-", "-", f"crashed rc={out.returncode}"])
            continue
        res = json.loads(out.stdout.strip().splitlines()[-1])
        status, kind, reason = res["outcomes"][name]
        claimed = 20000 * 20000 if name == "bomb.png" else 40960 * 40960
        rows.append([
            name,
            size,
            f"{claimed / 2**20:.0f}",
            res["traced_peak_mib"],
            res["maxrss_growth_mib"],
            f"{status}/{kind}: {reason[:70]}",
        ])  # fmt: skip
    return rows


# --------------------------------------------------------------------------- hostile inputs

HOSTILE_CODE = """
import json, resource, sys, time
from microscale.ingest import ingest_archive
from microscale.store import image_table, open_store
import microscale.io, numpy, tifffile  # imported before the baseline
archive, store, max_pixels = sys.argv[1], sys.argv[2], int(sys.argv[3])
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
report = ingest_archive(archive, store, max_pixels=max_pixels)
seconds = time.perf_counter() - t
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
table = image_table(open_store(store)) if report.n_images else None
crops = {str(p): [r.tolist(), s] for p, r, s in zip(table["image_path"], table["crop_rows"],
         table["crop_source"])} if table is not None else {}
print(json.dumps({"seconds": seconds, "maxrss_growth_mib": (rss1 - rss0) / 1024,
                  "n_tiles": report.n_tiles, "crops": crops,
                  "outcomes": {k: [v["status"], v.get("kind", ""), v.get("reason", "")]
                               for k, v in report.outcomes.items()}}))
"""


def hostile_cases(work: Path) -> list[list[object]]:
    """Issue 13's hostile inputs, each ingested with a genuine image in a fresh subprocess."""
    import tifffile

    from microscale.testing.sem import ZEISS_HEADER, sem_specimen, with_info_bar

    def zeiss(path: Path) -> None:
        image = with_info_bar(sem_specimen(), 77)
        tifffile.imwrite(path, image, extratags=[(34118, "B", 0, ZEISS_HEADER.encode(), True)])

    cases = [  # name, file, builder, max_pixels
        ("tile-offset bomb 20480^2", "bomb.tif", shared_tile_tiff, 2**28),
        ("10^10 px, shared tiles", "giga.tif", lambda p: shared_tile_tiff(p, side=100_000), 2**28),
        ("10^10 px, sparse, default budget", "sparse.tif", sparse_tiff, 2**28),
        ("10^10 px, sparse, max_pixels=10^10", "sparse.tif", sparse_tiff, 10**10),
        ("Zeiss SEM TIFF, data zone", "zeiss.tif", zeiss, 2**28),
    ]
    rows = []
    for i, (label, name, build, max_pixels) in enumerate(cases):
        archive = work / f"hostile_{i}"
        archive.mkdir()
        build(archive / name)
        tifffile.imwrite(archive / "genuine.tif", sem_specimen(h=256, w=256, seed=3))
        out = subprocess.run(
            [sys.executable, "-c", HOSTILE_CODE, str(archive), str(work / f"hstore_{i}"),
             str(max_pixels)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        size = (archive / name).stat().st_size
        if out.returncode:
            rows.append([label, size, f"crashed rc={out.returncode}", "-", "-", "-"])
            continue
        res = json.loads(out.stdout.strip().splitlines()[-1])
        status, kind, reason = res["outcomes"][name]
        crop = res["crops"].get(name)
        outcome = f"{status}/{kind}" + (f" crop {crop[0]} ({crop[1]})" if crop else "")
        genuine = res["outcomes"]["genuine.tif"][0]
        rows.append([label, size, outcome, res["seconds"], res["maxrss_growth_mib"],
                     f"genuine.tif {genuine}; {reason[:60]}"])  # fmt: skip
    return rows


def hostile_table(work: Path) -> None:
    table(
        "Hostile inputs of issue 13 (fresh subprocess each, with a genuine 256x256 image)",
        ["case", "bytes", "outcome", "time to outcome s", "maxrss growth MiB", "notes"],
        hostile_cases(work),
    )


# --------------------------------------------------------------------------- whole runs


def _cli(*args: object, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "microscale.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=run_env(),
    )


def _wait_gone(procs: list, timeout: float = 60) -> tuple[float, int]:
    """Seconds until every process of ``procs`` has ended, and how many were still alive."""
    import psutil

    t = time.perf_counter()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    left = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in left:
        p.kill()
    return time.perf_counter() - t, len(left)


def _embeddings(store: Path) -> np.ndarray:
    from microscale.results import read_dataset

    with read_dataset(store / "results" / "map.nc") as ds:
        return ds.embedding.values.copy()


def whole_run_cases(archive: Path, work: Path) -> list[dict]:
    """The faults of issue 13 on real ``microscale run`` processes: case, outcome, times."""
    store = work / "run_store"
    rows = []
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}

    # 1. a second run while the first holds the lock; then SIGTERM of the first, mid-run
    first = start_run(archive, store, **quiet)
    deadline = time.monotonic() + 120
    while lock_pid(store) != first.pid:
        if first.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the first run did not take the lock (rc {first.poll()})")
        time.sleep(0.02)
    t = time.perf_counter()
    second = _cli("run", archive, "--store", store, *QUICK_OPTIONS, timeout=60)
    refused = time.perf_counter() - t
    lines = second.stderr.strip().splitlines()
    rows.append({
        "case": "second run while one holds the lock",
        "outcome": f"exit {second.returncode}, {len(lines)} line(s): "
                   f"{lines[0][:60] if lines else ''}...",
        "detect_s": refused,
        "recover_s": float("nan"),
    })  # fmt: skip
    children = wait_for_children(first.pid)
    t = time.perf_counter()
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=120)
    exited = time.perf_counter() - t
    gone, left = _wait_gone(children)
    rows.append({
        "case": "SIGTERM of the driver mid-run",
        "outcome": f"exit {first.returncode}; {len(children)} child process(es), {left} left",
        "detect_s": exited,
        "recover_s": exited + gone,
    })  # fmt: skip

    # 2. kill -9 of the driver mid-run: the children must end; the next run resumes
    run = start_run(archive, store, **quiet)
    children = wait_for_children(run.pid)
    t = time.perf_counter()
    run.kill()
    run.wait()
    gone, left = _wait_gone(children)
    reaped = time.perf_counter() - t
    t = time.perf_counter()
    resume = _cli("run", archive, "--store", store, *QUICK_OPTIONS)
    resumed = time.perf_counter() - t
    took_over = "Taking over the lock" in resume.stderr
    rows.append({
        "case": "kill -9 of the driver mid-run",
        "outcome": f"{len(children)} child process(es), {left} left after {reaped:.1f} s; "
                   f"resume exit {resume.returncode} (stale lock taken over: {took_over})",
        "detect_s": reaped,
        "recover_s": reaped + resumed,
    })  # fmt: skip

    # 3. a no-op re-run: nothing new, nothing recomputed, the map bit for bit
    before = _embeddings(store)
    t = time.perf_counter()
    again = _cli("run", archive, "--store", store, *QUICK_OPTIONS)
    wall = time.perf_counter() - t
    same = again.returncode == 0 and np.array_equal(_embeddings(store), before, equal_nan=True)
    rows.append({
        "case": "no-op re-run",
        "outcome": f"exit {again.returncode}; map bit for bit: {same}; "
                   f"'no new images: map unchanged' printed: "
                   f"{'no new images: map unchanged' in again.stdout}",
        "detect_s": float("nan"),
        "recover_s": wall,
    })  # fmt: skip
    leftovers = [p for r in (first, run) for p in descendants(r.pid)]
    if leftovers:
        print(f"  processes left by the runs: {[p.pid for p in leftovers]}")
    return rows


def lock_pid(store: Path) -> int | None:
    from microscale.lock import lock_holder

    return (lock_holder(store) or {}).get("pid") if store.exists() else None


# --------------------------------------------------------------------------- main


def numeric(D: np.ndarray) -> list[object]:
    off = D[~np.eye(len(D), dtype=bool)]
    return [
        D.shape[0],
        float(np.nanmax(np.abs(D - D.T))),
        float(np.nanmin(off)) if off.size else float("nan"),
        float(np.nanmax(np.abs(np.diag(D)))),
        int(np.isnan(D).sum()),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=24, help="demo textures")
    p.add_argument("--size", type=int, default=256, help="image side")
    p.add_argument("--tile", type=int, default=64, help="tile side")
    p.add_argument("--tiles-per-chunk", type=int, default=16, help="tiles per feature batch")
    p.add_argument("--block", type=int, default=4, help="distance block (images)")
    p.add_argument("--descriptor", default="ps", choices=("ps", "cnn"))
    p.add_argument("--delay", type=float, default=0.3, help="sabotaged read delay on workers")
    p.add_argument("--worker-timeout", type=float, default=5.0)
    p.add_argument("--skip-cluster", action="store_true", help="no Dask scenarios")
    p.add_argument(
        "--cases",
        default="stages,damage,hostile,bombs,run",
        help="comma-separated: stages (faults of the stages), damage (damage at rest: "
        "check and heal), hostile (crafted inputs), bombs (ingest memory), run "
        "(whole `microscale run` processes: lock, SIGTERM, kill -9, no-op re-run)",
    )
    args = p.parse_args()
    print_machine()
    cases = set(args.cases.split(","))
    d = args.descriptor
    t_all = time.perf_counter()

    import distributed

    print(f"machine: {os.cpu_count()} cores (usable {len(os.sched_getaffinity(0))}), "
          f"python {sys.version.split()[0]}, numpy {np.__version__}, "
          f"distributed {distributed.__version__}")  # fmt: skip
    print(f"archive: demo n={args.n} size={args.size} + 2 bombs; tile {args.tile}, "
          f"{args.tiles_per_chunk} tiles/batch, block {args.block}, descriptor {d!r}")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="bench_faults_") as tmp:
        work = Path(tmp)
        archive = write_demo_archive(work / "archive", n=args.n, size=args.size)
        add_bombs(archive / "bombs")
        failures = []
        if "stages" in cases:
            base = work / "base"
            t = time.perf_counter()
            report = ingest_archive(
                archive, base, tile_size=args.tile, tiles_per_chunk=args.tiles_per_chunk
            )
            ingest_s = time.perf_counter() - t
            counts = report.counts()
            table(
                f"Files by outcome ({sum(counts.values())} found, ingest {ingest_s:.2f} s, "
                f"{report.n_images} images, {report.n_tiles} tiles)",
                ["outcome", "files"],
                [[k, v] for k, v in counts.items()],
            )
            table(
                "Files by outcome and reason",
                ["outcome", "reason", "files"],
                [[s, k, v] for (s, k), v in sorted(report.reasons().items())],
            )
            table(
                "Every file not processed",
                ["file", "outcome", "reason"],
                [[f, o["status"], o.get("reason", "")[:90]]
                 for f, o in sorted(report.outcomes.items()) if o["status"] != "processed"],
            )  # fmt: skip

            clean = copy_store(base, work / "clean")
            clean_t = all_stages(clean, d, args.block)
            D0 = distances(clean, d)

            results = []
            scenarios = [
                ("driver/features",
                 lambda: kill_driver_features(base, work, d, args.block, clean_t)),
                ("driver/distances",
                 lambda: kill_driver_distances(base, work, d, args.block, clean_t)),
            ]  # fmt: skip
            if not args.skip_cluster:
                scenarios += [
                    ("worker", lambda: kill_worker_features(base, work, d, args.block, args.delay)),
                    ("poison", lambda: poison_batch(base, work, d, args.block, args.delay)),
                    ("none", lambda: no_workers(base, work, d, args.block, args.worker_timeout)),
                ]
            for label, fn in scenarios:
                t = time.perf_counter()
                try:
                    results.append(fn())
                except Exception as exc:  # one broken scenario must not hide the others
                    failures.append(f"{label}: {type(exc).__name__}: {exc}")
                print(f"  [{label}: {time.perf_counter() - t:.1f} s]", flush=True)

            table(
                "Recomputed after each crash (resume run)",
                ["fault", "unit", "done before resume", "recomputed / total", "fraction",
                 "redone beyond missing"],
                [[r["name"], r["unit"], r["done_before"],
                  f"{r['counts'].computed}/{r['counts'].total}",
                  r["counts"].computed / max(1, r["counts"].total),
                  r["counts"].computed - (r["counts"].total - r["done_before"])]
                 for r in results],
            )  # fmt: skip
            table(
                "Time to detect and recover (s)",
                ["fault", "detect", "recover (resume run)", "faulty total", "clean", "overhead"],
                [[r["name"], r["detect_s"], r["recover_s"], r["faulty_s"], r["clean_s"],
                  (f"{r['faulty_s'] / r['clean_s']:.2f}x" if r["clean_s"] == r["clean_s"]
                   else "-")]
                 for r in results],
            )  # fmt: skip
            table("Notes", ["fault", "what happened"], [[r["name"], r["note"]] for r in results])
            table(
                "Clean run, sequential stage times (s)",
                ["stage", "seconds"],
                [[k, v] for k, v in clean_t.items()],
            )

            rows = [["clean", *numeric(D0), 0.0]]
            for r in results:
                D = distances(r["root"], d)
                diff = float(np.nanmax(np.abs(D - D0))) if D.shape == D0.shape else float("nan")
                rows.append([r["name"], *numeric(D), diff])
            table(
                f"Numeric checks of distances/{d}",
                ["run", "n", "max |D-D^T|", "min off-diag", "max |diag|", "NaNs", "max |D-clean|"],
                rows,
            )

        if "damage" in cases:
            clean = work / "damage-clean"
            ingest_options = {"tile_size": args.tile, "tiles_per_chunk": args.tiles_per_chunk}
            ingest_archive(archive, clean, **ingest_options)
            clean_t = all_stages(clean, d, args.block)
            table(
                "Damage at rest: named by `microscale check`, healed by the next run "
                f"(clean run of the stages: {sum(clean_t.values()):.2f} s)",
                ["case", "unit named by check", "outcome of the next run", "check s", "run s"],
                damage_cases(clean, archive, work, d, args.block, ingest_options),
            )
        if "hostile" in cases:
            hostile_table(work)
        if "bombs" in cases:
            table(
                "Peak memory ingesting decompression bombs (fresh subprocess each)",
                ["file", "bytes", "claimed MiB", "tracemalloc peak MiB", "maxrss growth MiB",
                 "outcome"],
                bomb_memory(work),
            )  # fmt: skip
        if "run" in cases:
            t = time.perf_counter()
            try:
                runs = whole_run_cases(archive, work)
            except Exception as exc:  # report it with the other tables' failures
                runs = []
                failures.append(f"run: {type(exc).__name__}: {exc}")
            print(f"  [run: {time.perf_counter() - t:.1f} s]", flush=True)
            table(
                "Whole `microscale run` processes: case -> outcome -> time to recover (s)",
                ["case", "outcome", "detect", "recover"],
                [[r["case"], r["outcome"], r["detect_s"], r["recover_s"]] for r in runs],
            )
        if failures:
            print("\nScenarios that did not run:")
            for f in failures:
                print(f"  {f}")
    print(f"\ntotal {time.perf_counter() - t_all:.1f} s")


if __name__ == "__main__":
    main()
