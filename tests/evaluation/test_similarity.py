"""BERTScore-style similarity: greedy token matching by hand, identical texts score 1."""

from __future__ import annotations

import numpy as np
import pytest

from feddqc_flwr.evaluation.similarity import answer_similarity, greedy_match_f1


def test_greedy_match_f1_hand_value() -> None:
    candidate = np.array([[1.0, 0.0], [0.0, 2.0]])  # unit x, unit y after normalising
    reference = np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])  # x, 45 degrees, -x
    # precision: x best matches x (1), y best matches 45deg (0.7071) -> 0.85355
    # recall: x->1, 45deg->0.7071, -x->max(-1, 0) = 0 -> 0.56904
    p, r = (1 + 2 ** -0.5) / 2, (1 + 2 ** -0.5) / 3
    assert greedy_match_f1(candidate, reference) == pytest.approx(2 * p * r / (p + r))
    assert greedy_match_f1(candidate, np.zeros((0, 2))) == 0.0


def test_identical_texts_score_one_and_unrelated_ones_lower() -> None:
    same, per_pair = answer_similarity(["The cat sat on the mat.", "yes"], ["The cat sat on the mat.", "yes"])
    assert same == pytest.approx(1.0, abs=1e-5) and per_pair == pytest.approx([1.0, 1.0], abs=1e-5)
    unrelated, _ = answer_similarity(["Paris is in France"], ["The stock market crashed"])
    close, _ = answer_similarity(["The cat sat on the mat."], ["A cat was sitting on the mat."])
    assert unrelated < 0.3 < close < 1.0
    assert answer_similarity([""], ["anything"]) == (0.0, [0.0])
    with pytest.raises(ValueError, match="1 predictions for 2 references"):
        answer_similarity(["a"], ["a", "b"])
