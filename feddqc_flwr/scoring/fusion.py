"""Rank-mean (Borda count) of several keep-scores from the same passes: a benchmark candidate.

`RankMean` ranks each component's keep-score among the rows it is given (scale-free, computed on
the client alone) and averages the ranks. Its sibling, the rank-min, is the joint filter of
`scoring.criteria` (a row must pass every criterion), registered as "ira-sum+loss".
"""

from __future__ import annotations

import numpy as np

from feddqc_flwr.scoring.likelihood import PassScorer
from feddqc_flwr.scoring.passes import LikelihoodPasses
from feddqc_flwr.selection.joint_rank import pool_ranks


class RankMean(PassScorer):
    """Mean of the pool ranks in [0, 1] of the components' keep-scores (higher = better)."""

    def __init__(self, components: tuple[PassScorer, ...]) -> None:
        self.components = components
        parts = ", ".join(c.name for c in components)
        self.name = "rank-mean-" + "-".join(c.name for c in components)
        self.passes = tuple(sorted({p for c in components for p in c.passes}))
        self.direction = f"higher is better; keep-score = mean of the pool ranks in [0, 1] of {parts}"
        self.cost = f"the forward passes of {parts} ({len(self.passes)} per sample), shared"

    def from_passes(self, passes: LikelihoodPasses) -> np.ndarray:
        return np.array([pool_ranks(c.from_passes(passes)) for c in self.components]).mean(axis=0)
