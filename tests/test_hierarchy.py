"""Hierarchy schedule and per-stage selection follow the FedDQC algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from feddqc_flwr.selection.hierarchy import (
    hierarchy_of_round,
    is_hierarchy_end,
    is_hierarchy_start,
    select_stage,
)


@pytest.mark.parametrize(("rounds", "k", "sizes"), [(100, 3, [34, 33, 33]), (6, 3, [2, 2, 2]),
                                                      (7, 2, [4, 3]), (3, 3, [1, 1, 1])])
def test_rounds_split_into_k_contiguous_stages(rounds: int, k: int, sizes: list[int]) -> None:
    stages = [hierarchy_of_round(r, rounds, k) for r in range(1, rounds + 1)]
    assert stages == sorted(stages)
    assert [stages.count(s) for s in range(1, k + 1)] == sizes
    starts = [r for r in range(1, rounds + 1) if is_hierarchy_start(r, rounds, k)]
    ends = [r for r in range(1, rounds + 1) if is_hierarchy_end(r, rounds, k)]
    assert len(starts) == len(ends) == k
    assert ends[-1] == rounds and starts[0] == 1


def test_selection_filters_sorts_and_takes_top_part() -> None:
    ids = list(range(10))
    scores = np.array([0.5, 2.0, -1.0, 1.0, np.nan, 3.0, 0.1, 2.5, -0.5, 1.5])
    sel = select_stage(ids, scores, thresholds=[0.0], stage=1, hierarchies=3)
    assert sorted(sel.dropped_ids) == [2, 4, 8]  # below lambda or unscorable
    # 7 kept, sorted descending: 5,7,1,9,3,0,6 -> parts of 3,2,2
    assert sel.train_ids == [5, 7, 1]
    assert sel.waiting_ids == [9, 3, 0, 6]
    ascending = select_stage(ids, scores, thresholds=[0.0], stage=1, hierarchies=3, order="ascending")
    assert ascending.train_ids == [6, 0, 3]
    shuffled = select_stage(ids, scores, thresholds=[0.0], stage=1, hierarchies=3, order="random", seed=3)
    again = select_stage(ids, scores, thresholds=[0.0], stage=1, hierarchies=3, order="random", seed=3)
    assert shuffled == again and sorted(shuffled.train_ids + shuffled.waiting_ids) == [0, 1, 3, 5, 6, 7, 9]
    assert sorted(shuffled.dropped_ids) == [2, 4, 8]


def test_last_stage_trains_on_everything_kept() -> None:
    sel = select_stage([4, 5, 6], np.array([1.0, 2.0, 3.0]), thresholds=[-np.inf], stage=3, hierarchies=3)
    assert sel.train_ids == [6, 5, 4] and sel.waiting_ids == []


def test_two_criteria_keep_only_rows_passing_both_and_order_by_the_worse_rank() -> None:
    # columns: (alignment, fit); lambdas (1.0, -3.0). Row 14 sits exactly on both lambdas: kept.
    scores = np.array([[2.0, -1.0],   # passes both
                       [5.0, -4.0],   # best alignment, fails fit
                       [0.5, -0.5],   # fails alignment, best fit
                       [3.0, -2.0],   # passes both
                       [1.0, -3.0],   # equal to both lambdas: passes
                       [4.0, np.nan],  # unscorable fit
                       [2.5, -1.5]])  # passes both
    sel = select_stage([10, 11, 12, 13, 14, 15, 16], scores, thresholds=[1.0, -3.0], stage=1, hierarchies=1)
    # kept 10, 13, 14, 16; ranks among them (0 = worst, 1 = best): alignment 1/3, 1, 0, 2/3 and fit
    # 1, 1/3, 0, 2/3; the worse of the two: 1/3, 1/3, 0, 2/3 -> 16 first, then 10 and 13 (tie: by id), 14
    assert sel.train_ids == [16, 10, 13, 14]
    assert sorted(sel.dropped_ids) == [11, 12, 15]


def test_thresholds_must_match_the_score_columns() -> None:
    with pytest.raises(ValueError, match="2 score column"):
        select_stage([0, 1], np.zeros((2, 2)), thresholds=[0.0], stage=1, hierarchies=1)


def test_an_empty_pool_selects_nothing_with_any_number_of_criteria() -> None:
    sel = select_stage([], np.zeros(0), thresholds=[0.0, -1.0], stage=2, hierarchies=3)
    assert sel.train_ids == sel.waiting_ids == sel.dropped_ids == []
