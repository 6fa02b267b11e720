"""IRA = L(response) - L(response | instruction), checked against a hand computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from feddqc_flwr.model import ModelSpec, load_model_bundle
from feddqc_flwr.prompts import ALPACA_NO_INPUT, ALPACA_RESPONSE_MARKER
from feddqc_flwr.scoring.ira import ira_scores
from tests.scoring.common import ROWS


@pytest.fixture(scope="module")
def bundle(tiny_model_dir: Path):
    return load_model_bundle(ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8))


def _mean_nll(model, ids: list[int], first_label: int) -> float:
    """Plain full-logits forward of one unpadded sequence; mean NLL of tokens from first_label."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    nll = [-logp[t - 1, ids[t]].item() for t in range(first_label, len(ids))]
    return float(np.mean(nll))


def test_ira_equals_hand_computed_losses(bundle) -> None:
    tok, model = bundle.tokenizer, bundle.model
    with torch.no_grad():  # a non-zero adapter, so LoRA is part of what is checked
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    row = ROWS[0]
    prompt = tok(ALPACA_NO_INPUT.format(instruction=row["instruction"]), add_special_tokens=False).input_ids
    prompt += tok(ALPACA_RESPONSE_MARKER, add_special_tokens=False).input_ids
    response = tok(row["response"], add_special_tokens=False).input_ids + [tok.eos_token_id]
    start = tok.bos_token_id
    model.eval()
    cond = _mean_nll(model, [start, *prompt, *response], 1 + len(prompt))
    uncond = _mean_nll(model, [start, *response], 1)
    scores = ira_scores(model, tok, [row], template="alpaca", max_length=256, batch_size=1,
                        device=bundle.device)
    assert scores.loss_conditioned[0] == pytest.approx(cond, rel=1e-5)
    assert scores.loss_unconditioned[0] == pytest.approx(uncond, rel=1e-5)
    assert scores.ira[0] == pytest.approx(uncond - cond, abs=1e-5)


@pytest.mark.parametrize("batch_size", [2, 3, 8])
def test_padding_and_batch_size_do_not_change_scores(bundle, batch_size: int) -> None:
    kwargs = {"template": "alpaca", "max_length": 256, "device": bundle.device}
    one = ira_scores(bundle.model, bundle.tokenizer, ROWS, batch_size=1, **kwargs)
    many = ira_scores(bundle.model, bundle.tokenizer, ROWS, batch_size=batch_size, **kwargs)
    np.testing.assert_allclose(many.ira, one.ira, atol=1e-5)
    np.testing.assert_allclose(many.loss_conditioned, one.loss_conditioned, rtol=1e-5)


def test_truncation_scores_the_same_response_tokens_in_both_passes(bundle) -> None:
    long_row = {**ROWS[2], "input": "word " * 400}
    scores = ira_scores(bundle.model, bundle.tokenizer, [long_row], template="alpaca", max_length=64,
                        batch_size=1, device=bundle.device)
    assert np.isfinite(scores.ira[0])
