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
    sel = select_stage(ids, scores, threshold=0.0, stage=1, hierarchies=3)
    assert sorted(sel.dropped_ids) == [2, 4, 8]  # below lambda or unscorable
    # 7 kept, sorted descending: 5,7,1,9,3,0,6 -> parts of 3,2,2
    assert sel.train_ids == [5, 7, 1]
    assert sel.waiting_ids == [9, 3, 0, 6]
    ascending = select_stage(ids, scores, threshold=0.0, stage=1, hierarchies=3, order="ascending")
    assert ascending.train_ids == [6, 0, 3]
    shuffled = select_stage(ids, scores, threshold=0.0, stage=1, hierarchies=3, order="random", seed=3)
    again = select_stage(ids, scores, threshold=0.0, stage=1, hierarchies=3, order="random", seed=3)
    assert shuffled == again and sorted(shuffled.train_ids + shuffled.waiting_ids) == [0, 1, 3, 5, 6, 7, 9]
    assert sorted(shuffled.dropped_ids) == [2, 4, 8]


def test_last_stage_trains_on_everything_kept() -> None:
    sel = select_stage([4, 5, 6], np.array([1.0, 2.0, 3.0]), threshold=-np.inf, stage=3, hierarchies=3)
    assert sel.train_ids == [6, 5, 4] and sel.waiting_ids == []
