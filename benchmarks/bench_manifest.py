"""Recording file outcomes: the append-only manifest log vs rewriting one JSON document.

Ingest records outcomes in batches of 64 files. The store used to rewrite the whole
manifest (``images.json``) per batch, so recording ``n`` files cost ``O(n^2 / 64)`` bytes;
the log (``images.jsonl``) appends each batch once. Both run side by side here on the
same outcomes; the rewrite is reproduced in this file (``legacy_record``).

    python benchmarks/bench_manifest.py [--files 2000 20000 100000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from microscale import store as st
from microscale.testing.peaks import print_machine

BATCH = 64  # files per record_files call in microscale.ingest


def outcomes(n: int) -> list[dict[str, dict]]:
    batches = []
    for b0 in range(0, n, BATCH):
        batches.append(
            {
                f"site{i % 7}/sample_{i:07d}.tif": {
                    "status": "processed",
                    "reason": "",
                    "image_id": f"{i:064x}",
                }
                for i in range(b0, min(n, b0 + BATCH))
            }
        )
    return batches


def legacy_record(path: Path, batch: dict[str, dict]) -> None:
    """The old rule: read the whole document, update it, write it back atomically."""
    data = json.loads(path.read_text()) if path.exists() else {"images": {}, "files": {}}
    for name, outcome in batch.items():
        data["files"][name] = outcome
        data["images"].setdefault(outcome["image_id"], []).append(name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="+", default=[2000, 20000])
    args = ap.parse_args()
    print_machine()
    print(f"{'files':>8} {'rewrite s':>10} {'log s':>8} {'rewrite/log':>12} {'log MB':>7}")
    for n in args.files:
        batches = outcomes(n)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            legacy = root / "images.json"
            t = time.perf_counter()
            for batch in batches:
                legacy_record(legacy, batch)
            t_old = time.perf_counter() - t
            store = st.create_store(root / "store", tile_size=16)
            t = time.perf_counter()
            for batch in batches:
                st.record_files(store, batch)
            t_new = time.perf_counter() - t
            manifest = st.read_manifest(store)
            assert (
                len(manifest["files"]) == n
                and manifest["files"] == json.loads(legacy.read_text())["files"]
            )
            size = (store.root / st.MANIFEST_NAME).stat().st_size / 1e6
        print(f"{n:>8} {t_old:>10.2f} {t_new:>8.2f} {t_old / t_new:>12.1f} {size:>7.1f}")


if __name__ == "__main__":
    main()
