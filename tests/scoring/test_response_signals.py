"""The signals added to the likelihood passes, each against a hand computation on the tiny model
(conftest.py's `bundle`, non-zero LoRA): the prompt texts are written out here, every sequence goes
through a plain full-logits forward with log_softmax (`common.token_nll`), and the NLLs are reduced
by hand.

- eos: NLL of the EOS token after the response in the conditioned pass; a response cut by
  max-length has no EOS and gets keep-score 0;
- ira-sum with another baseline: `template` (the Alpaca prompt with an empty instruction) and
  `marker` ("### Response:\\n" alone) instead of the response alone;
- contrast: mean over the row's partners of L(y | x_j), minus L(y | x_i), summed token NLL.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feddqc_flwr.scoring.likelihood import ContrastScorer, EOSScorer, IRAScorer
from feddqc_flwr.scoring.passes import CONTRAST_PARTNERS, contrast_partners, likelihood_passes
from tests.scoring.common import ROWS, make_ctx, prompt_ids, response_ids, token_nll

EMPTY_HEAD = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
              "request.\n\n### Instruction:\n\n\n")
MARKER = "### Response:\n"  # tokenized on its own, as the training prompt's marker is


def _nll_after(bundle, prefix: list[int], row) -> torch.Tensor:
    """Token NLLs of row's response (+ EOS) after [BOS] + prefix, one unpadded sequence."""
    tok = bundle.tokenizer
    with torch.no_grad():
        return token_nll(bundle.model, [tok.bos_token_id, *prefix, *response_ids(tok, row)], 1 + len(prefix))


def test_eos_scorer_is_minus_the_nll_of_eos_after_the_response(bundle) -> None:
    tok = bundle.tokenizer
    long_row = {**ROWS[1], "response": " ".join(f"w{i}" for i in range(200))}  # cut at max-length: no EOS
    rows = [*ROWS, long_row]
    scores = EOSScorer().score(rows, make_ctx(bundle, batch_size=3, max_length=128))  # padded batches
    for i, row in enumerate(ROWS):
        nll = _nll_after(bundle, prompt_ids(tok, row), row)
        assert scores[i] == pytest.approx(-nll[-1].item(), rel=1e-5)  # the last labelled token is EOS
        assert scores[i] != pytest.approx(-nll[-2].item(), rel=1e-3)  # not the response's last word
    assert scores[-1] == 0.0


def test_eos_is_nan_in_the_pass_where_the_response_has_none(bundle) -> None:
    long_row = {**ROWS[1], "response": " ".join(f"w{i}" for i in range(200))}
    passes = likelihood_passes([long_row, ROWS[0]], make_ctx(bundle, max_length=128), ("conditioned",))
    assert np.isnan(passes["conditioned"].eos[0]) and np.isfinite(passes["conditioned"].eos[1])


@pytest.mark.parametrize("baseline, head", [("template", EMPTY_HEAD), ("marker", "")])
def test_ira_sum_with_a_prompt_in_the_baseline_pass(bundle, baseline: str, head: str) -> None:
    tok = bundle.tokenizer
    scorer = IRAScorer("sum", baseline)
    assert scorer.name == f"ira-sum-{baseline}" and scorer.passes == ("conditioned", baseline)
    scores = scorer.score(ROWS, make_ctx(bundle, batch_size=2))
    for i, row in enumerate(ROWS):
        prefix = tok(head, add_special_tokens=False).input_ids + tok(MARKER, add_special_tokens=False).input_ids
        base = _nll_after(bundle, prefix, row)
        cond = _nll_after(bundle, prompt_ids(tok, row), row)
        assert len(base) == len(cond)
        assert scores[i] == pytest.approx((base.sum() - cond.sum()).item(), abs=1e-4)


def test_contrast_partners_are_other_rows_each_used_equally() -> None:
    for n in (2, 3, 7, 60):
        partners = contrast_partners(n)
        k = min(CONTRAST_PARTNERS, n - 1)
        assert partners.shape == (n, k)
        for i, js in enumerate(partners):
            assert i not in js and len(set(js)) == k
        assert np.bincount(partners.ravel(), minlength=n).tolist() == [k] * n
        np.testing.assert_array_equal(partners, contrast_partners(n))  # the same rows, the same partners
    assert contrast_partners(1).shape == (1, 0)


def test_contrast_is_the_loss_after_other_prompts_minus_the_own(bundle) -> None:
    tok = bundle.tokenizer
    scores = ContrastScorer().score(ROWS, make_ctx(bundle, batch_size=3))
    partners = contrast_partners(len(ROWS))
    for i, row in enumerate(ROWS):
        own = _nll_after(bundle, prompt_ids(tok, row), row).sum().item()
        others = [_nll_after(bundle, prompt_ids(tok, ROWS[j]), row).sum().item() for j in partners[i]]
        assert len(others) == CONTRAST_PARTNERS
        assert scores[i] == pytest.approx(np.mean(others) - own, abs=1e-4)
    assert np.isnan(ContrastScorer().score(ROWS[:1], make_ctx(bundle))).all()  # nobody to contrast with
