"""NUGGETS golden score = share of anchors whose summed response log-prob improves one-shot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feddqc_flwr.scoring.registry import get_scorer
from tests.scoring.common import ANCHORS, ROWS, make_ctx, prompt_ids, response_ids, token_nll


def test_golden_score_matches_hand_computation(bundle) -> None:
    tok, model, bos = bundle.tokenizer, bundle.model, bundle.tokenizer.bos_token_id
    expected = []
    with torch.no_grad():
        zero = [-token_nll(model, [bos, *prompt_ids(tok, a), *response_ids(tok, a)],
                           1 + len(prompt_ids(tok, a))).sum().item() for a in ANCHORS]
        for row in ROWS:
            shot = [bos, *prompt_ids(tok, row), *response_ids(tok, row)]
            wins = []
            for anchor, s0 in zip(ANCHORS, zero, strict=True):
                prefix = shot + prompt_ids(tok, anchor)
                s1 = -token_nll(model, prefix + response_ids(tok, anchor), len(prefix)).sum().item()
                assert abs(s1 - s0) > 1e-3  # no near-tie, so float rounding cannot flip a win
                wins.append(s1 > s0)
            expected.append(np.mean(wins))
    got = get_scorer("nuggets").score(ROWS, make_ctx(bundle, batch_size=4, reference_rows=ANCHORS))
    np.testing.assert_array_equal(got, expected)


def test_nuggets_needs_anchor_rows(bundle) -> None:
    with pytest.raises(ValueError, match="anchor"):
        get_scorer("nuggets").score(ROWS, make_ctx(bundle))
