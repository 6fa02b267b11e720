"""Best hyperparameters per arm, chosen on validation, with test metrics over seeds.

For each arm, every hyperparameter point is rated by the mean of `select-metric` (a valid-*
metric) over its finished seeds; the best point's `report-metrics` (test-*) are given as mean,
standard deviation, min and max over those seeds. The test split never influences the choice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from feddqc_flwr.experiment.spec import ExperimentSpec


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
        if finite.size == 0:
            return cls(math.nan, math.nan, math.nan, math.nan, 0)
        std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
        return cls(float(finite.mean()), std, float(finite.min()), float(finite.max()), int(finite.size))

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a"
        return f"{self.mean:.4g} ± {self.std:.2g} (n={self.n})"


@dataclass(frozen=True)
class ArmResult:
    arm: str
    params: dict[str, Any]
    select: Spread
    report: dict[str, Spread]
    candidates: int
    seed_values: dict[str, list[float]]  # report metric -> value of each finished seed
    seeds: list[int]  # the seeds of seed_values, in the same order
    seed_rows: list[dict[str, Any] | None]  # each seed's test rows (grid.final_test_rows), same order

    def as_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "params": self.params, "select": asdict(self.select),
                "report": {k: asdict(v) for k, v in self.report.items()}, "candidates": self.candidates,
                "seed_values": self.seed_values, "seeds": self.seeds}


def _metric(record: dict[str, Any], name: str) -> float:
    value = record.get("metrics", {}).get(name)
    return float(value) if value is not None else math.nan


def best_per_arm(spec: ExperimentSpec, records: Sequence[dict[str, Any]]) -> list[ArmResult]:
    """One ArmResult per arm with at least one finished cell, in the file's arm order."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    params_of: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        if record["status"] != "done":
            continue
        key = ",".join(f"{k}={v}" for k, v in sorted(record["params"].items()))
        groups[record["arm"]][key].append(record)
        params_of[(record["arm"], key)] = record["params"]
    sign = 1.0 if spec.lower_is_better else -1.0
    results = []
    for arm in spec.arms:
        if arm not in groups:
            continue
        rated = {key: Spread.of([_metric(r, spec.select_metric) for r in recs]) for key, recs in groups[arm].items()}
        usable = [key for key, s in rated.items() if s.n > 0] or list(rated)
        best = min(usable, key=lambda k: sign * rated[k].mean if rated[k].n else math.inf)
        values = {m: [_metric(r, m) for r in groups[arm][best]] for m in spec.report_metrics}
        report = {m: Spread.of(v) for m, v in values.items()}
        seeds = [int(r["seed"]) for r in groups[arm][best]]
        rows = [r.get("test_rows") for r in groups[arm][best]]
        results.append(ArmResult(arm, params_of[(arm, best)], rated[best], report, len(rated), values, seeds, rows))
    return results
