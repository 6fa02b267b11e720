"""Scoring in bf16 (autocast) stays close to float32, and leaves the model untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feddqc_flwr.llm import precision
from feddqc_flwr.llm.precision import resolve_score_dtype
from feddqc_flwr.scoring.registry import get_scorer
from tests.scoring.common import ANCHORS, ROWS, make_ctx

CPU = torch.device("cpu")
LIKELIHOOD_SCORERS = ["ira", "loss", "ppl", "ifd"]  # continuous scores through mean_nll


def _ctx(bundle, dtype: torch.dtype):
    ctx = make_ctx(bundle, batch_size=3, reference_rows=ANCHORS)
    ctx.compute_dtype = dtype
    return ctx


@pytest.mark.parametrize("name", LIKELIHOOD_SCORERS)
def test_bf16_scores_are_close_to_float32_but_really_computed_in_bf16(bundle, name: str) -> None:
    scorer = get_scorer(name)
    full = scorer.score(ROWS, _ctx(bundle, torch.float32))
    half = scorer.score(ROWS, _ctx(bundle, torch.bfloat16))
    assert not np.array_equal(half, full)  # autocast took effect
    np.testing.assert_allclose(half, full, atol=0.05 * max(1.0, np.abs(full).max()))


def test_bf16_scoring_leaves_weights_and_their_dtype_alone(bundle) -> None:
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    get_scorer("ira").score(ROWS, _ctx(bundle, torch.bfloat16))
    after = bundle.model.state_dict()
    assert all(v.dtype == torch.float32 for v in after.values())
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bf16_datainf_gradients_rank_like_float32(bundle) -> None:
    scorer = get_scorer("datainf")
    full = scorer.score(ROWS, _ctx(bundle, torch.float32))
    half = scorer.score(ROWS, _ctx(bundle, torch.bfloat16))
    assert np.all(np.isfinite(half))
    assert np.corrcoef(full, half)[0, 1] > 0.95


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_picks_bf16_only_where_the_hardware_has_it(monkeypatch, native: bool, expected: torch.dtype) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    assert resolve_score_dtype("auto", CPU) == expected


def test_explicit_score_dtypes_and_unknown_names() -> None:
    assert resolve_score_dtype("float32", CPU) == torch.float32
    assert resolve_score_dtype("float16", CPU) == torch.float16
    with pytest.raises(ValueError, match="allowed values are auto, float32, bfloat16, float16"):
        resolve_score_dtype("int8", CPU)
