"""Swapped pairs score worse than their originals, on a model that copies from its context.

Construction (the `copy_model` fixture in conftest.py): row i asks to repeat the word w_i given as
the input, and the response is w_i (the word's tokens appear verbatim in the prompt; asserted).
The model is a hand-set one-layer Llama whose attention is uniform over the past (q = k = 0) and
adds the mean of the context embeddings to the residual, so with a tied LM head every token in
the context gets a higher logit.
Swapped row i keeps prompt i but takes response w_{i+1}; it is compared with the ORIGINAL row that
owns that response, so both score the same response tokens: L(response) is identical and IRA,
loss, ppl and IFD all differ only in L(response | prompt), which is lower when the prompt contains
the response. Asserted for every pair.
"""

from __future__ import annotations

import numpy as np
import pytest

from feddqc_flwr.llm.prompts import encode_pair
from feddqc_flwr.scoring.ira import ira_scores
from feddqc_flwr.scoring.registry import get_scorer
from tests.scoring.common import make_ctx

WORDS = ["apple", "river", "candle", "mountain", "violin"]
ORIGINAL = [{"instruction": "Repeat the input.", "input": w, "response": w, "history": []} for w in WORDS]
SWAPPED = [{**row, "response": WORDS[(i + 1) % len(WORDS)]} for i, row in enumerate(ORIGINAL)]
OWNER = [(i + 1) % len(WORDS) for i in range(len(WORDS))]  # original row with the same response


def test_responses_appear_verbatim_in_their_prompts(copy_model) -> None:
    for row in ORIGINAL:
        pair = encode_pair(row, copy_model.tokenizer, "alpaca", 64)
        word = pair.response_ids[:-1]  # without EOS
        assert any(pair.prompt_ids[i : i + len(word)] == word for i in range(len(pair.prompt_ids)))


def test_swapped_rows_share_the_unconditioned_loss_of_their_owner(copy_model) -> None:
    kwargs = {"template": "alpaca", "max_length": 64, "batch_size": 4, "device": copy_model.device}
    orig = ira_scores(copy_model.model, copy_model.tokenizer, ORIGINAL, **kwargs)
    swap = ira_scores(copy_model.model, copy_model.tokenizer, SWAPPED, **kwargs)
    np.testing.assert_allclose(swap.loss_unconditioned, orig.loss_unconditioned[OWNER], rtol=1e-5)


@pytest.mark.parametrize("name", ["ira", "loss", "ppl", "ifd"])
def test_every_swapped_row_scores_below_its_original(copy_model, name: str) -> None:
    ctx = make_ctx(copy_model, max_length=64)
    orig = get_scorer(name).score(ORIGINAL, ctx)[OWNER]
    swap = get_scorer(name).score(SWAPPED, ctx)
    assert (orig - swap > 1e-3).all(), f"{name}: originals {orig} vs swapped {swap}"
