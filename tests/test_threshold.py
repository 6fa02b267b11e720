"""Lambda from summed client histograms is within one bin of the exact global quantile."""

from __future__ import annotations

import numpy as np
import pytest

from feddqc_flwr.selection.threshold import lambda_for_retention, local_histogram, shared_edges


@pytest.mark.parametrize("retention", [0.1, 0.3, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("bins", [10, 200])
def test_lambda_matches_exact_quantile_within_one_bin(retention: float, bins: int) -> None:
    rng = np.random.default_rng(1)
    clients = [rng.normal(0, 1, 300), rng.normal(1, 2, 120), rng.standard_t(3, 500)]
    edges = shared_edges([c.min() for c in clients], [c.max() for c in clients], bins)
    counts = sum(local_histogram(c, edges) for c in clients)
    lam = lambda_for_retention(counts, edges, retention)
    pooled = np.sort(np.concatenate(clients))[::-1]
    target = int(np.ceil(retention * len(pooled)))
    exact = pooled[target - 1]  # the target-th largest score
    width = edges[1] - edges[0]
    assert exact - width - 1e-9 <= lam <= exact + 1e-9
    kept = (pooled >= lam).sum()
    assert kept >= target
    assert counts.sum() == len(pooled)


def test_nan_scores_are_not_counted_and_outliers_land_in_end_bins() -> None:
    edges = np.linspace(0, 1, 5)
    counts = local_histogram(np.array([np.nan, -5.0, 0.1, 0.6, 9.0]), edges)
    assert counts.tolist() == [2, 0, 1, 1]
