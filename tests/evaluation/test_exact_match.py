"""Exact match: the answer normaliser on hand examples, and greedy answers known by construction."""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction

import pytest
import torch
from transformers import AutoTokenizer

from feddqc_flwr.evaluation import evaluate_rows
from feddqc_flwr.evaluation.exact_match import answers_match, exact_match, normalise_text, numbers
from tests.evaluation.presence import WORDS, presence_model, word_row


@pytest.mark.parametrize(("prediction", "reference"), [
    ("9", "9 apples"), ("9 apples", "9"), ("There are 9 apples.", "9 apples"), ("9 Apples", "9 apples"),
    ("1000", "1,000"), ("1,000 dollars", "1000"), ("3", "3.0"), ("3.50", "3.5"), ("0.5", "1/2"), ("$15", "15 dollars"),
    ("3:30", "3:30 p.m."), ("12 and 5", "12 years old; 5 years old"), ("-4 degrees", "-4"),
    ("9 apples\nThere were 7 red apples.", "9 apples"),  # only the first k numbers count
    ("The Eagles", "eagles"), ("Meghan Trainor!", "meghan trainor"), ("Paris.\n\nIt is the capital.", "Paris"),
    ("an apple", "Apple"), ("Yes.", "yes"),
])
def test_answers_that_match(prediction: str, reference: str) -> None:
    assert answers_match(prediction, reference)


@pytest.mark.parametrize(("prediction", "reference"), [
    ("8 apples", "9 apples"), ("apples", "9 apples"), ("19", "9"), ("3:45", "3:30 p.m."), ("2:3", "3:2"),
    ("12 and 6", "12 years old; 5 years old"), ("4", "-4"), ("3-4", "4"),  # "3-4" is a range: first number 3
    ("nine", "9"),  # number words are not read
    ("It is Paris", "Paris"), ("no", "yes"), ("", "yes"),
])
def test_answers_that_do_not_match(prediction: str, reference: str) -> None:
    assert not answers_match(prediction, reference)


def test_numbers_and_text_normalisation_by_hand() -> None:
    assert numbers("1,234.5 kg, then .5 and 7/4 at 3:05; -2 or 3-4") == [
        Fraction(12345, 10), Fraction(1, 2), Fraction(7, 4), (3, 5), -2, 3, 4]
    assert numbers("1,2 and 1/0") == [1, 2, 1, 0]  # no thousands group, no zero denominator
    assert normalise_text("  The  Meghan Trainor, (an) A-ha!  ") == "meghan trainor aha"
    assert normalise_text("Jay-Z") == "jayz" != normalise_text("Jay Z")  # deleted, as SQuAD does


def test_exact_match_on_short_answers_with_long_ones_skipped() -> None:
    rows = [{"response": r} for r in ("9 apples", "15 balls", "Meghan Trainor",
                                      "It depends on the interest rate and on your other investments.")]
    values, hits = exact_match(["9", "There are 16 balls.", "meghan trainor", "It depends."], rows)
    assert hits == [1.0, 0.0, 1.0, None]
    assert values == {"exact-match": pytest.approx(2 / 3), "exact-match-rows": 3.0, "exact-match-skipped": 1.0}
    empty, none = exact_match([""], [{"response": "a long free text answer of many more words than eight"}])
    assert math.isnan(empty["exact-match"]) and none == [None]
    with pytest.raises(ValueError, match="1 answers for 2 rows"):
        exact_match(["a"], rows[:2])


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_greedy_answers_of_a_model_that_repeats_the_question_word(tiny_model_dir, one_torch_thread) -> None:
    """The presence model's largest logit is the answer word its question holds, so one greedy token
    answers that word: right for the 4 rows asking for their own word, wrong for the 4 whose
    question holds another row's word."""
    model = presence_model(AutoTokenizer.from_pretrained(tiny_model_dir), WORDS, weight=6.0)
    rows = [word_row(WORDS[(i + 1) % 4] if i < 4 else w, w) for i, w in enumerate(WORDS)]
    per_row: dict = {}
    out = evaluate_rows(model, rows, ("exact-match",), template="alpaca", max_length=64, batch_size=4,
                        max_new_tokens=1, row_values=per_row)
    assert out == {"exact-match": 0.5, "exact-match-rows": 8.0, "exact-match-skipped": 0.0}
    assert per_row == {"exact-match": [0.0] * 4 + [1.0] * 4}
