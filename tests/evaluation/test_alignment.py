"""Alignment accuracy: candidates by hand, PMI against an explicit forward pass, and accuracies that
are known by construction on a model that prefers the answer words found in the question."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from transformers import AutoTokenizer

from feddqc_flwr.evaluation import evaluate_rows
from feddqc_flwr.evaluation.alignment import alignment_accuracy, distractors, pair_pmi
from feddqc_flwr.llm.model import ModelBundle
from feddqc_flwr.llm.prompts import encode_pair
from tests.evaluation.presence import WORDS, presence_model, word_row
from tests.scoring.common import prompt_ids, response_ids, token_nll

KW = {"template": "alpaca", "max_length": 64, "batch_size": 8}
CLEAN = [word_row(w, w) for w in WORDS]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def presence(tokenizer) -> ModelBundle:
    return presence_model(tokenizer, WORDS, weight=6.0)


def test_distractors_are_the_next_distinct_answers_cyclically() -> None:
    assert distractors(["a", "b", "c", "d"], 3) == [[1, 2], [2, 3], [3, 0], [0, 1]]
    # fewer rows than candidates: every other row competes
    assert distractors(["a", "b", "c"], 10) == [[1, 2], [2, 0], [0, 1]]
    # an answer equal to the row's own (after normalising) or to one already taken is skipped
    assert distractors(["9 apples", "9 Apples.", "3", "4"], 3) == [[2, 3], [2, 3], [3, 0], [0, 2]]
    assert distractors(["yes", "yes"], 10) == [[], []]  # nothing to rank against
    assert distractors(["only"], 10) == [[]]


def test_words_are_single_tokens_found_verbatim_in_their_prompts(tokenizer) -> None:
    for row in CLEAN:
        pair = encode_pair(row, tokenizer, "alpaca", 64)
        assert pair.response_ids[0] in pair.prompt_ids and len(pair.response_ids) == 2  # word + EOS


def test_pmi_is_the_conditioned_minus_the_unconditioned_log_likelihood(presence: ModelBundle) -> None:
    """log p(a|q) - log p(a), each from one explicit forward pass over the whole sequence."""
    tok = presence.tokenizer
    pairs = [(CLEAN[0], WORDS[0]), (CLEAN[0], WORDS[3]), (CLEAN[5], WORDS[2])]
    expected = []
    with torch.no_grad():
        for question, answer in pairs:
            row = {**question, "response": answer}
            prompt, response = prompt_ids(tok, row), response_ids(tok, row)
            conditioned = token_nll(presence.model, [tok.bos_token_id, *prompt, *response], 1 + len(prompt)).sum()
            alone = token_nll(presence.model, [tok.bos_token_id, *response], 1).sum()
            expected.append(float(alone - conditioned))
    assert pair_pmi(presence, pairs, **KW) == pytest.approx(expected, rel=1e-5)
    assert expected[0] > expected[1] + 1.0  # the word in the question is the more likely answer


def test_own_answer_in_the_question_ranks_first(presence: ModelBundle) -> None:
    """8 rows, 10 candidates asked: all 8 answers compete (chance 1/8) and each row's own wins."""
    values, hits = alignment_accuracy(presence, CLEAN, **KW, candidates=10)
    assert hits == [1.0] * 8
    assert values == {"align-acc": 1.0, "align-rows": 8.0, "align-chance": pytest.approx(1 / 8)}


def test_swapped_rows_lose_to_the_answer_their_question_holds(presence: ModelBundle) -> None:
    """Rows 0-3 hold the next row's word in their question (a swap among themselves), rows 4-7 their
    own. With every answer competing, rows 0-3 rank that other word first: accuracy 4/8. With 2
    candidates and every row shifted by one, each row's only rival is the word its question holds: 0."""
    half = [word_row(WORDS[(i + 1) % 4] if i < 4 else w, w) for i, w in enumerate(WORDS)]
    values, hits = alignment_accuracy(presence, half, **KW, candidates=10)
    assert hits == [0.0] * 4 + [1.0] * 4 and values["align-acc"] == 0.5
    shifted = [word_row(WORDS[(i + 1) % 8], w) for i, w in enumerate(WORDS)]
    values, hits = alignment_accuracy(presence, shifted, **KW, candidates=2)
    assert hits == [0.0] * 8 and values["align-chance"] == 0.5


def test_a_model_blind_to_the_question_scores_chance(tokenizer) -> None:
    """Every logit 0: every PMI is exactly 0, a 3-way tie at the top on each row: 1/3 each."""
    blind = presence_model(tokenizer, WORDS, weight=0.0)
    values, hits = alignment_accuracy(blind, CLEAN, **KW, candidates=3)
    assert hits == [pytest.approx(1 / 3)] * 8
    assert values["align-acc"] == pytest.approx(1 / 3) == values["align-chance"]


def test_rows_without_another_answer_are_skipped(presence: ModelBundle) -> None:
    values, hits = alignment_accuracy(presence, [CLEAN[0], CLEAN[0]], **KW, candidates=10)
    assert hits == [None, None] and values["align-rows"] == 0.0 and math.isnan(values["align-acc"])
    with pytest.raises(ValueError, match="at least 2"):
        alignment_accuracy(presence, CLEAN, **KW, candidates=1)


def test_evaluate_rows_gives_the_metric_and_every_row_value(presence: ModelBundle) -> None:
    half = [word_row(WORDS[(i + 1) % 4] if i < 4 else w, w) for i, w in enumerate(WORDS)]
    per_row: dict = {}
    out = evaluate_rows(presence, half, ("loss", "alignment"), **KW, max_new_tokens=1, align_candidates=10,
                        row_values=per_row)
    assert out["align-acc"] == 0.5 and out["align-rows"] == 8.0
    assert per_row["align-acc"] == [0.0] * 4 + [1.0] * 4
    assert len(per_row["loss"]) == 8 and out["loss"] == pytest.approx(sum(per_row["loss"]) / 8)
    with pytest.raises(ValueError, match="eval-align-candidates"):
        evaluate_rows(presence, half, ("alignment",), **KW, max_new_tokens=1)
