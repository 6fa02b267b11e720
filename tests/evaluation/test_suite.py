"""evaluate_rows: each metric against a value known without the evaluation code, bad requests refused.

The loss is checked against an explicit forward pass written here (one sequence, full logits,
log-softmax), and every metric against a unigram model whose next-token probabilities are set
by hand, so its loss, its preferred options and its greedy answers are known by construction.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from feddqc_flwr.evaluation import evaluate_rows
from feddqc_flwr.llm.encoder import sentence_encoder
from feddqc_flwr.llm.model import ModelBundle
from tests.evaluation.conftest import FREE_ROW, MEDQA_ROW, PUBMEDQA_ROWS
from tests.scoring.common import prompt_ids, response_ids, token_nll, unigram_model

KW = {"template": "alpaca", "max_length": 256, "batch_size": 4, "max_new_tokens": 4}
ROWS = [MEDQA_ROW, *PUBMEDQA_ROWS, FREE_ROW]
CLOSED = ("maybe", "no", "yes")


def test_loss_is_the_mean_over_rows_of_the_response_nll_by_an_explicit_forward(tiny_bundle: ModelBundle) -> None:
    """Each row alone through the model: BOS + Alpaca prompt + response + EOS, NLL of the
    response tokens and EOS from log-softmax, averaged per row, then over the rows."""
    tok = tiny_bundle.tokenizer
    per_row = []
    with torch.no_grad():
        for row in ROWS:
            prompt, response = prompt_ids(tok, row), response_ids(tok, row)
            assert 1 + len(prompt) + len(response) < KW["max_length"]  # nothing is cut
            per_row.append(token_nll(tiny_bundle.model, [tok.bos_token_id, *prompt, *response],
                                     1 + len(prompt)).mean().item())
    out = evaluate_rows(tiny_bundle, ROWS, ("loss",), **KW)
    assert out == {"loss": pytest.approx(float(np.mean(per_row)), rel=1e-5)}


@pytest.fixture(scope="module")
def unigram(tiny_bundle: ModelBundle) -> ModelBundle:
    """Logits 8 for 'yes', 9 for ' no', 4 for 'B', 0 for every other token, after any context."""
    tok = tiny_bundle.tokenizer
    ids = {text: tok(text, add_special_tokens=False).input_ids for text in ("yes", " no", "B")}
    assert all(len(v) == 1 for v in ids.values())
    model = unigram_model(tok, {ids["yes"][0]: 8.0, ids[" no"][0]: 9.0, ids["B"][0]: 4.0})
    return ModelBundle(model=model, tokenizer=tok, device=torch.device("cpu"))


def test_every_metric_on_a_unigram_model_with_known_answers(unigram: ModelBundle) -> None:
    """With Z = (V - 3) + e^8 + e^9 + e^4, a token's NLL is ln Z - logit:
    - loss: only the two 'yes' responses hold a boosted token (yes, EOS: mean ln Z - 4); the other
      four responses have NLL ln Z at every token, so the mean over 6 rows is ln Z - 8/6 (to 1e-5:
      the model sums 49,152 float32 exponentials);
    - choice: option 'B. Inhibition of proteasome' + EOS (9 tokens, 'B' boosted) has the lowest
      mean NLL, ln Z - 4/9, so the MedQA row picks B (gold E: wrong); the PubMedQA rows pick 'yes'
      (ln Z - 4), right for the two gold 'yes' rows: 2 of 5;
    - generation: greedy always takes ' no', answering 'no no no no': right for the one gold 'no'
      row, and the MedQA row names no option (unparsed): 1 of 5.
    The free-text row has no options and is skipped by both."""
    vocab = len(unigram.tokenizer)
    log_z = math.log(vocab - 3 + math.exp(8) + math.exp(9) + math.exp(4))
    out = evaluate_rows(unigram, ROWS, ("loss", "choice", "generation"), **KW, closed_set=CLOSED)
    assert out == {"loss": pytest.approx(log_z - 8 / 6, rel=1e-5),
                   "choice-acc": pytest.approx(2 / 5), "choice-rows": 5.0, "choice-skipped": 1.0,
                   "gen-acc": pytest.approx(1 / 5), "gen-rows": 5.0, "gen-unparsed": 1.0}


def test_similarity_of_known_answers(unigram: ModelBundle) -> None:
    """One new token: the unigram model answers 'no'. Against the reference 'no' that is the same
    text (BERTScore-F1 1); against 'yes' both texts are one MiniLM token each, so precision =
    recall = F1 = the cosine of the two token embeddings, computed here from the encoder."""
    kw = {**KW, "max_new_tokens": 1}
    no_row, yes_row = PUBMEDQA_ROWS[1], PUBMEDQA_ROWS[0]
    assert evaluate_rows(unigram, [no_row], ("similarity",), **kw) == {"similarity": pytest.approx(1.0, abs=1e-6)}
    no, yes = (o.float().numpy()[1:-1] for o in sentence_encoder().encode(
        ["no", "yes"], output_value="token_embeddings", convert_to_numpy=False, show_progress_bar=False))
    assert no.shape[0] == yes.shape[0] == 1
    cosine = float(no[0] @ yes[0] / np.linalg.norm(no[0]) / np.linalg.norm(yes[0]))
    got = evaluate_rows(unigram, [no_row, yes_row], ("similarity",), **kw)["similarity"]
    assert cosine < 0.99 and got == pytest.approx((1 + cosine) / 2, abs=1e-6)


def test_answer_set_derived_from_the_rows(tiny_bundle: ModelBundle) -> None:
    """PubMedQA rows alone give yes/no/maybe; a long free-text answer among them rules a closed set out."""
    assert evaluate_rows(tiny_bundle, PUBMEDQA_ROWS, ("choice",), **KW)["choice-rows"] == 4
    assert evaluate_rows(tiny_bundle, [*PUBMEDQA_ROWS, FREE_ROW], ("choice",), **KW)["choice-rows"] == 0


def test_loss_only_and_no_rows(tiny_bundle: ModelBundle) -> None:
    assert set(evaluate_rows(tiny_bundle, [FREE_ROW], ("loss",), **KW)) == {"loss"}
    assert evaluate_rows(tiny_bundle, [], ("loss", "choice"), **KW) == {}


def test_unknown_metric_and_judge_without_endpoint_are_refused(tiny_bundle: ModelBundle) -> None:
    with pytest.raises(ValueError, match="unknown evaluation metric"):
        evaluate_rows(tiny_bundle, [FREE_ROW], ("bleu",), **KW)
    with pytest.raises(ValueError, match="judge-url"):
        evaluate_rows(tiny_bundle, [FREE_ROW], ("judge",), **KW)
