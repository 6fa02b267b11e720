"""Combined keep-scores from the same passes: alignment (IRA) plus token-level fit (loss).

IRA catches answers that do not belong to their question (swap) but ranks a truncated or
damaged answer to the right question as well aligned; the response loss catches token-level
damage (deleted, substituted, noisy words) but not a fluent answer to another question. Both
come from the conditioned and unconditioned passes, so a combination costs nothing extra.

`RankFusion` ranks each component's keep-score among the rows it is given (scale-free, computed
on the client alone; only its histogram crosses the network) and combines the ranks: `mean`
(Borda count) or `min` (a row must look good to every component to rank high).

These are candidates of `feddqc bench selection`, not registered scorers: on the benchmark grid
(benchmarks/selection.json) neither beat its `loss` component on average with the base model,
so they did not earn a place in the app. A registered rank scorer would also need ranks against
a fixed population (all the client's rows), or a lambda fixed at the first hierarchy would mean
"the top share of whatever is left" at later ones.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from feddqc_flwr.scoring.likelihood import IRAScorer, LossScorer, PassScorer
from feddqc_flwr.scoring.passes import LikelihoodPasses

COMBINES = ("mean", "min")


def pool_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks in [0, 1] (ties share their mean rank, 1 = best); NaN stays NaN."""
    out = np.full(len(scores), np.nan)
    finite = np.isfinite(scores)
    n = int(finite.sum())
    if n:
        out[finite] = (rankdata(scores[finite], method="average") - 1.0) / max(1, n - 1)
    return out


class RankFusion(PassScorer):
    """Pool ranks of the components' keep-scores, combined by `combine` (higher = better)."""

    def __init__(self, name: str, components: tuple[PassScorer, ...], combine: str = "mean") -> None:
        if combine not in COMBINES:
            raise ValueError(f"rank fusion combine {combine!r}: allowed values are {', '.join(COMBINES)}")
        self.name, self.components, self.combine = name, components, combine
        self.passes = tuple(sorted({p for c in components for p in c.passes}))
        parts = ", ".join(c.name for c in components)
        self.direction = f"higher is better; keep-score = {combine} of the pool ranks in [0, 1] of {parts}"
        self.cost = f"the forward passes of {parts} ({len(self.passes)} per sample), shared"

    def from_passes(self, passes: LikelihoodPasses) -> np.ndarray:
        ranks = np.array([pool_ranks(c.from_passes(passes)) for c in self.components])
        return ranks.mean(axis=0) if self.combine == "mean" else ranks.min(axis=0)


CANDIDATES = (
    RankFusion("rank-mean-ira-sum-loss", (IRAScorer("sum"), LossScorer()), "mean"),
    RankFusion("rank-min-ira-sum-loss", (IRAScorer("sum"), LossScorer()), "min"),
)
