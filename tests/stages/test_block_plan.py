"""The distance tasks' block order and reads: shared blocks read once, at most two held."""

from __future__ import annotations

import numpy as np
import pytest

from microscale.stages import block_plan as bp
from microscale.stages._runner import BlockPair


def _pairs(nb: int, b: int = 4) -> list[BlockPair]:
    return [BlockPair(i, j, (b * i, b * i + b), (b * j, b * j + b))
            for i in range(nb) for j in range(i, nb)]  # fmt: skip


def _replay(pairs: list[BlockPair]) -> int:
    """Follow the plan like a task does; check every pair finds its blocks; count reads."""
    held: set[int] = set()
    reads = 0
    for pair, step in zip(pairs, bp.plan_block_reads(pairs), strict=True):
        assert set(step.drop) <= held
        held -= set(step.drop)
        for k in step.read:
            assert k not in held and len(held) <= 1  # one spare buffer is enough
            held.add(k)
            reads += 1
        assert {pair.i, pair.j} <= held and len(held) <= bp.HELD_BLOCKS
    return reads


@pytest.mark.parametrize("nb", [1, 2, 3, 4, 7])
def test_snake_order_reads_each_shared_block_once(nb):
    ordered = bp.snake_order(_pairs(nb))
    assert sorted(ordered, key=lambda p: (p.i, p.j)) == _pairs(nb)
    for a, b in zip(ordered, ordered[1:], strict=False):
        assert {a.i, a.j} & {b.i, b.j}  # consecutive pairs share a block
    # one read to start, then one per off-diagonal pair after the first row's diagonal
    assert _replay(ordered) == 1 + nb * (nb - 1) // 2
    # tasks of one row block each (the order before): every pair read its column block
    row_tasks = sum(_replay([p for p in _pairs(nb) if p.i == i]) for i in range(nb))
    assert row_tasks == nb * (nb + 1) // 2


def test_the_docstring_counts():
    assert _replay(bp.snake_order(_pairs(4))) == 7 and _replay(bp.snake_order(_pairs(2))) == 2


def test_any_subset_in_any_order_finds_its_blocks():
    """Resumed stages plan the pairs not done yet; callers may pass any order."""
    rng = np.random.default_rng(0)
    pairs = _pairs(6)
    for _ in range(200):
        pick = [pairs[k] for k in rng.permutation(len(pairs))[: rng.integers(1, len(pairs))]]
        _replay(pick)
        _replay(bp.snake_order(pick))


def test_groups_follow_the_snake_and_keep_every_pair():
    pairs = _pairs(5)
    groups = bp.group_pairs(pairs[::-1], 4)
    assert [p for g in groups for p in g] == bp.snake_order(pairs)
    assert [len(g) for g in groups] == [4, 4, 4, 3]


def test_block_ranges_of_a_partial_last_block():
    pairs = [BlockPair(0, 1, (0, 4), (4, 6)), BlockPair(1, 1, (4, 6), (4, 6))]
    assert bp.block_ranges(pairs) == {0: (0, 4), 1: (4, 6)}
