"""InstructMiningScorer: rank samples by the linear rule's predicted eval loss."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from feddqc_flwr.scoring.base import Row, ScoringContext
from feddqc_flwr.scoring.instructmining.indicators import RewardFn, compute_indicators
from feddqc_flwr.scoring.instructmining.rule import PUBLISHED_RULE, Rule


class InstructMiningScorer:
    """InstructMining (Cao et al. 2023): predicted log eval loss from per-sample indicators.

    Raw score = predicted log loss; lower is better; keep-score = -predicted loss. Rule: the
    published one (response length + Knn6, reward term dropped) unless the run config's
    `instructmining-rule` names a rule JSON written by `feddqc instructmining fit`. Cost: what
    the rule's indicators need: lengths and MTLD are free, Knn6 one sentence embedding per
    sample, ppl one forward pass per sample, reward one reward-model pass (hook only).
    """

    name = "instructmining"
    direction = "lower raw predicted loss is better; keep-score = -predicted loss"
    cost = "1 sentence embedding per sample (published rule); +1 forward pass if the rule uses ppl"

    def __init__(self, reward_fn: RewardFn | None = None) -> None:
        self.reward_fn = reward_fn

    def score(self, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
        path = ctx.options.get("instructmining-rule", "")
        rule = Rule.load(path) if path else PUBLISHED_RULE
        if not rows:
            return np.zeros(0)
        indicators = compute_indicators(rows, ctx, list(rule.weights), self.reward_fn)
        return -rule.predict(indicators)
