"""Where the distance stage's out-of-core path spends its time, and the path it replaced.

Used by ``bench_distances.py`` and ``profile_distances.py --store``:

- :class:`StageClock` wraps the functions of a distance-stage module (the current
  :mod:`microscale.stages.distances`, or the baseline below) and the kernel's, and adds
  up the wall seconds of each stage of :func:`run_distances`: the row reads, the row
  norms, the kernel, the writes of the chunks, the completion records, the hash of the
  rows before they are read (``_heal_rows``), the centre, and the rest (planning, the
  check of the matrix's records, the square roots, the transposes). Only the outermost
  wrapped call of a thread counts (the reads inside the centre are the centre's); reads
  in a read-ahead thread are counted apart, as they overlap the kernel. It also counts
  the bytes read.
- :func:`load_baseline` loads the stage module of an earlier commit (default
  :data:`BASELINE_REV`, the last one before tasks kept shared blocks and read the chunk
  files directly) from git, under another name, so both paths run side by side in one
  process; :func:`zarr_reads` makes :func:`microscale.store.read_rows` read through Zarr
  as it did then.
"""

from __future__ import annotations

import collections
import contextlib
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import microscale.distance as kernel
from microscale import store as st

#: The commit before the out-of-core changes (snake-ordered tasks that keep shared blocks,
#: direct chunk reads): the baseline of ``bench_distances.py``'s before/after rows.
BASELINE_REV = "72b440d"
#: Stages in print order: (label, function name, where it lives: "stage" or "kernel").
STAGES = (
    ("read rows", "read_rows", "stage"),
    ("row norms", "row_sq_norms", "kernel"),
    ("kernel", "block_sq_distances", "kernel"),
    ("write chunks", "write_block", "stage"),
    ("records", "mark_done", "store"),
    ("hash rows", "_heal_rows", "stage"),
    ("centre", "_ensure_center", "stage"),
)


class StageClock:
    """Wall seconds per stage of ``module.run_distances`` while installed (``with``)."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module = module
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.read_bytes = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, attr: str, label: str) -> None:
        fn = getattr(owner, attr)
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(clock._local, "depth", 0)
            clock._local.depth = depth + 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                clock._local.depth = depth
                if depth == 0:
                    main = threading.current_thread() is threading.main_thread()
                    key = label if main else f"{label} (read-ahead thread)"
                    with clock._lock:
                        clock.seconds[key] += time.perf_counter() - t
                        if attr == "read_rows" and kwargs.get("out") is not None:
                            clock.read_bytes += kwargs["out"].nbytes

        self._saved.append((owner, attr, fn))
        setattr(owner, attr, timed)

    def __enter__(self) -> StageClock:
        owners = {"stage": self.module, "kernel": kernel, "store": st.Store}
        for label, attr, where in STAGES:
            self._wrap(owners[where], attr, label)
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attr, fn in reversed(self._saved):
            setattr(owner, attr, fn)
        self._saved.clear()

    def shares(self, total: float) -> list[tuple[str, float]]:
        """(stage, seconds) in print order, then the rest of ``total`` as ``other``."""
        rows = [(label, self.seconds.get(label, 0.0)) for label, _, _ in STAGES]
        rows += [(k, v) for k, v in self.seconds.items() if k.endswith("thread)")]
        main = sum(v for k, v in self.seconds.items() if not k.endswith("thread)"))
        return [*rows, ("other (plan, sqrt, transpose ...)", total - main)]


def load_baseline(rev: str = BASELINE_REV) -> types.ModuleType | str:
    """``microscale/stages/distances.py`` as of ``rev``, loaded as a module; or why not.

    Everything it imports is today's code (the kernel, the store): only the stage's own
    task order and reads are the old ones. Its tasks run in this process only (Dask
    workers cannot import it).
    """
    repo = Path(__file__).resolve().parents[1]
    try:
        source = subprocess.run(
            ["git", "-C", str(repo), "show", f"{rev}:microscale/stages/distances.py"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"no baseline: git show {rev} failed ({exc})"
    name = f"baseline_distances_{rev}"
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:microscale/stages/distances.py"
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


@contextlib.contextmanager
def zarr_reads() -> Iterator[None]:
    """:func:`microscale.store.read_rows` reads through Zarr, as before the direct reads."""
    saved = getattr(st, "_read_plain_rows", None)
    if saved is None:  # a store module without direct reads
        yield
        return
    st._read_plain_rows = lambda *args: False
    try:
        yield
    finally:
        st._read_plain_rows = saved
