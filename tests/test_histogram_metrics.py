"""Global AUROC and kept-set quality from histograms match hand values."""

from __future__ import annotations

import numpy as np
import pytest

from feddqc_flwr.selection.histogram_metrics import histogram_auroc, histogram_summary, selection_at_threshold


def test_auroc_from_histograms_by_hand() -> None:
    clean = np.array([0, 1, 2, 1])  # bins 0..3, higher bin = higher score
    bad = np.array([2, 1, 0, 0])
    # pairs: clean in bin1 vs bad bin0 (1*2 wins) + tie with bad bin1 (0.5*1*1);
    # clean bins 2,3 beat all 3 bad: 3*3 = 9 -> (2 + 0.5 + 9) / (4 * 3)
    assert histogram_auroc(clean, bad) == pytest.approx(11.5 / 12)
    assert np.isnan(histogram_auroc(clean, np.zeros(4)))


def test_selection_at_threshold_by_hand() -> None:
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    clean, bad = np.array([0, 1, 2, 1]), np.array([2, 1, 0, 0])
    out = selection_at_threshold(clean, bad, edges, threshold=1.0)  # keeps bins 1..3
    assert out["kept-clean-fraction"] == pytest.approx(4 / 5)
    assert out["removal-precision"] == pytest.approx(1.0)  # bin 0 holds only bad rows
    assert out["removal-recall"] == pytest.approx(2 / 3)


def test_histogram_summary_by_hand() -> None:
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    counts, bad = np.array([1, 1, 2, 0]), np.array([1, 0, 0, 0])
    out = histogram_summary(edges, counts, bad, threshold=1.0)
    # cumulative shares 1/4, 2/4, 4/4: q10 in bin 0, q50 reached at bin 1, q90 in bin 2 (bin centres)
    assert (out["score-q10"], out["score-q50"], out["score-q90"]) == (0.5, 1.5, 2.5)
    assert out["share-above-lambda"] == pytest.approx(3 / 4) and out["auroc"] == pytest.approx(1.0)
    assert out["removal-precision"] == pytest.approx(1.0)  # bin 0, under lambda, holds the one bad row
    unfiltered = histogram_summary(edges, counts, bad, threshold=None)  # trained without a lambda
    assert "share-above-lambda" not in unfiltered and "removal-precision" not in unfiltered
