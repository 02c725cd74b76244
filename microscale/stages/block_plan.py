"""The order of the distance stage's block pairs, and which row blocks a task reads and keeps.

A block pair ``(i, j)`` needs row blocks ``i`` and ``j`` (one block on the diagonal); a
block of full texture vectors is 1.25 GB at 1024 rows, so what costs is reading it. A
task holds two blocks at most, and :func:`plan_block_reads` keeps a block it holds for
the next pair that needs it (Belady's rule: of the blocks the pair does not need, the one
needed again soonest stays), so consecutive pairs that share a block read it once.

:func:`snake_order` puts the pairs in an order where every pair shares a block with the
one before: row ``i`` starts on its diagonal and walks its columns from the last down to
``i + 1``, whose block is the next row's, kept for its diagonal::

    (0, 0) (0, 3) (0, 2) (0, 1) | (1, 1) (1, 3) (1, 2) | (2, 2) (2, 3) | (3, 3)

so each pair after the first reads at most one block, and a diagonal pair none: 7 reads
for these 10 pairs, where a task per row block reading its row once reads 10, and 2 reads
instead of 3 for the 3 pairs of 2 blocks. :func:`group_pairs` cuts that order into the
tasks of the stage.

Examples
--------
>>> from microscale.stages._runner import BlockPair
>>> pairs = [BlockPair(i, j, (2 * i, 2 * i + 2), (2 * j, 2 * j + 2))
...          for i in range(3) for j in range(i, 3)]
>>> [(p.i, p.j) for p in snake_order(pairs)]
[(0, 0), (0, 2), (0, 1), (1, 1), (1, 2), (2, 2)]
>>> [step.read for step in plan_block_reads(snake_order(pairs))]
[(0,), (2,), (1,), (), (2,), ()]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from microscale.stages._runner import BlockPair

__all__ = ["BlockStep", "block_ranges", "group_pairs", "plan_block_reads", "snake_order"]

#: Row blocks a task holds at once (the kernel's two operands).
HELD_BLOCKS = 2


@dataclass(frozen=True)
class BlockStep:
    """What a task does with its row blocks before one block pair.

    Attributes
    ----------
    drop : tuple of int
        Blocks it gives back first (not needed by this pair, nor kept for a later one).
    read : tuple of int
        Blocks it then reads, in this order (none when it holds the pair's blocks).
    """

    drop: tuple[int, ...]
    read: tuple[int, ...]


def snake_order(pairs: Sequence[BlockPair]) -> list[BlockPair]:
    """``pairs`` by row block; in a row the diagonal first, then the columns downwards.

    Consecutive pairs of the full upper triangle then always share a block (module
    docstring). Any subset of the pairs (those not done yet) keeps that order.
    """
    return sorted(pairs, key=lambda p: (p.i, p.j != p.i, -p.j))


def group_pairs(pairs: Sequence[BlockPair], per_task: int) -> list[list[BlockPair]]:
    """The pairs in :func:`snake_order`, cut into runs of at most ``per_task``: the tasks."""
    ordered = snake_order(pairs)
    return [ordered[s : s + per_task] for s in range(0, len(ordered), per_task)]


def block_ranges(pairs: Sequence[BlockPair]) -> dict[int, tuple[int, int]]:
    """Block index -> its ``(start, stop)`` rows, for every block the pairs need."""
    ranges: dict[int, tuple[int, int]] = {}
    for pair in pairs:
        ranges[pair.i], ranges[pair.j] = pair.rows, pair.cols
    return ranges


def plan_block_reads(pairs: Sequence[BlockPair]) -> list[BlockStep]:
    """For each pair in turn, the blocks to give back and the blocks to read.

    At most :data:`HELD_BLOCKS` blocks are held, and at most one when a block is read (so a
    reader with one spare buffer, plus those it reads ahead into, never waits for one).
    A held block the pair does not need is kept only if a later pair needs it, the one
    needed soonest first.
    """
    need = [(pair.i,) if pair.i == pair.j else (pair.i, pair.j) for pair in pairs]

    def next_use(block: int, after: int) -> int | None:
        return next((t for t in range(after + 1, len(need)) if block in need[t]), None)

    held: list[int] = []
    steps = []
    for t, blocks in enumerate(need):
        spare = [(u, k) for k in held if k not in blocks and (u := next_use(k, t)) is not None]
        kept = [k for _, k in sorted(spare)[: HELD_BLOCKS - len(blocks)]]
        keep = [k for k in held if k in blocks or k in kept]
        read = tuple(k for k in blocks if k not in held)
        steps.append(BlockStep(drop=tuple(k for k in held if k not in keep), read=read))
        held = keep + list(read)
    return steps
