"""Global threshold lambda from per-client score histograms (never raw scores).

Protocol at each hierarchy start: every client reports count/min/max of its fresh scores, the
server fixes shared bin edges, every client reports its counts on those edges, and the server
picks lambda from the summed histogram. Lambda is the lower edge of the bin holding the exact
quantile, so it is within one bin width of it and keeps at least the requested share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def shared_edges(mins: Sequence[float], maxs: Sequence[float], bins: int) -> np.ndarray:
    """Equal-width edges spanning every client's scores."""
    lo, hi = float(min(mins)), float(max(maxs))
    if hi <= lo:
        hi = lo + 1e-6
    return np.linspace(lo, hi, bins + 1)


def local_histogram(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of finite scores per bin; values outside the edges go to the end bins."""
    finite = scores[np.isfinite(scores)]
    clipped = np.clip(finite, edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=edges)
    return counts


def lambda_for_retention(counts: np.ndarray, edges: np.ndarray, retention: float) -> float:
    """Smallest bin edge such that at least `retention` of all scores lie at or above it."""
    total = int(counts.sum())
    if total == 0:
        return float(edges[0])
    target = max(1, math.ceil(retention * total))
    from_top = np.cumsum(counts[::-1])
    bins_from_top = int(np.searchsorted(from_top, target))
    return float(edges[len(counts) - 1 - bins_from_top])
