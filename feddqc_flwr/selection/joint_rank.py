"""One number per row that ranks rows as a filter with several criteria does: the rank-min.

Keeping the rows whose every criterion is in its own top share s is keeping the rows whose
rank-min is >= 1 - s, so the rank-min's AUROC and kept share measure the joint filter over all s,
and sorting by it puts the rows that look good to every criterion first. Ranks are among the rows
given (scale-free, computed where the rows are): the global thresholds come from histograms, the
order inside a client's stage from its own rows.
"""

from __future__ import annotations

import numpy as np

from feddqc_flwr.selection.quality_metrics import average_ranks


def pool_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks in [0, 1] among the finite scores (ties share their mean rank, 1 = best); NaN stays NaN."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.full(len(scores), np.nan)
    finite = np.isfinite(scores)
    n = int(finite.sum())
    if n:
        out[finite] = (average_ranks(scores[finite]) - 1.0) / max(1, n - 1)
    return out


def joint_keep_score(columns: np.ndarray) -> np.ndarray:
    """Rank-min over criteria of an (n, C) keep-score matrix: high only when every criterion is high.

    One criterion: its keep-scores unchanged (no ranking needed). NaN in any criterion -> NaN.
    """
    columns = np.asarray(columns, dtype=np.float64)
    if columns.size == 0:
        return np.zeros(0)
    columns = columns.reshape(len(columns), -1)
    if columns.shape[1] == 1:
        return columns[:, 0]
    return np.stack([pool_ranks(columns[:, c]) for c in range(columns.shape[1])], axis=1).min(axis=1)
