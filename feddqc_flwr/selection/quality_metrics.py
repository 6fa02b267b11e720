"""How well keep-scores separate clean rows from synthetically corrupted ones.

Keep-scores are higher = better; NaN (unscorable) counts as the lowest score, since such rows
are dropped first. Positives are CLEAN rows for AUROC (does a high keep-score mean clean?) and
BAD rows for removal precision/recall (is what we drop bad?). Undefined values are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _as_scores(keep_scores: Sequence[float] | np.ndarray) -> np.ndarray:
    scores = np.asarray(keep_scores, dtype=np.float64)
    return np.where(np.isnan(scores), -np.inf, scores)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_vals = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_vals[end] != sorted_vals[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2.0
            start = end
    return ranks


def auroc(keep_scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> float:
    """P(score of a random positive > a random negative), ties counted ½ (Mann–Whitney U)."""
    scores, pos = _as_scores(keep_scores), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    u = average_ranks(scores)[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def kept_mask(keep_scores: Sequence[float] | np.ndarray, retention: float) -> np.ndarray:
    """Keep the top ceil(retention·n) rows by keep-score (ties broken by row order)."""
    scores = _as_scores(keep_scores)
    n_keep = min(len(scores), math.ceil(retention * len(scores) - 1e-9))  # 0.3·10 is 3.0000000000000004
    kept = np.zeros(len(scores), dtype=bool)
    kept[np.argsort(-scores, kind="stable")[:n_keep]] = True
    return kept


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _removal(kept: np.ndarray, bad: np.ndarray) -> dict[str, float]:
    removed = ~kept
    hits = int((removed & bad).sum())
    return {"removal_precision": _ratio(hits, int(removed.sum())), "removal_recall": _ratio(hits, int(bad.sum()))}


def selection_quality(keep_scores: Sequence[float] | np.ndarray, is_bad: Sequence[bool] | np.ndarray,
                      retention: float) -> dict[str, float]:
    """AUROC (clean = positive), kept-set clean fraction and removal precision/recall (bad = positive)."""
    bad = np.asarray(is_bad, dtype=bool)
    kept = kept_mask(keep_scores, retention)
    return {"n": float(len(bad)), "bad_fraction": _ratio(int(bad.sum()), len(bad)),
            "auroc": auroc(keep_scores, ~bad), "kept": float(kept.sum()),
            "kept_clean_fraction": _ratio(int((kept & ~bad).sum()), int(kept.sum())), **_removal(kept, bad)}


def quality_by_type(keep_scores: Sequence[float] | np.ndarray, is_bad: Sequence[bool] | np.ndarray,
                    bad_type: Sequence[str], retention: float) -> dict[str, dict[str, float]]:
    """Per corruption type, on the clean rows plus that type's rows only.

    AUROC is clean vs this type; removal precision/recall use the keep decision made on ALL
    rows, counted within clean ∪ this type.
    """
    scores, bad, types = np.asarray(keep_scores, dtype=np.float64), np.asarray(is_bad, dtype=bool), np.asarray(bad_type)
    kept = kept_mask(scores, retention)
    out = {}
    for kind in sorted(set(types[bad].tolist())):
        this = bad & (types == kind)
        subset = ~bad | this
        out[kind] = {"n": float(this.sum()), "auroc": auroc(scores[subset], ~bad[subset]),
                     **_removal(kept[subset], this[subset])}
    return out
