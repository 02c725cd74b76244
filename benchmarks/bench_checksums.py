"""What the checksums of completion records cost: a unit's write with and without them.

For a chunk of each kind the stages write (a distance block, a feature batch of texture
vectors, a chunk of tiles), side by side in one process, best of ``--repeat``:

* ``write``: :func:`microscale.store.write_block` of the chunk (Zarr encodes it and writes
  a temporary file that is renamed), then a completion record without checksums;
* ``write + crc``: the same with ``covers=`` (the chunk file read back and hashed with
  CRC32C, its size and time kept in the record), what the stages do now;
* ``verify (full)`` and ``verify (stat)``: :func:`microscale.store.verify_records` hashing
  the chunk, or only comparing its size and modification time (what each run does);
* the bare CRC32C rate (google-crc32c) and zlib's CRC-32 on the same bytes, for reference.

    python benchmarks/bench_checksums.py [--repeat 5] [--block 1024] [--features 305888]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zlib
from pathlib import Path

import google_crc32c
import numpy as np

from microscale import store as st
from microscale.testing.peaks import print_machine


def best(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--block", type=int, default=1024, help="distance block (rows)")
    p.add_argument("--features", type=int, default=305_888, help="texture vector length")
    p.add_argument("--feature-rows", type=int, default=8, help="rows per feature chunk")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--tiles-per-chunk", type=int, default=64)
    args = p.parse_args()
    print_machine()
    rng = np.random.default_rng(0)
    b, d, r = args.block, args.features, args.feature_rows
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_checksums_") as tmp:
        s = st.create_store(Path(tmp) / "s", tile_size=args.tile,
                            tiles_per_chunk=args.tiles_per_chunk)  # fmt: skip
        st.ensure_distance_matrix(s, "distances/x", b, b)
        st.ensure_features_array(s, "image_features/x", d, n_rows=r, chunk_rows=r)
        t = args.tiles_per_chunk
        tiles = rng.random((t, args.tile, args.tile)).astype(np.float32)
        cases = [
            ("distance block", "distances/x", rng.random((b, b)), {"rows": (0, b), "cols": (0, b)}),
            ("feature chunk", "image_features/x", rng.random((r, d), dtype=np.float32),
             {"rows": (0, r)}),
        ]  # fmt: skip
        for name, array, data, region in cases:
            cover = (array, *region.values())

            def write(data=data, region=region, array=array) -> None:
                st.write_block(s, array, data, **region)
                s.mark_done("bench", "k", {"rows": [0, 1]})

            def write_crc(data=data, region=region, array=array, cover=cover) -> None:
                st.write_block(s, array, data, **region)
                s.mark_done("bench", "k", {"rows": [0, 1]}, covers=[cover])

            rows.append((name, data.nbytes, write, write_crc))
        # tiles: zstd-compressed chunks, written by the ingest's appends

        def write_tiles() -> None:
            s.group["tiles"].resize((t, args.tile, args.tile))
            s.group["tiles"][0:t] = tiles
            s.mark_done("bench", "k", {"rows": [0, 1]})

        def write_tiles_crc() -> None:
            s.group["tiles"].resize((t, args.tile, args.tile))
            s.group["tiles"][0:t] = tiles
            s.mark_done("bench", "k", {"rows": [0, 1]}, covers=[("tiles", (0, t))])

        rows.append(("tile chunk (zstd)", tiles.nbytes, write_tiles, write_tiles_crc))
        print(f"{'chunk':<18} {'MiB':>6} {'write s':>9} {'write+crc s':>12} {'ratio':>6} "
              f"{'verify full s':>14} {'verify stat s':>14}")  # fmt: skip
        for name, nbytes, write, write_crc in rows:
            a, c = [], []
            for _ in range(args.repeat):  # interleaved, so both see the same machine
                a.append(best(write, 1))
                c.append(best(write_crc, 1))
            full = best(lambda: st.verify_records(s, "bench", full=True), args.repeat)
            quick = best(lambda: st.verify_records(s, "bench", full=False), args.repeat)
            print(f"{name:<18} {nbytes / 2**20:>6.1f} {min(a):>9.4f} {min(c):>12.4f} "
                  f"{min(c) / min(a):>6.2f} {full:>14.4f} {quick:>14.5f}")  # fmt: skip
    buf = rng.random(2**21).tobytes()
    crc = best(lambda: google_crc32c.value(buf), args.repeat)
    z = best(lambda: zlib.crc32(buf), args.repeat)
    mib = len(buf) / 2**20
    print(f"\nCRC32C (google-crc32c) {len(buf) / crc / 1e9:.1f} GB/s; zlib CRC-32 "
          f"{len(buf) / z / 1e9:.1f} GB/s ({z / crc:.1f}x slower), on {mib:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
