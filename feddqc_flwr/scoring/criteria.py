"""Filters with several criteria: a row is kept only when it passes every one.

IRA catches answers that belong to another question (swap) but ranks a cut or damaged answer to
the right question as well aligned; the response loss catches token-level damage (cut, deleted,
substituted, noisy words) but not a fluent answer to another question. Requiring both closes
each one's blind spot, and both come from the same two forward passes.

Every scorer has criteria: a one-score scorer has one (its own name); a `CriteriaScorer` has
several, each with its own keep-score column (higher = better), its own global histogram and its
own global threshold. The hierarchy orders the rows that pass by the FIRST criterion (alignment,
the paper's easy-to-hard order).

`joint_keep_score` is the one number per row that ranks rows the way the joint filter does:
the lowest of the row's ranks in each criterion (1 = best). Keeping the rows whose every
criterion is in its own top share `s` is keeping the rows whose rank-min is >= 1 - s, so the
AUROC and kept share of the rank-min score measure the joint filter over all `s`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from feddqc_flwr.scoring.base import Row, Scorer, ScoringContext
from feddqc_flwr.scoring.likelihood import IRAScorer, LossScorer, PassScorer
from feddqc_flwr.scoring.passes import LikelihoodPasses, likelihood_passes


def pool_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks in [0, 1] among the finite scores (ties share their mean rank, 1 = best); NaN stays NaN."""
    out = np.full(len(scores), np.nan)
    finite = np.isfinite(scores)
    n = int(finite.sum())
    if n:
        out[finite] = (rankdata(scores[finite], method="average") - 1.0) / max(1, n - 1)
    return out


def joint_keep_score(columns: np.ndarray) -> np.ndarray:
    """Rank-min over criteria of an (n, C) keep-score matrix: high only when every criterion is high.

    One criterion: its keep-scores unchanged (no ranking needed). NaN in any criterion -> NaN.
    """
    columns = np.asarray(columns, dtype=np.float64)
    if columns.shape[1] == 1:
        return columns[:, 0]
    ranks = np.stack([pool_ranks(columns[:, c]) for c in range(columns.shape[1])], axis=1)
    return ranks.min(axis=1)


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
