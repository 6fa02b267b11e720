"""Random keep-scores: the selection baseline every scorer must beat."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from feddqc_flwr.scoring.base import Row, ScoringContext


class RandomScorer:
    """Uniform [0, 1) keep-scores seeded by `ctx.seed` (no direction: any kept subset is random).
    Cost: no model pass."""

    name = "random"
    direction = "none (uniform keep-score)"
    cost = "no model pass"

    def score(self, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
        return np.random.default_rng(ctx.seed).random(len(rows))
