"""IRA, loss, ppl and IFD keep-scores equal their formulas computed one sequence at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feddqc_flwr.scoring.likelihood import ifd_scores
from feddqc_flwr.scoring.registry import get_scorer
from tests.scoring.common import ROWS, make_ctx, marker_ids, prompt_ids, response_ids, token_nll


@pytest.fixture(scope="module")
def hand(bundle) -> dict[str, np.ndarray]:
    """Mean response NLL after the prompt ('cond'), after the start token alone ('bare') and after
    the response marker alone ('marker'), one sequence at a time."""
    tok, model, bos = bundle.tokenizer, bundle.model, bundle.tokenizer.bos_token_id
    marker = marker_ids(tok)
    out: dict[str, list[float]] = {"cond": [], "bare": [], "marker": []}
    with torch.no_grad():
        for row in ROWS:
            prompt, resp = prompt_ids(tok, row), response_ids(tok, row)
            out["cond"].append(token_nll(model, [bos, *prompt, *resp], 1 + len(prompt)).mean().item())
            out["bare"].append(token_nll(model, [bos, *resp], 1).mean().item())
            out["marker"].append(token_nll(model, [bos, *marker, *resp], 1 + len(marker)).mean().item())
    return {k: np.array(v) for k, v in out.items()}


def test_keep_scores_match_hand_computed_formulas(bundle, hand) -> None:
    expected = {"ira": hand["bare"] - hand["cond"], "loss": -hand["cond"], "ppl": -np.exp(hand["cond"]),
                "ifd": -hand["cond"] / hand["marker"]}
    ctx = make_ctx(bundle, batch_size=3)
    for name, want in expected.items():
        np.testing.assert_allclose(get_scorer(name).score(ROWS, ctx), want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_ifd_flags_rows_where_the_instruction_does_not_help(bundle, hand) -> None:
    scores = ifd_scores(ROWS, make_ctx(bundle))
    np.testing.assert_allclose(scores.loss_unconditioned, hand["marker"], rtol=1e-5)
    np.testing.assert_array_equal(scores.misaligned, hand["cond"] / hand["marker"] > 1)
