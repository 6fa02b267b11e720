"""DataInf influence from per-sample LoRA gradients, checked against autograd one row at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feddqc_flwr.scoring.datainf import datainf_influence
from feddqc_flwr.scoring.registry import get_scorer
from tests.scoring.common import ANCHORS, ROWS, make_ctx, prompt_ids, response_ids, token_nll


def _grads(model, tok, row) -> list[np.ndarray]:
    """Per-LoRA-matrix gradient of the row's completion-only mean NLL (full logits, no batch)."""
    params = [p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]
    prompt = prompt_ids(tok, row)
    loss = token_nll(model, [tok.bos_token_id, *prompt, *response_ids(tok, row)], 1 + len(prompt)).mean()
    return [g.flatten().double().numpy() for g in torch.autograd.grad(loss, params)]


def _hand_influence(model, tok) -> np.ndarray:
    """DataInf's IF(k) = -sum_l <h_l, g_kl> from the autograd gradients above, one layer at a time.
    A layer whose training gradients are all zero has lambda_l = 0 and g_kl = 0: it adds nothing."""
    train = [_grads(model, tok, r) for r in ROWS]
    val = [_grads(model, tok, r) for r in ANCHORS]
    n = len(ROWS)
    influence = np.zeros(n)
    for layer in range(len(train[0])):
        if not any(g[layer].any() for g in train):
            continue
        v = np.mean([g[layer] for g in val], axis=0)
        lam = 0.1 * np.mean([g[layer] @ g[layer] / g[layer].size for g in train])
        h = sum(v - (v @ g[layer]) / (lam + g[layer] @ g[layer]) * g[layer] for g in train) / (n * lam)
        for k in range(n):
            influence[k] -= h @ train[k][layer]
    return influence


def test_influence_of_explicit_small_gradients_by_hand() -> None:
    """Two training rows, three layers, validation gradients given directly.

    Layer a: g1 = (1, 0), g2 = (0, 2), v = mean((2, 0), (0, 2)) = (1, 1). lambda = 0.1 mean(1/2, 4/2)
    = 1/8; g.v / (lambda + |g|^2) = 1/(9/8) = 8/9 and 2/(33/8) = 16/33; h = (2 v - 8/9 g1 - 16/33 g2)
    / (2/8) = (40/9, 136/33); IF contributions -g.h = -40/9 and -272/33.
    Layer b: g1 = (0, 0, 1), g2 = 0, v = (0, 0, 1). lambda = 0.1 mean(1/3, 0) = 1/60; coefficient
    1/(61/60) = 60/61; h = (0, 0, (2 - 60/61) 30) = (0, 0, 1860/61): contributions -1860/61 and 0.
    Layer c: all training gradients 0 (lambda = 0): skipped, whatever v is.
    So IF = (-40/9 - 1860/61, -272/33) = (-34.936, -8.242)."""
    train = {"a": torch.tensor([[1.0, 0.0], [0.0, 2.0]]), "b": torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
             "c": torch.zeros(2, 2)}
    validation = {"a": torch.tensor([[2.0, 0.0], [0.0, 2.0]]), "b": torch.tensor([[0.0, 0.0, 1.0]]),
                  "c": torch.tensor([[5.0, -1.0]])}
    np.testing.assert_allclose(datainf_influence(train, validation), [-40 / 9 - 1860 / 61, -272 / 33], rtol=1e-6)


def test_keep_score_is_minus_hand_computed_influence(bundle) -> None:
    bundle.model.eval()
    expected = -_hand_influence(bundle.model, bundle.tokenizer)
    got = get_scorer("datainf").score(ROWS, make_ctx(bundle, batch_size=3, reference_rows=ANCHORS))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert all(p.grad is None for p in bundle.model.parameters())  # scoring leaves no gradients behind


def test_fresh_adapter_skips_all_zero_lora_a_layers(bundle) -> None:
    """lora_B = 0 (a fresh adapter) makes every lora_A gradient 0: λ_l = 0 there, no division by
    zero, and the influence is the hand computation over the lora_B layers alone."""
    saved = {n: p.detach().clone() for n, p in bundle.model.named_parameters() if "lora_B" in n}
    with torch.no_grad():
        for n, p in bundle.model.named_parameters():
            if "lora_B" in n:
                p.zero_()
    try:
        got = get_scorer("datainf").score(ROWS, make_ctx(bundle, batch_size=3, reference_rows=ANCHORS))
        expected = -_hand_influence(bundle.model, bundle.tokenizer)
    finally:
        with torch.no_grad():
            for n, p in bundle.model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert np.ptp(expected) > 0


def test_datainf_needs_validation_rows(bundle) -> None:
    with pytest.raises(ValueError, match="validation"):
        get_scorer("datainf").score(ROWS, make_ctx(bundle))
