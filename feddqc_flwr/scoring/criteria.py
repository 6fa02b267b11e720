"""Filters with several criteria: a row is kept only when it passes every one.

IRA catches answers that belong to another question (swap) but ranks a cut or damaged answer to
the right question as well aligned; the response loss catches token-level damage (cut, deleted,
substituted, noisy words) but not a fluent answer to another question. Requiring both closes
each one's blind spot, and both come from the same two forward passes.

Every scorer has criteria: a one-score scorer has one (its own name); a `CriteriaScorer` has
several, each with its own keep-score column (higher = better), its own global histogram and its
own global threshold. A scorer's single keep-score (for `feddqc score`, the benchmark, and the
hierarchy's easy-to-hard order inside a client) is the rank-min over its criteria
(`selection.joint_rank`): high only when every criterion is high.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from feddqc_flwr.scoring.base import Row, Scorer, ScoringContext
from feddqc_flwr.scoring.likelihood import IRAScorer, LossScorer, PassScorer
from feddqc_flwr.scoring.passes import LikelihoodPasses, likelihood_passes
from feddqc_flwr.selection.joint_rank import joint_keep_score


class CriteriaScorer(PassScorer):
    """Several likelihood criteria from shared passes; keep-score columns in `criteria` order."""

    def __init__(self, components: tuple[PassScorer, ...]) -> None:
        self.components = components
        self.criteria = tuple(c.name for c in components)
        self.name = "+".join(self.criteria)
        self.passes = tuple(sorted({p for c in components for p in c.passes}))
        self.direction = (f"a row is kept only when it passes every criterion ({', '.join(self.criteria)}), each "
                          f"at its own global threshold; kept rows are ordered by {self.criteria[0]}")
        self.cost = f"the forward passes of {', '.join(self.criteria)} ({len(self.passes)} per sample), shared"

    def columns_from_passes(self, passes: LikelihoodPasses) -> np.ndarray:
        """(n, C) keep-scores, one column per criterion."""
        return np.stack([c.from_passes(passes) for c in self.components], axis=1)

    def from_passes(self, passes: LikelihoodPasses) -> np.ndarray:
        """One keep-score per row that ranks as the joint filter does (rank-min; for ranking and AUROC)."""
        return joint_keep_score(self.columns_from_passes(passes))

    def score_columns(self, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
        return self.columns_from_passes(likelihood_passes(rows, ctx, self.passes))


ALIGNMENT_AND_FIT = CriteriaScorer((IRAScorer("sum"), LossScorer()))  # "ira-sum+loss"


def criteria_of(scorer: Scorer) -> tuple[str, ...]:
    """The criteria a scorer filters by: its components, or itself."""
    return tuple(getattr(scorer, "criteria", (scorer.name,)))


def score_columns(scorer: Scorer, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
    """(n, C) keep-scores of `rows`, one column per criterion of `scorer`."""
    if isinstance(scorer, CriteriaScorer):
        return scorer.score_columns(rows, ctx)
    return np.asarray(scorer.score(rows, ctx), dtype=np.float64).reshape(-1, 1)
