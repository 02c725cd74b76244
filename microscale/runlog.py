"""The store's run log: one small JSON record per run, in ``ROOT/runs/``.

Every ``microscale run`` and every run of the Prefect flow ``pipeline`` leaves a record:
its id (the Prefect flow-run id when there is one), when it started and ended (UTC), its
outcome (``completed``, ``failed`` or ``interrupted``, with a one-line reason), the counts
(files found, processed, skipped, failed; images and tiles, new and in the store), a digest
of its parameters, the outputs it wrote, the package versions and weights hash, and the
address of its Prefect flow-run page when it ran against a Prefect server.
``microscale serve`` lists them (:mod:`microscale.serve`).

How it stays whole:

- **One file per run**, ``runs/<UTC stamp>-<id>.json``: no two runs ever write the same
  file, and the names sort by start time.
- **Written under the store's lock** (:func:`microscale.lock.store_lock`, re-entrant):
  :func:`record_run` takes it for its whole block, so a run refused by the lock writes
  nothing, and the run's own lock is the one it holds (``microscale run`` and the flow take
  it first).
- **Atomic writes**: each version of a record goes to a temporary file, is fsynced and
  renamed over the record, so a reader sees the previous version or the new one.
- **A run that dies** leaves its record at ``running``: :func:`read_runs` shows it as
  ``interrupted`` once the lock no longer names its process (the process is gone).
- **A damaged record** (cut short, edited by hand) is reported by name
  (:attr:`RunLog.problems`) and hides no other record.

Reading never takes the lock and never writes: ``microscale serve`` only reads.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as root:
...     with record_run(root, run_id="demo", parameters={"tile_size": 64}) as run:
...         run.update(counts={"files_found": 3, "images": 2})
...     (rec,) = read_runs(root).runs
...     rec.run_id, rec.outcome, rec.counts["images"], rec.ended is not None
('demo', 'completed', 2, True)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from microscale.atomic import atomic_write
from microscale.lock import lock_holder, pid_alive, store_lock

__all__ = [
    "OUTCOMES",
    "RUNS_DIR",
    "RunHandle",
    "RunLog",
    "RunRecord",
    "RunRecordProblem",
    "parameters_digest",
    "read_runs",
    "record_run",
]

#: Folder of the run records in the store directory.
RUNS_DIR = "runs"
#: What a record can say of its run.
OUTCOMES = ("running", "completed", "failed", "interrupted")
#: Version of the record's layout.
FORMAT_VERSION = 1
#: Longest reason kept (one line).
MAX_REASON = 500
#: Packages whose versions a record keeps (those installed).
_PACKAGES = ("microscale", "prefect", "dask", "torch", "zarr", "numpy")
#: Fields :meth:`RunHandle.update` sets.
_UPDATABLE = frozenset(
    {"run_id", "flow_run_url", "archive", "counts", "outputs", "weights_sha256", "parameters"}
)
_TOKEN = re.compile(r"[^A-Za-z0-9-]+")

_log = logging.getLogger(__name__)

# Open records of this process: resolved store root -> handle (a flow inside `microscale
# run` adds to the command's record instead of starting a second one).
_OPEN: dict[str, RunHandle] = {}
_OPEN_GUARD = threading.Lock()


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def parameters_digest(parameters: Mapping[str, Any]) -> str:
    """16 hex digits of the sha256 of the parameters as canonical JSON.

    Two runs with the same parameters have the same digest, whatever their order.

    Examples
    --------
    >>> parameters_digest({"b": 1, "a": [1, 2]}) == parameters_digest({"a": [1, 2], "b": 1})
    True
    >>> len(parameters_digest({}))
    16
    """
    text = json.dumps(dict(parameters), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    import platform  # here: a refused run never pays for them
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def _reason(exc: BaseException) -> tuple[str, str]:
    """The outcome and one-line reason of a run that ended with ``exc``."""
    if isinstance(exc, KeyboardInterrupt):  # SIGINT, or SIGTERM (microscale.reaper)
        name = str(exc.args[0]) if exc.args else "SIGINT"
        return "interrupted", f"stopped by {name}"
    if isinstance(exc, SystemExit):
        return "interrupted", f"exited with status {exc.code}"
    if not isinstance(exc, Exception):  # e.g. a cancellation
        return "interrupted", _one_line(f"{type(exc).__name__}: {exc}".rstrip(": "))
    return "failed", _one_line(f"{type(exc).__name__}: {exc}".rstrip(": "))


def _output(path: str | os.PathLike[str], root: Path) -> dict[str, Any]:
    """An output as a record keeps it: its path in the store, its size and time."""
    p = Path(path).resolve()
    base = root.resolve()
    entry: dict[str, Any] = {
        "path": p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p)
    }
    with contextlib.suppress(OSError):
        stat = p.stat()
        if p.is_dir():
            entry["kind"] = "folder"
        else:
            entry.update(kind="file", size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return entry


class RunHandle:
    """The record of the run in progress; :func:`record_run` yields it.

    Attributes
    ----------
    path : Path
        The record's file, ``ROOT/runs/<stamp>-<id>.json``.
    record : dict
        What the file holds (the last version written).
    """

    def __init__(self, root: Path, path: Path, record: dict[str, Any]) -> None:
        self.root = root
        self.path = path
        self.record = record
        self.pid = os.getpid()

    def update(
        self,
        *,
        run_id: str | None = None,
        flow_run_url: str | None = None,
        archive: str | os.PathLike[str] | None = None,
        counts: Mapping[str, Any] | None = None,
        outputs: Sequence[str | os.PathLike[str]] | None = None,
        weights_sha256: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        """Add to the record and write it (fields left at None are kept as they are).

        Parameters
        ----------
        run_id : str, optional
            The run's id (the Prefect flow-run id).
        flow_run_url : str, optional
            Its page in the Prefect UI.
        archive : path, optional
            The archive it maps.
        counts : mapping, optional
            Counts to merge into the record's (e.g. ``files_found``, ``images``, ``tiles``).
        outputs : sequence of paths, optional
            The files and folders the run wrote (their size and time are recorded, so that
            a later reader can tell a file that a later run rewrote).
        weights_sha256 : str, optional
            sha256 of the weights the texture vectors came from.
        parameters : mapping, optional
            The run's parameters: only their digest is kept (:func:`parameters_digest`).
        """
        rec = self.record
        if run_id is not None:
            rec["run_id"] = str(run_id)
        if flow_run_url is not None:
            rec["flow_run_url"] = str(flow_run_url)
        if archive is not None:
            rec["archive"] = os.fspath(archive)
        if counts is not None:
            rec["counts"] = {**rec.get("counts", {}), **dict(counts)}
        if outputs is not None:
            rec["outputs"] = [_output(p, self.root) for p in outputs]
        if weights_sha256 is not None:
            rec["weights_sha256"] = str(weights_sha256)
        if parameters is not None:
            rec["parameters_digest"] = parameters_digest(parameters)
        self._write()

    def _finish(self, outcome: str, reason: str) -> None:
        self.record.update(outcome=outcome, reason=reason, ended=_iso(_now()))
        self._write()

    def _write(self) -> None:
        data = json.dumps(self.record, indent=1, sort_keys=True, default=str).encode()
        try:
            with store_lock(self.root):  # the run's own lock, re-entered
                atomic_write(self.path, data)
        except OSError as exc:  # the log never stops a run (e.g. a full disk)
            _log.warning("Could not write the run record %s: %s", self.path, exc)


@contextlib.contextmanager
def record_run(
    store: str | os.PathLike[str],
    *,
    run_id: str | None = None,
    flow_run_url: str | None = None,
    archive: str | os.PathLike[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Iterator[RunHandle]:
    """Record the run of the ``with`` block in the store's run log.

    The store's lock is held for the block (re-entered when the caller holds it). The
    record is written at once (outcome ``running``), at each :meth:`RunHandle.update`, and
    at the end: ``completed``; ``failed`` with the exception's one-line reason; or
    ``interrupted`` (SIGINT, SIGTERM, a cancellation). The exception is re-raised.

    Inside a block of this process that already records a run of the same store (the
    ``pipeline`` flow called by ``microscale run``), the outer record is updated (its
    ``run_id`` becomes this one) and no second record is started.

    Parameters
    ----------
    store : path
        The store directory (created if absent, as by the lock).
    run_id : str, optional
        The run's id: the Prefect flow-run id when there is one; default a random one.
    flow_run_url : str, optional
        The run's page in the Prefect UI.
    archive : path, optional
        The archive the run maps.
    parameters : mapping, optional
        The run's parameters; the record keeps their digest.

    Yields
    ------
    RunHandle

    Raises
    ------
    StoreLockedError
        If another process holds the store's lock (nothing is written).
    """
    root = Path(store)
    with store_lock(root):
        key = str(root.resolve())
        with _OPEN_GUARD:
            outer = _OPEN.get(key)
            if outer is not None and outer.pid != os.getpid():  # a fork's copy
                outer = None
        if outer is not None:
            outer.update(
                run_id=run_id, flow_run_url=flow_run_url, archive=archive, parameters=parameters
            )
            yield outer
            return
        handle = _start(root, run_id=run_id, flow_run_url=flow_run_url, archive=archive,
                        parameters=parameters)  # fmt: skip
        with _OPEN_GUARD:
            _OPEN[key] = handle
        try:
            yield handle
        except BaseException as exc:
            handle._finish(*_reason(exc))
            raise
        else:
            handle._finish("completed", "")
        finally:
            with _OPEN_GUARD:
                _OPEN.pop(key, None)


def _start(
    root: Path,
    *,
    run_id: str | None,
    flow_run_url: str | None,
    archive: str | os.PathLike[str] | None,
    parameters: Mapping[str, Any] | None,
) -> RunHandle:
    started = _now()
    run_id = str(run_id) if run_id else uuid.uuid4().hex[:12]
    folder = root / RUNS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".*.tmp"):  # of a writer killed mid-write (we hold the lock)
        with contextlib.suppress(OSError):
            leftover.unlink()
    token = _TOKEN.sub("-", run_id).strip("-")[:64] or uuid.uuid4().hex[:12]
    name = f"{started.strftime('%Y%m%dT%H%M%S%fZ')}-{token}.json"
    record: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "run_id": run_id,
        "started": _iso(started),
        "ended": None,
        "outcome": "running",
        "reason": "",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "counts": {},
        "outputs": [],
        "versions": _versions(),
    }
    handle = RunHandle(root, folder / name, record)
    handle.update(flow_run_url=flow_run_url, archive=archive, parameters=parameters)
    return handle


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RunRecord:
    """One run as the log shows it.

    ``outcome`` is what happened as far as can be told now: a record that says
    ``running`` whose process no longer holds the store's lock shows as ``interrupted``
    (``recorded_outcome`` keeps what the file says).
    """

    file: str  # the record's name in runs/
    run_id: str
    started: str  # ISO 8601, UTC
    ended: str | None
    outcome: str
    reason: str
    recorded_outcome: str
    pid: int | None = None
    host: str | None = None
    archive: str | None = None
    parameters_digest: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[dict[str, Any], ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    weights_sha256: str | None = None
    flow_run_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-able dict (what ``/runs.json`` serves)."""
        out = dict(vars(self))
        out["outputs"] = list(self.outputs)
        return out


@dataclass(frozen=True)
class RunRecordProblem:
    """A file of ``runs/`` that is not a readable record."""

    file: Path
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.file}: not a readable run record ({self.reason}); the other runs are "
            "listed. Move it out of runs/ to silence this."
        )


@dataclass(frozen=True)
class RunLog:
    """The store's runs, newest first, and the record files that could not be read."""

    runs: tuple[RunRecord, ...]
    problems: tuple[RunRecordProblem, ...] = ()


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _parse(path: Path, holder: dict[str, Any] | None) -> RunRecord:
    """A record file as a :class:`RunRecord`; ValueError (why) when it is not one."""
    try:
        data = json.loads(path.read_bytes())
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    for name in ("run_id", "started", "outcome"):
        if not isinstance(data.get(name), str):
            raise ValueError(f"no {name!r}")
    if data["outcome"] not in OUTCOMES:
        raise ValueError(f"unknown outcome {data['outcome']!r}")
    outcome, reason = data["outcome"], str(data.get("reason") or "")
    if outcome == "running" and not _still_running(data, holder):
        outcome = "interrupted"
        reason = (
            f"the run ended without finishing its record (pid {data.get('pid')} on "
            f"{data.get('host')} no longer holds the store's lock)"
        )
    counts, outputs = data.get("counts") or {}, data.get("outputs") or []
    if not isinstance(counts, dict) or not isinstance(outputs, list):
        raise ValueError("'counts' or 'outputs' of the wrong type")
    pid = data.get("pid")
    return RunRecord(
        file=path.name,
        run_id=data["run_id"],
        started=data["started"],
        ended=_str_or_none(data.get("ended")),
        outcome=outcome,
        reason=reason,
        recorded_outcome=data["outcome"],
        pid=pid if isinstance(pid, int) else None,
        host=_str_or_none(data.get("host")),
        archive=_str_or_none(data.get("archive")),
        parameters_digest=_str_or_none(data.get("parameters_digest")),
        counts=counts,
        outputs=tuple(o for o in outputs if isinstance(o, dict) and "path" in o),
        versions={str(k): str(v) for k, v in (data.get("versions") or {}).items()},
        weights_sha256=_str_or_none(data.get("weights_sha256")),
        flow_run_url=_str_or_none(data.get("flow_run_url")),
    )


def _still_running(data: dict[str, Any], holder: dict[str, Any] | None) -> bool:
    """Whether the process a ``running`` record names still holds the store's lock."""
    names = ("pid", "host")
    if not holder or [holder.get(k) for k in names] != [data.get(k) for k in names]:
        return False
    if data.get("host") == socket.gethostname():
        return pid_alive(data.get("pid"))
    return True  # another host's live lock: cannot be told from here


def read_runs(store: str | os.PathLike[str]) -> RunLog:
    """The store's run log, newest first; reads only (takes no lock, writes nothing).

    Parameters
    ----------
    store : path
        The store directory. A store without ``runs/`` has an empty log.

    Returns
    -------
    RunLog
        ``runs``: a :class:`RunRecord` per readable record, newest first (by start time,
        then file name); ``problems``: a :class:`RunRecordProblem` per file of ``runs/``
        that is not a readable record, each naming the file.
    """
    folder = Path(store) / RUNS_DIR
    if not folder.is_dir():
        return RunLog(runs=())
    holder = lock_holder(store)
    runs, problems = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix != ".json" or not path.is_file():
            continue  # a writer's temporary file, or not ours
        try:
            runs.append(_parse(path, holder))
        except (OSError, ValueError) as exc:
            problems.append(RunRecordProblem(path, str(exc)))
    runs.sort(key=lambda r: (r.started, r.file), reverse=True)
    return RunLog(runs=tuple(runs), problems=tuple(problems))
