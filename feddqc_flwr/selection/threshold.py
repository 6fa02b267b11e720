"""Global thresholds from the summed client histograms (never raw scores).

The clients' counts arrive on fixed bins (`score_sketch`) with the score query, and the server
picks lambda from their sum. Lambda is always the lower edge of a bin: in retention mode the edge
of the bin holding the exact quantile (within one bin width of it, keeping at least the requested
share); a lambda the run config names is rounded down to the lower edge of its bin (less than
2/histogram-bins of |lambda| lower). So "score >= lambda" on a client and "bin's lower edge >=
lambda" on the server select the same rows, a score exactly on an edge included.

With several criteria (`scoring.criteria`) each one gets its own lambda from its own histogram,
at the share `criterion_retention(retention, C) = retention^(1/C)`: the joint kept share is
`retention` when the criteria are independent, more when they agree on which rows are good
(the clients report the rows they actually kept, so the run shows the joint share).
"""

from __future__ import annotations

import math

import numpy as np

from feddqc_flwr.selection.score_sketch import bin_index, lower_edges


def kept_count(retention: float, total: int) -> int:
    """ceil(retention·total), at least 1, without float noise (0.07·100 is 7.000000000000001)."""
    return min(total, max(1, math.ceil(retention * total - 1e-9)))


def lambda_for_retention(counts: np.ndarray, edges: np.ndarray, retention: float) -> float:
    """Smallest bin edge such that at least `retention` of all scores lie at or above it.

    Counts may carry signed DP noise (`dp-histogram-epsilon`): the count from the top is then not
    monotone, and the first bin where it reaches the target is taken."""
    total = int(counts.sum())
    if total <= 0:
        return float(edges[0])
    target = kept_count(retention, total)
    from_top = np.cumsum(counts[::-1])
    bins_from_top = int(np.argmax(from_top >= target))
    return float(edges[len(counts) - 1 - bins_from_top])


def criterion_retention(retention: float, criteria: int) -> float:
    """Each criterion's share when a row must pass all `criteria` and `retention` should be kept."""
    return retention ** (1.0 / criteria)


def snap_to_bin_edge(value: float, bins: int) -> float:
    """The lower edge of the fixed bin holding `value`, so clients and server count the same rows."""
    if not math.isfinite(value):
        return value
    return float(lower_edges(bin_index(np.array([value]), bins), bins)[0])
