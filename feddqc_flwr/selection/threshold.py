"""Global threshold lambda from the summed client histograms (never raw scores).

The clients' counts arrive on fixed bins (`score_sketch`) with the score query, and the server
picks lambda from their sum. Lambda is the lower edge of the bin holding the exact quantile, so
it is within one bin width of it and keeps at least the requested share.
"""

from __future__ import annotations

import math

import numpy as np


def lambda_for_retention(counts: np.ndarray, edges: np.ndarray, retention: float) -> float:
    """Smallest bin edge such that at least `retention` of all scores lie at or above it.

    Counts may carry signed DP noise (`dp-histogram-epsilon`): the count from the top is then not
    monotone, and the first bin where it reaches the target is taken."""
    total = int(counts.sum())
    if total <= 0:
        return float(edges[0])
    target = max(1, math.ceil(retention * total))
    from_top = np.cumsum(counts[::-1])
    bins_from_top = int(np.argmax(from_top >= target))
    return float(edges[len(counts) - 1 - bins_from_top])
