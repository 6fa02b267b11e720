"""Paired comparison of arms: per-seed differences to a reference arm, with a 95 % t interval and a
paired bootstrap interval over seeds x test rows (`experiment.bootstrap`).

Every seed of an experiment shares the evaluation rows (`split-seed`) and, per seed, the same
corrupted rows and client sampling across arms, so the seed-to-seed spread of test metrics
(often far larger than the gap between arms) cancels in the per-seed difference
`arm[seed] - reference[seed]`. The interval is Student's t on those differences:
mean ± t(0.975, n-1) · sd / sqrt(n), with the sample sd (ddof=1); n < 2 gives no interval.
The bootstrap adds the sampling of test rows to that of seeds; it needs every paired seed's
per-row values (row-values.jsonl) on the same rows, else it is n/a.
Each arm is taken at its own best hyperparameters on validation (tuned per arm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy import stats

from feddqc_flwr.experiment.bootstrap import bootstrap_interval, row_differences
from feddqc_flwr.experiment.summary import ArmResult

CI_METHOD = "t (Student, 95 %, two-sided) on per-seed differences"


@dataclass(frozen=True)
class PairedDelta:
    """`arm - reference` on one metric over the seeds both finished."""

    arm: str
    reference: str
    metric: str
    seeds: list[int]
    deltas: list[float]
    mean: float
    std: float
    ci_low: float
    ci_high: float
    rows: list[int] = field(default_factory=list)  # paired test rows per seed (bootstrap); [] = no row values
    boot_estimate: float = math.nan
    boot_low: float = math.nan
    boot_high: float = math.nan

    @property
    def n(self) -> int:
        return len(self.deltas)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n": self.n}

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a"
        interval = f" [{self.ci_low:+.4g}, {self.ci_high:+.4g}]" if self.n > 1 else ""
        return f"{self.mean:+.4g}{interval} (n={self.n})"


def paired_delta(arm: ArmResult, reference: ArmResult, metric: str) -> PairedDelta:
    """The per-seed difference of one metric, its mean, sample sd, 95 % t interval and bootstrap interval."""
    ref = dict(zip(reference.seeds, reference.seed_values.get(metric, []), strict=True))
    own = dict(zip(arm.seeds, arm.seed_values.get(metric, []), strict=True))
    seeds = [s for s in arm.seeds if s in ref and math.isfinite(own[s]) and math.isfinite(ref[s])]
    deltas = np.asarray([own[s] - ref[s] for s in seeds], dtype=float)
    nan = math.nan
    if deltas.size == 0:
        return PairedDelta(arm.arm, reference.arm, metric, [], [], nan, nan, nan, nan)
    mean = float(deltas.mean())
    if deltas.size < 2:
        delta = PairedDelta(arm.arm, reference.arm, metric, seeds, deltas.tolist(), mean, nan, nan, nan)
    else:
        std = float(deltas.std(ddof=1))
        half = float(stats.t.ppf(0.975, deltas.size - 1)) * std / math.sqrt(deltas.size)
        delta = PairedDelta(arm.arm, reference.arm, metric, seeds, deltas.tolist(), mean, std, mean - half,
                            mean + half)
    own_rows = dict(zip(arm.seeds, arm.seed_rows, strict=True))
    ref_rows = dict(zip(reference.seeds, reference.seed_rows, strict=True))
    diffs = [d for s in seeds if (d := row_differences(own_rows[s], ref_rows[s], metric)) is not None and d.size]
    if len(diffs) < len(seeds):
        return delta
    estimate, low, high = bootstrap_interval(diffs)
    return replace(delta, rows=[d.size for d in diffs], boot_estimate=estimate, boot_low=low, boot_high=high)


def paired_deltas(best: Sequence[ArmResult], reference: str, metrics: Sequence[str]) -> list[PairedDelta]:
    """Every other arm against `reference`, on every metric; [] if the reference did not finish."""
    by_arm = {b.arm: b for b in best}
    if reference not in by_arm:
        return []
    return [paired_delta(b, by_arm[reference], m) for b in best if b.arm != reference for m in metrics]
