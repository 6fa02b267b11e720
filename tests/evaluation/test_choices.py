"""Options of a row, and choice accuracy from known option likelihoods."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from feddqc_flwr.evaluation import choices
from feddqc_flwr.evaluation.choices import Choice, closed_answer_set, lettered_options, row_choice
from feddqc_flwr.llm.model import ModelBundle
from tests.evaluation.conftest import FREE_ROW, MEDQA_ROW, PUBMEDQA_ROWS


def test_lettered_options_of_a_medqa_row() -> None:
    options = lettered_options(MEDQA_ROW["instruction"])
    assert list(options) == ["A", "B", "C", "D", "E"]
    assert options["E"] == "Cross-linking of DNA"
    choice = row_choice(MEDQA_ROW)
    assert choice is not None and choice.gold == 4 and choice.texts[1] == "B. Inhibition of proteasome"


@pytest.mark.parametrize("text", ["Q?\n(A) red\n(B) blue\n(C) green", "Q?\nA) red\nB) blue\nC) green",
                                  "Q?\n A: red\n B: blue\n C: green"])
def test_other_option_formats(text: str) -> None:
    assert lettered_options(text) == {"A": "red", "B": "blue", "C": "green"}


def test_no_options_in_prose_or_pubmedqa_context() -> None:
    assert lettered_options("A patient came in.\nB. only one lettered line") == {}
    assert lettered_options(PUBMEDQA_ROWS[0]["input"]) == {}


def test_gold_given_as_option_text_or_bare_letter() -> None:
    assert row_choice({**MEDQA_ROW, "response": "Inhibition of proteasome."}).gold == 1
    assert row_choice({**MEDQA_ROW, "response": "(C)"}).gold == 2
    assert row_choice({**MEDQA_ROW, "response": "Something else entirely"}) is None


def test_closed_answer_set_of_pubmedqa_and_none_for_free_text() -> None:
    assert closed_answer_set(r["response"] for r in PUBMEDQA_ROWS) == ("maybe", "no", "yes")
    assert closed_answer_set(["Yes.", "no", "yes"]) == ("no", "yes")
    assert closed_answer_set(["a long answer", "another answer"]) == ()  # all distinct: free text
    assert closed_answer_set([str(i % 7) for i in range(50)]) == ()  # more than 5 answers
    assert closed_answer_set(["yes", "yes", "no", "it depends on the rate"]) == ()  # a sentence among them
    assert row_choice(PUBMEDQA_ROWS[1], ("maybe", "no", "yes")) == Choice(("maybe", "no", "yes"),
                                                                           ("maybe", "no", "yes"), 1)
    assert row_choice(PUBMEDQA_ROWS[1]) is None and row_choice(FREE_ROW, ("no", "yes")) is None


def test_choice_accuracy_is_argmin_of_option_nll(monkeypatch: pytest.MonkeyPatch, tiny_model_dir) -> None:
    """Known option NLLs: the MedQA row picks E (gold, right), the PubMedQA row 'maybe' (gold yes, wrong)."""
    from transformers import AutoTokenizer

    seen: list[int] = []

    def fake_mean_nll(model, sequences, pad_id, batch_size, device) -> np.ndarray:
        seen.append(len(sequences))
        return np.array([3.0, 2.0, 2.5, 4.0, 1.0,  # A..E of the MedQA row
                         0.5, 0.7, 0.9])  # maybe, no, yes

    monkeypatch.setattr(choices, "mean_nll", fake_mean_nll)
    bundle = SimpleNamespace(model=None, tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir), device=None)
    out, hits = choices.choice_accuracy(ModelBundle(**vars(bundle)), [MEDQA_ROW, FREE_ROW, PUBMEDQA_ROWS[0]],
                                        template="alpaca", max_length=256, batch_size=4,
                                        closed_set=("maybe", "no", "yes"))
    assert seen == [8]
    assert out == {"choice-acc": 0.5, "choice-rows": 2.0, "choice-skipped": 1.0}
    assert hits == [1.0, None, 0.0]


def test_choice_accuracy_on_the_tiny_model_is_a_share(tiny_bundle: ModelBundle) -> None:
    out, hits = choices.choice_accuracy(tiny_bundle, [MEDQA_ROW, *PUBMEDQA_ROWS], template="alpaca",
                                        max_length=256, batch_size=3, closed_set=("maybe", "no", "yes"))
    assert out["choice-rows"] == 5 and out["choice-skipped"] == 0
    assert set(hits) <= {0.0, 1.0} and out["choice-acc"] == sum(hits) / 5
