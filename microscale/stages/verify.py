"""Verify a store against its completion records, and repair it: ``microscale check``.

Every unit of work leaves a completion record listing the chunk files it wrote with their
CRC32C (:meth:`microscale.store.Store.mark_done`): tile chunks (written when images are
committed), feature batches, image-feature groups and distance block pairs.
:func:`verify_store` hashes every recorded chunk and compares it with its record, and
lists the units of each stage that have no record. With ``repair=True`` the records of
damaged units are dropped with their chunks, so that the next ``microscale run``
recomputes exactly those units (tiles are rebuilt from the archive's files).

Records written before checksums (older stores) are trusted: they are counted as
unverified and never reported as damage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from microscale.stages._runner import Batch, BlockPair, Root, as_store
from microscale.stages.distances import distance_level, plan_distance_blocks
from microscale.stages.features import plan_feature_batches
from microscale.stages.image_features import plan_image_groups
from microscale.store import (
    DESCRIPTORS,
    LEVELS,
    TILES_STAGE,
    RecordProblem,
    Store,
    has_array,
    tile_chunks,
    verify_records,
)

__all__ = ["DAMAGE", "StoreCheck", "verify_store"]

_log = logging.getLogger(__name__)

#: Kinds of :class:`~microscale.store.RecordProblem` that are damage (dropped by a repair).
DAMAGE = ("damaged", "missing", "unreadable record")


@dataclass
class StoreCheck:
    """What :func:`verify_store` found.

    Attributes
    ----------
    problems : list of RecordProblem
        Damaged or missing chunks, unreadable records and units not done, each named by
        stage, key, rows and chunk paths.
    verified : int
        Records whose every chunk matched its checksum.
    unverified : int
        Records written before checksums (trusted as they are).
    repaired : list of RecordProblem
        The damaged units whose records (and chunks) were dropped (``repair=True``).
    """

    problems: list[RecordProblem] = field(default_factory=list)
    verified: int = 0
    unverified: int = 0
    repaired: list[RecordProblem] = field(default_factory=list)

    @property
    def damaged(self) -> list[RecordProblem]:
        """The problems that are damage (not units merely not done)."""
        return [p for p in self.problems if p.kind in DAMAGE]

    @property
    def ok(self) -> bool:
        """True when every unit is recorded and every recorded chunk is intact."""
        return not self.problems


def _not_done(store: Store, stage_keys: set[tuple[str, str]]) -> list[RecordProblem]:
    """Units of every started stage without a matching record (not already listed)."""
    out: list[RecordProblem] = []

    def add(stage: str, units: Sequence[Batch | BlockPair]) -> None:
        for u in units:
            if (stage, u.key) not in stage_keys:
                out.append(RecordProblem(stage, u.key, "not done", {}, u.extent))

    if store.records(TILES_STAGE):
        records = store.records(TILES_STAGE)
        for key, rows in tile_chunks(store):
            record = records.get(key)
            if (TILES_STAGE, key) not in stage_keys and (
                record is None or record.get("extent") != {"rows": list(rows)}
            ):
                out.append(RecordProblem(TILES_STAGE, key, "not done", {}, {"rows": list(rows)}))
    for d in DESCRIPTORS:
        if has_array(store, f"features/{d}"):
            add(f"features.{d}", plan_feature_batches(store, descriptor=d))
        if has_array(store, f"image_feature_sums/{d}"):
            add(f"image_features.{d}", plan_image_groups(store, descriptor=d))
        for level in LEVELS:
            lv = distance_level(d, level)
            if has_array(store, lv.matrix):
                add(lv.stage, plan_distance_blocks(store, descriptor=d, level=level))
    return out


def verify_store(root: Root, *, repair: bool = False, full: bool = True) -> StoreCheck:
    """Verify every completion record of a store against its data; optionally repair.

    Parameters
    ----------
    root : path or Store
    repair : bool, optional
        Drop the records of damaged units and their chunk files
        (:meth:`microscale.store.Store.drop_done`), so that the next run recomputes
        exactly them. Units not done need nothing: the next run computes them anyway.
    full : bool, optional
        Hash every chunk (default). False: only chunks whose size or modification time
        changed since they were recorded (what each run does).

    Returns
    -------
    StoreCheck

    Raises
    ------
    StoreLockedError
        If a run holds the store (the check takes the run lock, so that it never sees a
        run's work half-recorded).
    """
    store = as_store(root)
    report = StoreCheck()
    with store.lock():
        for stage in store.stages():
            records = store.records(stage)
            problems = verify_records(store, stage, full=full)
            report.unverified += sum(p.kind == "unverified" for p in problems)
            damaged = [p for p in problems if p.kind != "unverified"]
            report.verified += len(records) - len(problems)
            report.problems += damaged
        listed = {(p.stage, p.key) for p in report.problems}
        report.problems += _not_done(store, listed)
        if repair:
            for problem in report.damaged:
                dropped = store.drop_done(problem.stage, problem.key)
                _log.warning("%s -- record dropped with %d chunk(s)", problem, len(dropped))
                report.repaired.append(problem)
    return report
