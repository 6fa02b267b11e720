"""Selection-quality metrics against values worked out by hand on a toy score list."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feddqc_flwr.selection.quality_metrics import auroc, kept_mask, quality_by_type, selection_quality

# clean keep-scores 0.9 0.8 0.5 0.3; bad 0.8 (tie) 0.3 (tie) NaN (= lowest) 0.1
SCORES = [0.9, 0.8, 0.8, 0.5, 0.3, 0.3, math.nan, 0.1]
BAD = [False, False, True, False, True, False, True, True]
TYPES = ["clean", "clean", "swap", "clean", "noisy", "clean", "swap", "noisy"]


def test_auroc_counts_ties_as_half() -> None:
    # clean-vs-bad pair wins: 0.9 -> 4, 0.8 -> 3 + ½, 0.5 -> 3, 0.3 -> 2 + ½  => 13 / 16
    assert auroc(SCORES, [not b for b in BAD]) == pytest.approx(13 / 16)
    assert auroc([1, 1, 1], [True, False, True]) == pytest.approx(0.5)
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


def test_auroc_agrees_with_sklearn_on_random_ties() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 200).astype(float), rng.random(200) < 0.4
    assert auroc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores))


def test_overall_metrics_at_two_retentions() -> None:
    half = selection_quality(SCORES, BAD, retention=0.5)  # keeps rows 0-3 (ceil 4.0)
    assert half == pytest.approx({"n": 8, "bad_fraction": 0.5, "auroc": 13 / 16, "kept": 4,
                                  "kept_clean_fraction": 3 / 4, "removal_precision": 3 / 4,
                                  "removal_recall": 3 / 4})
    low = selection_quality(SCORES, BAD, retention=0.3)  # ceil(2.4) = 3: rows 0, 1, 2
    assert low["kept"] == 3 and low["kept_clean_fraction"] == pytest.approx(2 / 3)
    assert low["removal_precision"] == pytest.approx(3 / 5) and low["removal_recall"] == pytest.approx(3 / 4)


def test_per_type_metrics_use_clean_rows_plus_that_type() -> None:
    by_type = quality_by_type(SCORES, BAD, TYPES, retention=0.5)
    assert set(by_type) == {"swap", "noisy"}
    # swap 0.8, NaN vs clean: 2 + 1½ + 1 + 1 = 5½ of 8; removed in subset {5, 6}, swap {2, 6}
    assert by_type["swap"] == pytest.approx({"n": 2, "auroc": 5.5 / 8, "removal_precision": 1 / 2,
                                             "removal_recall": 1 / 2})
    # noisy 0.3, 0.1 vs clean: 2 + 2 + 2 + 1½ = 7½ of 8; removed in subset {4, 5, 7}, noisy {4, 7}
    assert by_type["noisy"] == pytest.approx({"n": 2, "auroc": 7.5 / 8, "removal_precision": 2 / 3,
                                              "removal_recall": 1.0})


def test_undefined_values_are_nan() -> None:
    clean = selection_quality([0.3, 0.2, 0.1], [False] * 3, retention=0.5)
    assert math.isnan(clean["auroc"]) and math.isnan(clean["removal_recall"])
    assert clean["removal_precision"] == 0.0 and clean["kept_clean_fraction"] == 1.0
    nothing_kept = selection_quality([0.3, 0.2], [False, True], retention=0.0)
    assert math.isnan(nothing_kept["kept_clean_fraction"])
    assert quality_by_type([0.1], [False], ["clean"], 0.5) == {}


def test_kept_mask_breaks_ties_by_row_order_and_ignores_float_noise() -> None:
    np.testing.assert_array_equal(kept_mask([1.0, 2.0, 2.0, 0.0], 0.25), [False, True, False, False])
    assert kept_mask(np.arange(10.0), 0.3).sum() == 3  # 0.3 * 10 = 3.0000000000000004
