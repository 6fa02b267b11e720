"""Paired bootstrap over seeds x test rows of an arm's difference to the reference arm.

The t interval over seeds sees only seed-to-seed spread; with few test rows, which rows were drawn
for the test split matters too. Per seed s both arms are evaluated on the same test rows, so each
row r has a paired difference d[s][r] = arm - reference (rows where either value is missing are
left out). One bootstrap replicate draws S seeds with replacement and, for each drawn seed, R_s
of its rows with replacement (afresh each time the seed is drawn; the same rows for both arms,
since the draw is of paired differences), and takes the mean over drawn seeds of the mean over
drawn rows. The interval is the 2.5 % and 97.5 % percentiles of BOOTSTRAP_DRAWS replicates from
a generator seeded with BOOTSTRAP_SEED, so it is the same on every call. The estimate is the
mean over seeds of the mean over rows of d, which for row-mean metrics (loss, accuracies) equals
the mean of the per-seed differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

BOOTSTRAP_DRAWS = 5000
BOOTSTRAP_SEED = 0
BOOTSTRAP_METHOD = (f"paired bootstrap over seeds x test rows ({BOOTSTRAP_DRAWS} draws, seeded, "
                    "95 % percentile interval)")


def bootstrap_replicates(diffs: Sequence[np.ndarray], draws: int = BOOTSTRAP_DRAWS,
                         seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """`draws` replicates of the two-stage resampled mean of the per-row differences `diffs[s]`."""
    if not diffs or any(len(d) == 0 for d in diffs):
        raise ValueError("every seed needs at least one paired row")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diffs), size=(draws, len(diffs)))
    row_means = np.empty((draws, len(diffs)))
    for s, d in enumerate(diffs):
        slots = np.nonzero(picks == s)
        rows = rng.integers(0, len(d), size=(len(slots[0]), len(d)), dtype=np.int32)
        row_means[slots] = np.asarray(d, dtype=float)[rows].mean(axis=1)
    return row_means.mean(axis=1)


def bootstrap_interval(diffs: Sequence[np.ndarray], draws: int = BOOTSTRAP_DRAWS,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(estimate, 2.5 % percentile, 97.5 % percentile) of the paired difference."""
    estimate = float(np.mean([np.mean(d) for d in diffs]))
    low, high = np.percentile(bootstrap_replicates(diffs, draws, seed), [2.5, 97.5])
    return estimate, float(low), float(high)


def row_differences(arm_rows: dict[str, Any] | None, reference_rows: dict[str, Any] | None,
                    metric: str) -> np.ndarray | None:
    """Per-row `metric` of one seed, arm minus reference, over rows both scored; None when the seed
    lacks row values or the arms' test rows differ (then rows cannot be paired)."""
    if not arm_rows or not reference_rows or arm_rows["sample_ids"] != reference_rows["sample_ids"]:
        return None
    own, ref = arm_rows["values"].get(metric), reference_rows["values"].get(metric)
    if own is None or ref is None or len(own) != len(ref):
        return None
    pairs = [(a, b) for a, b in zip(own, ref, strict=True)
             if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    return np.asarray([a - b for a, b in pairs], dtype=float)
