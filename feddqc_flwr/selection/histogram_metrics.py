"""Global selection quality from summed clean/corrupted histograms (no per-sample data).

With synthetic corruption each client also reports how many of its corrupted samples fall in
each bin, so the server can say how well the global threshold separates bad from clean data
without seeing a single score. Within-bin order is unknown, so same-bin pairs count half.
"""

from __future__ import annotations

import numpy as np


def histogram_auroc(clean: np.ndarray, bad: np.ndarray) -> float:
    """P(clean scores above bad) with ties (same bin) counted half; NaN without both kinds."""
    n_clean, n_bad = clean.sum(), bad.sum()
    if n_clean == 0 or n_bad == 0:
        return float("nan")
    bad_below = np.concatenate([[0], np.cumsum(bad)[:-1]])
    wins = (clean * bad_below).sum() + 0.5 * (clean * bad).sum()
    return float(wins / (n_clean * n_bad))


def selection_at_threshold(clean: np.ndarray, bad: np.ndarray, edges: np.ndarray,
                           threshold: float) -> dict[str, float]:
    """Clean share of what is kept, and precision/recall of what is removed (positive = bad)."""
    kept = edges[:-1] >= threshold
    kept_clean, kept_bad = clean[kept].sum(), bad[kept].sum()
    removed_bad, removed = bad[~kept].sum(), clean[~kept].sum() + bad[~kept].sum()
    nan = float("nan")
    return {
        "kept-clean-fraction": float(kept_clean / (kept_clean + kept_bad)) if kept_clean + kept_bad else nan,
        "removal-precision": float(removed_bad / removed) if removed else nan,
        "removal-recall": float(removed_bad / bad.sum()) if bad.sum() else nan,
    }


def histogram_summary(edges: np.ndarray, counts: np.ndarray, bad: np.ndarray,
                      threshold: float | None) -> dict[str, float]:
    """Global score quantiles (bin centres), the share at or above lambda and, when corruption
    flags exist, AUROC and the kept/removed quality at lambda."""
    centers = (edges[:-1] + edges[1:]) / 2
    cdf = np.cumsum(counts) / max(1, counts.sum())
    out = {f"score-q{int(q * 100)}": float(centers[min(len(centers) - 1, np.searchsorted(cdf, q))])
           for q in (0.1, 0.5, 0.9)}
    if threshold is not None:
        out["share-above-lambda"] = float(counts[edges[:-1] >= threshold].sum() / max(1, counts.sum()))
    if bad.sum():
        out["auroc"] = histogram_auroc(counts - bad, bad)
        if threshold is not None:
            out.update(selection_at_threshold(counts - bad, bad, edges, threshold))
    return out
