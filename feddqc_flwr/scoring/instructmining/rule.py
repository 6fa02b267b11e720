"""InstructMining's linear quality rule: predicted log eval loss = intercept + sum_j w_j x_j.

The paper fits the rule on the MEAN indicators of whole fine-tuning sets; being linear, the
mean of per-sample predictions equals the prediction on the mean, so the same rule ranks single
samples (lower predicted loss = better).

PUBLISHED_RULE is the paper's first rule (Cao et al., arXiv 2307.06290 v1, LLaMA-2-7B):
    log L = 1.0694 - 0.1498 Rew + 8.257e-5 Len - 0.9350 Knn6
with the reward term dropped (no reward model ships with the app; Rew would need the
OpenAssistant reward model) and Len read as response length in tokens. The later UniEval-based
rule (naturalness/coherence/understandability) needs UniEval and is not offered. The numbers come
from the paper as summarised in our research notes (no public code exists); our Knn6 uses
MiniLM instead of the paper's SentenceBERT model, so refit with `feddqc instructmining fit`
on your own runs when you can.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Rule:
    """Intercept, one weight per indicator, and where the numbers come from."""

    intercept: float
    weights: dict[str, float]
    source: str
    r2: float | None = None
    dropped: tuple[str, ...] = field(default_factory=tuple)

    def predict(self, indicators: Mapping[str, np.ndarray]) -> np.ndarray:
        """Predicted log loss per sample (or per set, given mean indicators)."""
        total = np.full(len(next(iter(indicators.values()))), self.intercept, dtype=np.float64)
        for name, weight in self.weights.items():
            total = total + weight * np.asarray(indicators[name], dtype=np.float64)
        return total

    def to_json(self) -> str:
        return json.dumps({"intercept": self.intercept, "weights": self.weights, "source": self.source,
                           "r2": self.r2, "dropped": list(self.dropped)}, indent=2)

    @classmethod
    def load(cls, path: str | Path) -> Rule:
        raw = json.loads(Path(path).read_text())
        return cls(intercept=float(raw["intercept"]), weights={k: float(v) for k, v in raw["weights"].items()},
                   source=str(raw.get("source", path)), r2=raw.get("r2"), dropped=tuple(raw.get("dropped", ())))


PUBLISHED_RULE = Rule(
    intercept=1.0694,
    weights={"output_len": 8.257e-5, "knn6": -0.9350},
    source="InstructMining v1 (arXiv 2307.06290): 1.0694 - 0.1498 Rew + 8.257e-5 Len - 0.9350 Knn6",
    dropped=("reward",),
)


def fit_rule(indicators: Mapping[str, np.ndarray], target: np.ndarray, source: str) -> Rule:
    """Ordinary least squares of `target` (one value per run) on the runs' mean indicators."""
    names = list(indicators)
    x = np.column_stack([np.ones(len(target)), *(np.asarray(indicators[n], dtype=np.float64) for n in names)])
    y = np.asarray(target, dtype=np.float64)
    if len(y) < x.shape[1]:
        raise ValueError(f"{len(y)} runs cannot fit {x.shape[1]} coefficients: give more runs or fewer indicators")
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coef
    total = ((y - y.mean()) ** 2).sum()
    r2 = float(1.0 - (residual**2).sum() / total) if total > 0 else None
    return Rule(intercept=float(coef[0]), weights=dict(zip(names, map(float, coef[1:]), strict=True)),
                source=source, r2=r2)
