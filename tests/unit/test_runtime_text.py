"""Length grouping: every item in exactly one group, and the grouping is optimal for its cost model."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from modelfleet.runtime.text import plan_length_groups


def _cost(groups: list[list[int]], lengths: list[int], overhead: int) -> int:
    return sum(overhead + len(group) * max(lengths[i] for i in group) for group in groups)


@given(st.lists(st.integers(min_value=1, max_value=300), min_size=0, max_size=60))
def test_groups_cover_every_item_once(lengths: list[int]) -> None:
    groups = plan_length_groups(lengths)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))


def test_similar_lengths_share_a_run_and_outliers_get_their_own() -> None:
    lengths = [12, 14, 13, 250, 11, 12]
    groups = plan_length_groups(lengths, run_overhead_tokens=32)
    assert len(groups) == 2
    assert [3] in groups


def test_uniform_lengths_make_one_group() -> None:
    assert plan_length_groups([16] * 40) == [list(range(40))]


@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=7))
def test_grouping_is_optimal_among_contiguous_partitions_of_sorted_items(lengths: list[int]) -> None:
    overhead = 16
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best = None
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        groups, current = [], [order[0]]
        for cut, index in zip(cuts, order[1:], strict=True):
            if cut:
                groups.append(current)
                current = []
            current.append(index)
        groups.append(current)
        cost = _cost(groups, lengths, overhead)
        best = cost if best is None else min(best, cost)
    assert _cost(plan_length_groups(lengths, overhead), lengths, overhead) == best
