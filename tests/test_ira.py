"""IRA = L(response) - L(response | instruction) in both forms (mean: the authors' code; sum: the
paper's §3.2), checked against a hand computation: the prompt text is written out here, each
sequence goes through a plain full-logits forward, and the token NLLs are reduced by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from feddqc_flwr.llm.model import ModelSpec, load_model_bundle
from feddqc_flwr.scoring.base import ScoringContext
from feddqc_flwr.scoring.criteria import ALIGNMENT_AND_FIT
from feddqc_flwr.scoring.fusion import RankMean
from feddqc_flwr.scoring.ira import ira_scores
from feddqc_flwr.scoring.likelihood import IRAScorer, LossScorer
from feddqc_flwr.scoring.passes import likelihood_passes
from tests.scoring.common import ROWS

PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\n{instruction}\n\n")
MARKER = "### Response:\n"


@pytest.fixture(scope="module")
def bundle(tiny_model_dir: Path):
    bundle = load_model_bundle(ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # every LoRA matrix set here: the process-wide cached bundle may hold another test's
        for name, p in bundle.model.named_parameters():  # adapter; non-zero, so LoRA is part of what is checked
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    bundle.model.eval()
    return bundle


def _token_nll(model, ids: list[int], first_label: int) -> list[float]:
    """NLL of every token from first_label on, one unpadded sequence."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    return [-logp[t - 1, ids[t]].item() for t in range(first_label, len(ids))]


def _hand(bundle, row) -> tuple[list[float], list[float]]:
    tok, model = bundle.tokenizer, bundle.model
    prompt = tok(PROMPT.format(instruction=row["instruction"]), add_special_tokens=False).input_ids
    prompt += tok(MARKER, add_special_tokens=False).input_ids
    response = tok(row["response"], add_special_tokens=False).input_ids + [tok.eos_token_id]
    start = tok.bos_token_id
    return (_token_nll(model, [start, *prompt, *response], 1 + len(prompt)),
            _token_nll(model, [start, *response], 1))


def test_ira_mean_and_sum_equal_hand_computed_losses(bundle) -> None:
    rows = [r for r in ROWS if not r["input"]]
    kwargs = {"template": "alpaca", "max_length": 256, "batch_size": 2, "device": bundle.device}
    mean = ira_scores(bundle.model, bundle.tokenizer, rows, **kwargs)
    total = ira_scores(bundle.model, bundle.tokenizer, rows, reduction="sum", **kwargs)
    for i, row in enumerate(rows):
        cond, uncond = _hand(bundle, row)
        assert len(cond) == len(uncond)
        assert mean.loss_conditioned[i] == pytest.approx(np.mean(cond), rel=1e-5)
        assert mean.ira[i] == pytest.approx(np.mean(uncond) - np.mean(cond), abs=1e-5)
        assert total.loss_conditioned[i] == pytest.approx(np.sum(cond), rel=1e-5)
        assert total.ira[i] == pytest.approx(np.sum(uncond) - np.sum(cond), abs=1e-4)
        # the sum form is the mean form times the number of response tokens
        assert total.ira[i] == pytest.approx(mean.ira[i] * len(cond), abs=1e-4)


def test_registered_scorers_and_rank_combinations_from_the_same_passes(bundle) -> None:
    rows = [r for r in ROWS if not r["input"]]
    ctx = ScoringContext(model=bundle.model, tokenizer=bundle.tokenizer, template="alpaca", max_length=256,
                         batch_size=4, device=bundle.device)
    hand = [_hand(bundle, r) for r in rows]
    ira_sum = np.array([np.sum(u) - np.sum(c) for c, u in hand])
    loss = np.array([np.mean(c) for c, _ in hand])
    np.testing.assert_allclose(IRAScorer("sum").score(rows, ctx), ira_sum, atol=1e-4)
    np.testing.assert_allclose(IRAScorer().score(rows, ctx), [np.mean(u) - np.mean(c) for c, u in hand], atol=1e-5)
    np.testing.assert_allclose(LossScorer().score(rows, ctx), -loss, rtol=1e-5)
    # rank fusion by hand: rank 0..n-1 (best = n-1) of each component, scaled to [0, 1]
    n = len(rows)
    rank = lambda v: np.argsort(np.argsort(v)) / (n - 1)  # noqa: E731 (no ties in these scores)
    fused = RankMean((IRAScorer("sum"), LossScorer())).score(rows, ctx)
    np.testing.assert_allclose(fused, (rank(ira_sum) + rank(-loss)) / 2)
    lowest = ALIGNMENT_AND_FIT.score(rows, ctx)  # "ira-sum+loss": the joint filter's rank-min
    np.testing.assert_allclose(lowest, np.minimum(rank(ira_sum), rank(-loss)))


@pytest.mark.parametrize("batch_size", [2, 3, 8])
def test_padding_and_batch_size_do_not_change_scores(bundle, batch_size: int) -> None:
    kwargs = {"template": "alpaca", "max_length": 256, "device": bundle.device}
    one = ira_scores(bundle.model, bundle.tokenizer, ROWS, batch_size=1, **kwargs)
    many = ira_scores(bundle.model, bundle.tokenizer, ROWS, batch_size=batch_size, **kwargs)
    np.testing.assert_allclose(many.ira, one.ira, atol=1e-5)
    np.testing.assert_allclose(many.loss_conditioned, one.loss_conditioned, rtol=1e-5)


def test_cut_response_is_scored_on_the_same_tokens_without_eos(bundle) -> None:
    tok = bundle.tokenizer
    long_row = {**ROWS[2], "response": " ".join(f"w{i}" for i in range(300))}
    ctx = ScoringContext(model=bundle.model, tokenizer=tok, template="alpaca", max_length=64, batch_size=1,
                         device=bundle.device)
    passes = likelihood_passes([long_row], ctx, ("conditioned", "unconditioned"))
    n = int(passes["conditioned"].counts[0])
    assert n == int(passes["unconditioned"].counts[0]) > 0
    response = tok(long_row["response"], add_special_tokens=False).input_ids[:n]  # a prefix, no EOS
    by_hand = _token_nll(bundle.model, [tok.bos_token_id, *response], 1)
    assert passes["unconditioned"].sums[0] == pytest.approx(np.sum(by_hand), rel=1e-5)
