"""DataInf influence from per-sample LoRA gradients, checked against autograd one row at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feddqc_flwr.scoring.registry import get_scorer
from tests.scoring.common import ANCHORS, ROWS, make_ctx, prompt_ids, response_ids, token_nll


def _grads(model, tok, row) -> list[np.ndarray]:
    """Per-LoRA-matrix gradient of the row's completion-only mean NLL (full logits, no batch)."""
    params = [p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]
    prompt = prompt_ids(tok, row)
    loss = token_nll(model, [tok.bos_token_id, *prompt, *response_ids(tok, row)], 1 + len(prompt)).mean()
    return [g.flatten().double().numpy() for g in torch.autograd.grad(loss, params)]


def _hand_influence(model, tok) -> np.ndarray:
    train = [_grads(model, tok, r) for r in ROWS]
    val = [_grads(model, tok, r) for r in ANCHORS]
    n = len(ROWS)
    influence = np.zeros(n)
    for layer in range(len(train[0])):
        v = np.mean([g[layer] for g in val], axis=0)
        lam = 0.1 * np.mean([g[layer] @ g[layer] / g[layer].size for g in train])
        h = sum(v - (v @ g[layer]) / (lam + g[layer] @ g[layer]) * g[layer] for g in train) / (n * lam)
        for k in range(n):
            influence[k] -= h @ train[k][layer]
    return influence


def test_keep_score_is_minus_hand_computed_influence(bundle) -> None:
    bundle.model.eval()
    expected = -_hand_influence(bundle.model, bundle.tokenizer)
    got = get_scorer("datainf").score(ROWS, make_ctx(bundle, batch_size=3, reference_rows=ANCHORS))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert all(p.grad is None for p in bundle.model.parameters())  # scoring leaves no gradients behind


def test_fresh_adapter_skips_all_zero_lora_a_layers(bundle) -> None:
    """lora_B = 0 (a fresh adapter) makes every lora_A gradient 0: λ_l = 0, no division by zero."""
    saved = {n: p.detach().clone() for n, p in bundle.model.named_parameters() if "lora_B" in n}
    with torch.no_grad():
        for n, p in bundle.model.named_parameters():
            if "lora_B" in n:
                p.zero_()
    try:
        got = get_scorer("datainf").score(ROWS, make_ctx(bundle, reference_rows=ANCHORS))
    finally:
        with torch.no_grad():
            for n, p in bundle.model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
    assert np.isfinite(got).all() and np.ptp(got) > 0


def test_datainf_needs_validation_rows(bundle) -> None:
    with pytest.raises(ValueError, match="validation"):
        get_scorer("datainf").score(ROWS, make_ctx(bundle))
