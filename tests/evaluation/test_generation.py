"""Answer parsing and generation accuracy on hand-made answers; batched greedy generation."""

from __future__ import annotations

import pytest

from feddqc_flwr.evaluation.choices import row_choice
from feddqc_flwr.evaluation.generation import generate_answers, generation_accuracy, parse_answer
from feddqc_flwr.llm.model import ModelBundle
from tests.evaluation.conftest import FREE_ROW, MEDQA_ROW, PUBMEDQA_ROWS

CLOSED = ("maybe", "no", "yes")
MEDQA = row_choice(MEDQA_ROW)
PUBMEDQA = row_choice(PUBMEDQA_ROWS[0], CLOSED)


@pytest.mark.parametrize(("text", "expected"), [
    ("E", 4), ("E. Cross-linking of DNA", 4), ("(B) proteasome", 1), ("[C]", 2),
    ("I think the answer is D because radicals", 3), ("Answer: A", 0),
    ("The drug works by cross-linking of DNA.", 4),  # option text, no letter
    ("A patient with tinnitus", None),  # an article, not an option
    ("the answer is a mystery", None),
    ("", None),
])
def test_parse_lettered_answers(text: str, expected: int | None) -> None:
    assert parse_answer(text, MEDQA) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Yes.", 2), ("no, the study shows otherwise", 1), ("Maybe; the evidence is weak", 0),
    ("The answer is yes, not no", 2), ("Nope", None), ("yesterday", None),
])
def test_parse_yes_no_maybe(text: str, expected: int | None) -> None:
    assert parse_answer(text, PUBMEDQA) == expected


def test_generation_accuracy_hand_value() -> None:
    rows = [MEDQA_ROW, PUBMEDQA_ROWS[0], PUBMEDQA_ROWS[1], FREE_ROW]
    answers = ["E. Cross-linking of DNA", "No.", "I cannot tell", "Pay it off."]
    # MedQA right, PubMedQA 0 wrong (no vs yes), PubMedQA 1 unparsed (wrong), free-text row skipped
    assert generation_accuracy(answers, rows, CLOSED) == ({"gen-acc": 1 / 3, "gen-rows": 3.0, "gen-unparsed": 1.0},
                                                          [1.0, 0.0, 0.0, None])


def test_greedy_generation_does_not_depend_on_batching(tiny_bundle: ModelBundle) -> None:
    rows = [MEDQA_ROW, *PUBMEDQA_ROWS[:2], FREE_ROW]
    kwargs = {"template": "alpaca", "max_length": 256, "max_new_tokens": 5}
    batched = generate_answers(tiny_bundle, rows, batch_size=4, **kwargs)
    single = generate_answers(tiny_bundle, rows, batch_size=1, **kwargs)
    assert batched == single and len(batched) == 4
    assert all(isinstance(a, str) for a in batched)
